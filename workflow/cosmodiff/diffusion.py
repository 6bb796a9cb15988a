"""The Gaussian diffusion process: schedule, forward noising, loss, posterior q and the
per-timestep terms of the variational bound used as a likelihood.

One object, :class:`GaussianDiffusion`, owns all of it (the shape of improved-diffusion's
``GaussianDiffusion``); it knows nothing of the network or of files. The samplers that walk
its schedule (ancestral, DDIM, DPM-Solver++(2M)) are free functions of it in
:mod:`cosmodiff.sampling`. A *model* is any callable ``model(x_t, t, cond) -> output``
with the shape of ``x_t``; ``t`` is a LongTensor (B,) of 0-based timesteps and ``cond``
(B, 2 for the physical parameters, or None) is passed through untouched. What the output
means is the diffusion's ``prediction``:

* ``"eps"`` (the authors'): the noise, eps_hat.
* ``"v"`` (Salimans & Ho 2022): ``v = sqrt(abar_t) eps - sqrt(1 - abar_t) x_0``. Then
  ``x0_hat = sqrt(abar_t) x_t - sqrt(1 - abar_t) v_hat`` and
  ``eps_hat = sqrt(1 - abar_t) x_t + sqrt(abar_t) v_hat``: an error in v_hat costs at most
  its own size in x0_hat at every t, whereas eps-prediction's
  ``x0_hat = (x_t - sqrt(1 - abar_t) eps_hat) / sqrt(abar_t)`` multiplies it by
  ``sqrt(1 / abar_t - 1)``, about 100 at t = T-1 with the authors' schedule. Since
  ``eps - eps_hat = sqrt(abar_t) (v - v_hat)``, a loss on v weights the noisy timesteps by
  ``1 / abar_t`` relative to the same loss on eps.
* ``"x0"``: the clean map, x0_hat.

Everything downstream (sampling, the bound terms) goes through :meth:`GaussianDiffusion.
model_predictions`, which turns the output into (eps_hat, x0_hat); the bound is the same
function of x0_hat whichever parametrisation produced it.

Conventions (Mudur, Cuesta-Lazaro & Finkbeiner 2023, authors' ``hf_diffusion``):

* Timesteps are 0-based indices t = 0 .. T-1 into ``betas``; index t is step t+1 of the
  papers' notation. ``x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps`` with
  ``abar_t = prod_{s <= t} (1 - beta_s)``; index 0 is the *first noised* state (x_1 in the
  papers), index T-1 the last (x_T, close to N(0, I)).
* Schedule ``"mudur"`` (their ``custom_linear_beta_schedule``): beta linear from 1e-4 to
  1e-2 over T = 1000 steps, steps 500..999 multiplied by ``linspace(1, 3, 500)``; beta ends
  at 0.03 and abar_{T-1} = 9.0788e-5.
* Model mean: the posterior mean of q(x_{t-1} | x_t, x_0) with x_0 replaced by
  ``x0_hat = (x_t - sqrt(1 - abar_t) eps_hat) / sqrt(abar_t)`` (DDPM eq. 11).
* Model variance, fixed (not learned): ``"fixedsmall"`` the posterior variance
  ``beta_tilde_t = beta_t (1 - abar_{t-1}) / (1 - abar_t)`` (the authors' choice, the
  default), or ``"fixedlarge"`` ``beta_t``. At t = 0 both use ``beta_0``: the variance of
  the continuous Gaussian decoder p(x_0 | x_1) of the authors' bound (beta_tilde_0 = 0).
  Sampling adds no noise at the last step. For a smooth data density the true reverse
  variance at small t is close to beta_t, not beta_tilde_t: on a Gaussian toy with the exact
  denoiser (tests/test_diffusion.py) the full bound exceeds the true NLL by ~1e-3 nats per
  pixel with "fixedlarge" but by ~0.38 with "fixedsmall" (sum over t of
  0.5 (r - 1 - log r), r = beta_t / beta_tilde_t = 2, 1.5, 1.33, ... at t = 1, 2, 3).
  That offset hardly depends on the parameters, so likelihood *differences* agree.
* Bound (nats per map, summed over every non-batch dimension, never a per-dim mean):
  ``-log p(x_0) <= prior_kl + sum_{t=1}^{T-1} KL(q(x_{t-1}|x_t,x_0) || p(x_{t-1}|x_t))
  + [-log N(x_0; mean_p(x_1, 0), beta_0)]``. Each term is a single-noise-draw estimate of
  its expectation over x_t ~ q(x_t | x_0).

Coefficients are kept as float64 numpy arrays and gathered on the CPU, then cast to the
device and dtype of the tensor they multiply, so float32 and float64 work on any device
(MPS included: no float64 ever reaches the accelerator).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

#: Schedules understood by :func:`make_betas`.
SCHEDULES = ("mudur", "linear", "cosine")
#: Training losses on the noise.
LOSSES = ("huber", "mse")
#: Fixed reverse-process variances.
MODEL_VARIANCES = ("fixedsmall", "fixedlarge")
#: What the network predicts (see the module docstring).
PREDICTIONS = ("eps", "v", "x0")
#: Timestep samplers understood by :func:`make_sampler`.
SAMPLERS = ("uniform", "lowt")

_MASK64 = (1 << 64) - 1


# --------------------------------------------------------------------------------------------
# schedules
# --------------------------------------------------------------------------------------------


def make_betas(
    name,               # Schedule name, one of SCHEDULES.
    T       = 1000,     # Number of diffusion steps.
):
    """beta_t, t = 0..T-1, float64.

    - ``"mudur"``: ``linspace(1e-4, 1e-2, T)`` with the last ``T - T//2`` steps multiplied by
      ``linspace(1, 3, T - T//2)`` (the authors' schedule at T = 1000; other T stretch the same
      endpoints: beta_0 = 1e-4, beta_{T-1} = 0.03).
    - ``"linear"``: DDPM, ``linspace(1e-4, 0.02, T)`` (not rescaled for T != 1000).
    - ``"cosine"``: Nichol & Dhariwal (2021), abar(t) = cos^2((t/T + s)/(1 + s) pi/2) with
      s = 0.008, beta clipped at 0.999. (The authors' own cosine variant used s = 0.015.)
    """
    T = int(T)
    if T < 2:
        raise ValueError(f"T must be >= 2, got {T}")
    if name == "mudur":
        betas = np.linspace(1e-4, 1e-2, T, dtype=np.float64)
        half = T // 2
        betas[half:] *= np.linspace(1.0, 3.0, T - half, dtype=np.float64)
    elif name == "linear":
        betas = np.linspace(1e-4, 0.02, T, dtype=np.float64)
    elif name == "cosine":
        s = 0.008
        x = np.arange(T + 1, dtype=np.float64) / T
        f = np.cos((x + s) / (1.0 + s) * math.pi / 2.0) ** 2
        betas = np.minimum(1.0 - f[1:] / f[:-1], 0.999)
    else:
        raise ValueError(f"unknown schedule {name!r}; expected one of {SCHEDULES}")
    return betas


# --------------------------------------------------------------------------------------------
# Gaussian helpers
# --------------------------------------------------------------------------------------------


def normal_kl(mean1, logvar1, mean2, logvar2):
    """KL(N(mean1, exp(logvar1)) || N(mean2, exp(logvar2))), elementwise, broadcasting."""
    tensor = next(o for o in (mean1, logvar1, mean2, logvar2) if isinstance(o, torch.Tensor))
    logvar1, logvar2 = (
        v if isinstance(v, torch.Tensor) else torch.as_tensor(v, dtype=tensor.dtype, device=tensor.device)
        for v in (logvar1, logvar2)
    )
    return 0.5 * (
        -1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * torch.exp(-logvar2)
    )


def gaussian_nll(x, mean, logvar):
    """-log N(x; mean, exp(logvar)), elementwise (continuous density, nats)."""
    if not isinstance(logvar, torch.Tensor):
        logvar = torch.as_tensor(logvar, dtype=x.dtype, device=x.device)
    return 0.5 * (math.log(2.0 * math.pi) + logvar + (x - mean) ** 2 * torch.exp(-logvar))


def _sum_nonbatch(x):
    return x.sum(dim=tuple(range(1, x.ndim))) if x.ndim > 1 else x


# --------------------------------------------------------------------------------------------
# timestep samplers
# --------------------------------------------------------------------------------------------


class TimestepSampler:
    """Draws training timesteps t with probabilities ``probs()`` and importance weights
    ``w(t) = 1 / (T p(t))``, so that ``E_p[w(t) L(t)] = (1/T) sum_t L(t)``: the weighted loss
    is an unbiased estimate of the uniform-t loss whatever the sampler."""

    T: int

    def probs(self):
        """p(t), t = 0..T-1, float64 numpy, sums to 1."""
        raise NotImplementedError

    def weights(self):
        """Importance weights 1 / (T p(t)), float64 numpy."""
        return 1.0 / (self.T * self.probs())

    def sample(
        self,
        batch_size,         # Number of timesteps to draw.
        device=None,        # Device of the returned tensors (default: the generator's, or CPU).
        generator=None,     # torch.Generator for reproducible draws (default: global RNG).
    ):
        """Returns ``(t, weights)``: LongTensor (B,) and float32 tensor (B,)."""
        gen_device = generator.device if generator is not None else torch.device("cpu")
        p = torch.from_numpy(self.probs())
        t = torch.multinomial(p, batch_size, replacement=True, generator=_cpu_gen(generator))
        w = torch.from_numpy(self.weights())[t].float()
        device = gen_device if device is None else device
        return t.to(device), w.to(device)


def _cpu_gen(generator):
    # torch.multinomial on a CPU tensor needs a CPU generator: derive one from a CUDA generator.
    if generator is None or generator.device.type == "cpu":
        return generator
    seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device).item())
    return torch.Generator().manual_seed(seed)


class UniformSampler(TimestepSampler):
    """t uniform over 0..T-1 (the authors' sampler); all weights 1."""

    def __init__(self, T):
        self.T = int(T)

    def probs(self):
        return np.full(self.T, 1.0 / self.T)

    def sample(self, batch_size, device=None, generator=None):
        gen_device = generator.device if generator is not None else torch.device("cpu")
        t = torch.randint(0, self.T, (batch_size,), generator=generator, device=gen_device)
        device = gen_device if device is None else device
        return t.to(device), torch.ones(batch_size, device=device)


class LowTSampler(TimestepSampler):
    """Over-samples the small timesteps that dominate the bound used for inference.

    A mixture: with probability ``p`` t is uniform on [0, t_small), otherwise uniform on
    [0, T). So ``p(t) = p / t_small [t < t_small] + (1 - p) / T`` and the weights
    ``1 / (T p(t))`` are ``1 / (T p / t_small + 1 - p)`` below t_small and ``1 / (1 - p)``
    above. With the defaults (t_small = 20, the range Diffusion-HMC sums; p = 0.2) t < 20 is
    drawn 10.8 times as often as under the uniform sampler.
    """

    def __init__(
        self,
        T,                  # Number of diffusion steps.
        t_small = 20,       # Timesteps 0 .. t_small-1 are over-sampled.
        p       = 0.2,      # Probability of drawing from the small-t component.
    ):
        self.T = int(T)
        self.t_small = int(t_small)
        self.p = float(p)
        if not 1 <= self.t_small <= self.T:
            raise ValueError(f"t_small must be in [1, T], got {t_small}")
        if not 0.0 <= self.p < 1.0:
            raise ValueError(f"p must be in [0, 1), got {p}")

    def probs(self):
        q = np.full(self.T, (1.0 - self.p) / self.T)
        q[: self.t_small] += self.p / self.t_small
        return q


def make_sampler(
    name,               # "uniform" or "lowt" (see SAMPLERS).
    T,                  # Number of diffusion steps.
    **kw,               # Options of the sampler (LowTSampler: t_small, p).
):
    """``"uniform"`` -> :class:`UniformSampler`; ``"lowt"`` -> :class:`LowTSampler` (``**kw``)."""
    if name == "uniform":
        if kw:
            raise TypeError(f"uniform sampler takes no options, got {sorted(kw)}")
        return UniformSampler(T)
    if name == "lowt":
        return LowTSampler(T, **kw)
    raise ValueError(f"unknown timestep sampler {name!r}; expected one of {SAMPLERS}")


# --------------------------------------------------------------------------------------------
# common random numbers
# --------------------------------------------------------------------------------------------


def _splitmix64(x):
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def crn_seed(noise_seed, t):
    """The torch seed of the noise at timestep ``t`` for ``noise_seed`` (a 64-bit hash of the
    pair, so that nearby seeds and timesteps give unrelated streams)."""
    return _splitmix64(_splitmix64(int(noise_seed) & _MASK64) ^ int(t))


def crn_noise(noise_seed, t, shape):
    """Standard normal noise of ``shape`` (one sample, no batch dimension) for the pair
    ``(noise_seed, t)``: drawn in float64 by a CPU ``torch.Generator``, hence identical on
    every device and for float32 and float64 inputs (up to the final cast)."""
    g = torch.Generator().manual_seed(crn_seed(noise_seed, t))
    return torch.randn(tuple(shape), generator=g, dtype=torch.float64)


# --------------------------------------------------------------------------------------------
# the diffusion process
# --------------------------------------------------------------------------------------------


class GaussianDiffusion:
    """DDPM with fixed variances: training loss, reverse-step moments and variational-bound
    terms (the samplers are in :mod:`cosmodiff.sampling`).

    Attributes (float64 numpy arrays of length T, index t = 0..T-1): ``betas``, ``alphas``,
    ``alphas_cumprod`` (abar_t), ``alphas_cumprod_prev`` (abar_{t-1}, 1 at t = 0),
    ``sqrt_alphas_cumprod``, ``sqrt_one_minus_alphas_cumprod``, ``sqrt_recip_alphas_cumprod``,
    ``sqrt_recipm1_alphas_cumprod``, ``posterior_variance`` (beta_tilde_t, 0 at t = 0),
    ``posterior_log_variance_clipped`` (log beta_tilde_t, its t = 1 value at t = 0),
    ``posterior_mean_coef1`` / ``posterior_mean_coef2`` (of x_0 / x_t), ``model_variance``,
    ``model_log_variance``.
    """

    def __init__(
        self,
        betas,                          # Noise schedule beta_t, t = 0..T-1 (array-like, in (0, 1)).
        loss            = "huber",      # Training loss between true and predicted noise: "huber" (delta 1) or "mse".
        model_variance  = "fixedsmall", # Reverse variance: "fixedsmall" (beta_tilde_t) or "fixedlarge" (beta_t).
        sampler         = "uniform",    # Training timestep sampler: a name for make_sampler or a TimestepSampler.
        prediction      = "eps",        # What the network outputs: "eps" (authors), "v" or "x0" (see PREDICTIONS).
    ):
        betas = np.asarray(betas, dtype=np.float64)
        if betas.ndim != 1 or betas.size < 2:
            raise ValueError("betas must be a 1D array of at least 2 values")
        if not np.all((betas > 0) & (betas < 1)):
            raise ValueError("betas must lie in (0, 1)")
        if loss not in LOSSES:
            raise ValueError(f"unknown loss {loss!r}; expected one of {LOSSES}")
        if model_variance not in MODEL_VARIANCES:
            raise ValueError(f"unknown model_variance {model_variance!r}; expected one of {MODEL_VARIANCES}")
        if prediction not in PREDICTIONS:
            raise ValueError(f"unknown prediction {prediction!r}; expected one of {PREDICTIONS}")
        self.loss = loss
        self.prediction = prediction
        self.model_variance_type = model_variance
        self.T = int(betas.size)
        self.sampler = make_sampler(sampler, self.T) if isinstance(sampler, str) else sampler

        self.betas = betas
        self.alphas = 1.0 - betas
        self.alphas_cumprod = np.cumprod(self.alphas)
        self.alphas_cumprod_prev = np.append(1.0, self.alphas_cumprod[:-1])
        self.sqrt_alphas_cumprod = np.sqrt(self.alphas_cumprod)
        self.sqrt_one_minus_alphas_cumprod = np.sqrt(1.0 - self.alphas_cumprod)
        self.log_one_minus_alphas_cumprod = np.log(1.0 - self.alphas_cumprod)
        self.sqrt_recip_alphas_cumprod = np.sqrt(1.0 / self.alphas_cumprod)
        self.sqrt_recipm1_alphas_cumprod = np.sqrt(1.0 / self.alphas_cumprod - 1.0)

        # q(x_{t-1} | x_t, x_0) = N(coef1 x_0 + coef2 x_t, beta_tilde_t)
        self.posterior_variance = betas * (1.0 - self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)
        self.posterior_log_variance_clipped = np.log(
            np.append(self.posterior_variance[1], self.posterior_variance[1:])
        )
        self.posterior_mean_coef1 = betas * np.sqrt(self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)
        self.posterior_mean_coef2 = (1.0 - self.alphas_cumprod_prev) * np.sqrt(self.alphas) / (1.0 - self.alphas_cumprod)

        # p(x_{t-1} | x_t): fixed variance; at t = 0 the Gaussian decoder's beta_0 for both
        if model_variance == "fixedsmall":
            self.model_variance = np.append(betas[0], self.posterior_variance[1:])
        else:
            self.model_variance = betas.copy()
        self.model_log_variance = np.log(self.model_variance)

    @classmethod
    def from_config(cls, cfg):
        """GaussianDiffusion from the config's diffusion section (or a checkpoint's
        diffusion_config): {schedule, timesteps, loss, model_variance, prediction}."""
        return cls(
            make_betas(cfg["schedule"], cfg["timesteps"]),
            loss=cfg["loss"],
            model_variance=cfg.get("model_variance", "fixedlarge"),
            prediction=cfg.get("prediction", "eps"),  # checkpoints written before the option predict eps
        )

    # ---------------------------------------------------------------- helpers

    def _extract(self, arr, t, x):
        """arr[t] as a tensor of x's device and dtype, shaped (B, 1, ..., 1) to broadcast on x."""
        t = t.detach().to("cpu", torch.long)
        out = torch.from_numpy(arr)[t].to(device=x.device, dtype=x.dtype)
        return out.reshape(t.shape[0], *((1,) * (x.ndim - 1)))

    def _timesteps(self, t, x):
        """t as a LongTensor (B,) on x's device (an int is broadcast over the batch)."""
        if not isinstance(t, torch.Tensor):
            t = torch.full((x.shape[0],), int(t), dtype=torch.long)
        t = t.to(device=x.device, dtype=torch.long).reshape(-1)
        if t.shape[0] != x.shape[0]:
            raise ValueError(f"t has {t.shape[0]} entries for a batch of {x.shape[0]}")
        return t

    # ---------------------------------------------------------------- forward process

    def q_mean_variance(self, x0, t):
        """Mean, variance and log variance of q(x_t | x_0)."""
        t = self._timesteps(t, x0)
        mean = self._extract(self.sqrt_alphas_cumprod, t, x0) * x0
        var = self._extract(1.0 - self.alphas_cumprod, t, x0)
        logvar = self._extract(self.log_one_minus_alphas_cumprod, t, x0)
        return mean, var, logvar

    def q_sample(
        self,
        x0,                 # Clean maps (B, ...).
        t,                  # Timesteps, LongTensor (B,) or an int, 0-based.
        noise   = None,     # Standard normal noise of x0's shape (default: torch.randn_like).
    ):
        """x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) noise."""
        t = self._timesteps(t, x0)
        if noise is None:
            noise = torch.randn_like(x0)
        return self._extract(self.sqrt_alphas_cumprod, t, x0) * x0 + self._extract(
            self.sqrt_one_minus_alphas_cumprod, t, x0
        ) * noise.to(x0)

    def q_posterior(self, x0, x_t, t):
        """Mean, variance and log variance of q(x_{t-1} | x_t, x_0).

        At t = 0 the variance is 0 (the mean is x0) and the log variance is clipped to its
        t = 1 value, as in improved-diffusion, so that it stays finite.
        """
        t = self._timesteps(t, x_t)
        mean = self._extract(self.posterior_mean_coef1, t, x_t) * x0 + self._extract(
            self.posterior_mean_coef2, t, x_t
        ) * x_t
        var = self._extract(self.posterior_variance, t, x_t)
        logvar = self._extract(self.posterior_log_variance_clipped, t, x_t)
        return mean, var, logvar

    def predict_x0(self, x_t, t, eps):
        """x0_hat = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t)."""
        t = self._timesteps(t, x_t)
        return self._extract(self.sqrt_recip_alphas_cumprod, t, x_t) * x_t - self._extract(
            self.sqrt_recipm1_alphas_cumprod, t, x_t
        ) * eps

    def predict_eps(self, x_t, t, x0):
        """The noise implied by x_t and x0 (inverse of :meth:`predict_x0`)."""
        t = self._timesteps(t, x_t)
        return (self._extract(self.sqrt_recip_alphas_cumprod, t, x_t) * x_t - x0) / self._extract(
            self.sqrt_recipm1_alphas_cumprod, t, x_t
        )

    def model_target(self, x0, t, noise):
        """What the network should output for x_t = q_sample(x0, t, noise), per ``prediction``."""
        if self.prediction == "eps":
            return noise
        if self.prediction == "x0":
            return x0
        t = self._timesteps(t, x0)
        return self._extract(self.sqrt_alphas_cumprod, t, x0) * noise - self._extract(
            self.sqrt_one_minus_alphas_cumprod, t, x0
        ) * x0

    def model_output_from_eps(self, x_t, t, eps):
        """The output a network with this ``prediction`` gives where the noise estimate is eps
        (turns an eps-denoiser, such as an exact one, into a model of this diffusion)."""
        if self.prediction == "eps":
            return eps
        t = self._timesteps(t, x_t)
        x0 = self.predict_x0(x_t, t, eps)
        return x0 if self.prediction == "x0" else self.model_target(x0, t, eps)

    def model_predictions(
        self,
        model,              # Network model(x_t, t, cond) -> output (see ``prediction``).
        x_t,                # Noisy maps (B, ...).
        t,                  # Timesteps, LongTensor (B,) or an int, 0-based.
        cond,               # Conditioning passed to the model untouched.
    ):
        """(eps_hat, x0_hat) from one network call, whatever the parametrisation."""
        t = self._timesteps(t, x_t)
        out = model(x_t, t, cond)
        if out.shape != x_t.shape:
            raise ValueError(f"model returned shape {tuple(out.shape)} for input {tuple(x_t.shape)}")
        if self.prediction == "eps":
            return out, self.predict_x0(x_t, t, out)
        if self.prediction == "x0":
            return self.predict_eps(x_t, t, out), out
        a = self._extract(self.sqrt_alphas_cumprod, t, x_t)
        s = self._extract(self.sqrt_one_minus_alphas_cumprod, t, x_t)
        return s * x_t + a * out, a * x_t - s * out

    # ---------------------------------------------------------------- reverse process

    def p_mean_variance(
        self,
        model,              # Network model(x_t, t, cond) -> output (see ``prediction``).
        x_t,                # Noisy maps (B, ...).
        t,                  # Timesteps, LongTensor (B,) or an int, 0-based.
        cond,               # Conditioning passed to the model untouched ((B, 2) parameters, or None).
        clip    = None,     # Clamp x0_hat to [-clip, clip] (a number) or [lo, hi] (a pair); None: no clamp.
    ):
        """Mean, variance, log variance of p(x_{t-1} | x_t), and x0_hat."""
        t = self._timesteps(t, x_t)
        _, x0_hat = self.model_predictions(model, x_t, t, cond)
        x0_hat = _clamp(x0_hat, clip)
        mean, _, _ = self.q_posterior(x0_hat, x_t, t)
        var = self._extract(self.model_variance, t, x_t)
        logvar = self._extract(self.model_log_variance, t, x_t)
        return mean, var, logvar, x0_hat

    # ---------------------------------------------------------------- training

    def training_losses(
        self,
        model,              # Network model(x_t, t, cond) -> output (see ``prediction``).
        x0,                 # Clean maps (B, ...).
        cond,               # Conditioning passed to the model untouched.
        t       = None,     # Timesteps (B,); None: drawn by self.sampler (with its importance weights).
        noise   = None,     # Noise of x0's shape; None: standard normal from `generator`.
        weights = None,     # Per-sample weights (B,) multiplying the loss; None: 1, or the sampler's.
        generator = None,   # torch.Generator for t and noise when they are drawn here.
    ):
        """Per-sample loss (B,): the mean over pixels of Huber (delta 1) or squared error
        between the network's output and its target (:meth:`model_target`: the noise for
        ``prediction="eps"``), times the weights. With ``t=None`` the
        sampler's importance weights are applied, so ``.mean()`` estimates the uniform-t loss
        for every sampler."""
        B = x0.shape[0]
        if t is None:
            t, w = self.sampler.sample(B, device=x0.device, generator=generator)
            weights = w if weights is None else weights * w.to(weights)
        t = self._timesteps(t, x0)
        if noise is None:
            noise = _randn(x0.shape, generator, x0.device, x0.dtype)
        x_t = self.q_sample(x0, t, noise)
        out = model(x_t, t, cond)
        target = self.model_target(x0, t, noise.to(x0))
        if self.loss == "huber":
            per = F.huber_loss(out, target, delta=1.0, reduction="none")
        else:
            per = F.mse_loss(out, target, reduction="none")
        loss = per.mean(dim=tuple(range(1, per.ndim))) if per.ndim > 1 else per
        if weights is not None:
            loss = loss * torch.as_tensor(weights).to(loss)
        return loss

    # ---------------------------------------------------------------- variational bound

    def prior_kl(self, x0):
        """KL(q(x_{T-1} | x0) || N(0, I)) per map (B,), nats; independent of the model."""
        t = torch.full((x0.shape[0],), self.T - 1, dtype=torch.long, device=x0.device)
        mean, _, logvar = self.q_mean_variance(x0, t)
        return _sum_nonbatch(normal_kl(mean, logvar, torch.zeros_like(mean), torch.zeros_like(logvar)))

    def vb_terms(
        self,
        model,              # Network model(x_t, t, cond) -> output (see ``prediction``).
        x0,                 # Clean maps (B, ...).
        cond,               # Conditioning passed to the model untouched.
        t,                  # Timesteps, LongTensor (B,), any mix of values in 0..T-1.
        noise,              # Noise of x0's shape making x_t = q_sample(x0, t, noise).
    ):
        """One bound term per map (B,), nats summed over pixels: for t >= 1
        KL(q(x_{t-1}|x_t,x0) || p(x_{t-1}|x_t)); for t = 0 the continuous Gaussian
        -log N(x0; mean_p(x_1), beta_0)."""
        t = self._timesteps(t, x0)
        x_t = self.q_sample(x0, t, noise)
        mean_q, _, logvar_q = self.q_posterior(x0, x_t, t)
        mean_p, _, logvar_p, _ = self.p_mean_variance(model, x_t, t, cond)
        kl = _sum_nonbatch(normal_kl(mean_q, logvar_q, mean_p, logvar_p))
        nll = _sum_nonbatch(gaussian_nll(x0, mean_p, logvar_p))
        return torch.where(t == 0, nll, kl)

    def nll_bound(
        self,
        model,              # Network model(x_t, t, cond) -> output (see ``prediction``).
        x0,                 # Clean maps (B, ...).
        cond,               # Conditioning (B, ...) passed to the model untouched, or None.
        timesteps    = None,   # Timesteps whose terms are summed (ints in 0..T-1); None: all 0..T-1.
        noise_seed   = 0,      # Common random numbers: an int (same noise for every map) or B ints (one per map).
        batch_size   = 64,     # Network inputs per call: (timestep, map) pairs are batched together.
        progress     = False,  # Show a tqdm progress bar.
        return_terms = False,  # Also return the (B, len(timesteps)) float64 matrix of terms.
    ):
        """Variational upper bound on -log p(x0 | cond), nats per map (B,) in float64:
        ``sum_{t in timesteps} vb_terms(t) + prior_kl``.

        The noise of map i at timestep t is :func:`crn_noise` ``(seed_i, t)``, drawn per map
        shape (no batch dimension): it depends on neither the map's position in the batch,
        nor the batch size, the chunking, the device or cond. The same x0 therefore sees
        identical noise at every cond (common random numbers: a smooth likelihood surface),
        whether the cond values share one call or not. Gradients flow (no no_grad here).
        """
        B = x0.shape[0]
        ts = list(range(self.T)) if timesteps is None else [int(s) for s in timesteps]
        if any(not 0 <= s < self.T for s in ts):
            raise ValueError(f"timesteps must lie in 0..{self.T - 1}")
        if isinstance(noise_seed, (int, np.integer)):
            seeds = None
        else:
            seeds = [int(s) for s in noise_seed]
            if len(seeds) != B:
                raise ValueError(f"noise_seed has {len(seeds)} entries for a batch of {B}")
        shape = tuple(x0.shape[1:])

        def noise_for(t, lo, hi):
            if seeds is None:
                n = crn_noise(noise_seed, t, shape).unsqueeze(0).expand(hi - lo, *shape)
            else:
                n = torch.stack([crn_noise(s, t, shape) for s in seeds[lo:hi]])
            return n.to(device=x0.device, dtype=x0.dtype)

        def rep(c, k):
            return None if c is None else c.repeat(k, *((1,) * (c.ndim - 1)))

        n_chunk = min(B, batch_size)
        per_call = max(1, batch_size // n_chunk)
        terms = []
        groups = [ts[i : i + per_call] for i in range(0, len(ts), per_call)]
        for group in _progress(groups, progress, "bound"):
            rows = []
            for lo in range(0, B, n_chunk):
                hi = min(B, lo + n_chunk)
                xb = rep(x0[lo:hi], len(group))
                cb = rep(cond[lo:hi], len(group)) if cond is not None else None
                tb = torch.tensor(group, dtype=torch.long, device=x0.device).repeat_interleave(hi - lo)
                nb = torch.cat([noise_for(s, lo, hi) for s in group])
                rows.append(self.vb_terms(model, xb, cb, tb, nb).reshape(len(group), hi - lo))
            terms.append(torch.cat(rows, dim=1))
        terms = torch.cat(terms, dim=0).T.to(torch.float64) if terms else x0.new_zeros(B, 0, dtype=torch.float64)
        total = terms.sum(dim=1) + self.prior_kl(x0).to(torch.float64)
        return (total, terms) if return_terms else total


# --------------------------------------------------------------------------------------------
# small helpers (cosmodiff.sampling uses them too)
# --------------------------------------------------------------------------------------------


def _clamp(x0_hat, clip):
    """x0_hat clamped to [-clip, clip] (a number) or [lo, hi] (a pair); unchanged for None."""
    if clip is None:
        return x0_hat
    lo, hi = (-clip, clip) if np.isscalar(clip) else clip
    return x0_hat.clamp(lo, hi)


def _randn(shape, generator, device, dtype):
    """Standard normal draws on `device`; drawn on the generator's device when one is given."""
    if generator is None:
        return torch.randn(tuple(shape), device=device, dtype=dtype)
    return torch.randn(tuple(shape), generator=generator, device=generator.device, dtype=dtype).to(device)


def _progress(it, show, desc):
    if not show:
        return it
    from tqdm.auto import tqdm

    return tqdm(it, desc=desc)


__all__ = [
    "LOSSES",
    "MODEL_VARIANCES",
    "PREDICTIONS",
    "SAMPLERS",
    "SCHEDULES",
    "GaussianDiffusion",
    "LowTSampler",
    "TimestepSampler",
    "UniformSampler",
    "crn_noise",
    "crn_seed",
    "gaussian_nll",
    "make_betas",
    "make_sampler",
    "normal_kl",
]
