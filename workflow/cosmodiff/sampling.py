"""Samplers of a :class:`cosmodiff.diffusion.GaussianDiffusion`: ancestral DDPM, DDIM and
DPM-Solver++(2M), and the timestep grids of the last two.

Free functions of the diffusion (the shape of NVlabs/edm's ``generate.py`` and of
improved-diffusion's ``respace.py``): the diffusion owns the schedule and turns a network's
output into (eps_hat, x0_hat) (:meth:`~cosmodiff.diffusion.GaussianDiffusion.model_predictions`,
:meth:`~cosmodiff.diffusion.GaussianDiffusion.p_mean_variance`); a sampler walks that
schedule. A *model* is any callable ``model(x_t, t, cond) -> output`` as in
:mod:`cosmodiff.diffusion`.

:data:`SAMPLERS` maps the names used by the config (``validation.sampler``,
``sampling.sampler``), ``python -m cosmodiff sample --sampler`` and the benchmarks to the
functions; :data:`DDIM_SPACINGS` lists the timestep grids (``spacing``). Every sampler
returns the batch at t = 0 as a tensor; none adds noise at the last step.

:class:`SamplerSettings` is one of those config sections, checked once, and the one place
that turns it into the keyword arguments of the calls that generate maps
(:meth:`cosmodiff.emulator.Emulator.from_checkpoint`, a sampler of :data:`SAMPLERS`).
"""

from __future__ import annotations

import json
import math
import numbers
from dataclasses import dataclass

import numpy as np
import torch

from .config import settings_from
from .diffusion import _clamp, _progress, _randn
from .protocol import PRECISIONS, WEIGHTS

#: Timestep grids of the DDIM and DPM-Solver samplers (see :func:`ddim_timesteps`).
DDIM_SPACINGS = ("linear", "quadratic", "edm")


# --------------------------------------------------------------------------------------------
# timestep grids
# --------------------------------------------------------------------------------------------


def ddim_timesteps(
    diffusion,          # The GaussianDiffusion (its T and abar_t).
    steps,              # Number of timesteps (network calls), 2 <= steps <= T.
    spacing = "linear", # "linear", "quadratic" or "edm" (see DDIM_SPACINGS and below).
    rho     = 7.0,      # "edm": exponent of the noise-level grid (Karras et al. 2022 use 7).
):
    """The DDIM timesteps, increasing and distinct; both 0 and T-1 are included.

    - ``"linear"``: ``round(linspace(0, T-1, steps))``: gaps of (T-1)/(steps-1) rounded
      (20 or 21 for T = 1000, steps = 50).
    - ``"quadratic"``: ``round((T-1) (i/(steps-1))^2)`` (Song et al. 2021): denser at small t.
    - ``"edm"``: uniform in sigma^(1/rho), sigma_t = sqrt((1 - abar_t) / abar_t) the noise
      level in units of the signal (Karras et al. 2022, eq. 5), mapped to the nearest
      timesteps: most steps where the noise is small.

    Where the data's variance is small next to the noise (log10 maps min-max scaled to
    [-1, 1] have a pixel std of 0.15-0.2), all the structure is decided at small t
    (abar_t = 0.98 at t = 56 with the authors' schedule), and a linear grid spends nearly
    all its steps on pure noise: its last step jumps from t = 111 to 0 at steps = 10, and
    x0_hat at t = 111 is a posterior mean that has lost the small scales.
    """
    steps = int(steps)
    if not 2 <= steps <= diffusion.T:
        raise ValueError(f"steps must be in [2, T={diffusion.T}], got {steps}")
    if spacing == "linear":
        return np.round(np.linspace(0, diffusion.T - 1, steps)).astype(np.int64)
    u = np.linspace(0.0, 1.0, steps)
    if spacing == "quadratic":
        ts = np.round((diffusion.T - 1) * u**2).astype(np.int64)
    elif spacing == "edm":
        sigma = np.sqrt((1.0 - diffusion.alphas_cumprod) / diffusion.alphas_cumprod)  # increasing in t
        grid = (sigma[0] ** (1 / rho) + u * (sigma[-1] ** (1 / rho) - sigma[0] ** (1 / rho))) ** rho
        ts = np.clip(np.searchsorted(sigma, grid), 0, diffusion.T - 1)
        below = np.clip(ts - 1, 0, diffusion.T - 1)  # the nearest of the two neighbours, in log sigma
        ts = np.where(np.abs(np.log(sigma[below] / grid)) < np.abs(np.log(sigma[ts] / grid)), below, ts).astype(np.int64)
    else:
        raise ValueError(f"unknown DDIM spacing {spacing!r}; expected one of {DDIM_SPACINGS}")
    # distinct: push collisions at small t upwards, then keep T-1 last
    for i in range(1, steps):
        ts[i] = max(ts[i], ts[i - 1] + 1)
    for i in range(steps - 1, 0, -1):
        ts[i] = min(ts[i], diffusion.T - 1 - (steps - 1 - i))
        ts[i - 1] = min(ts[i - 1], ts[i] - 1)
    ts[0], ts[-1] = 0, diffusion.T - 1
    return ts


# --------------------------------------------------------------------------------------------
# samplers
# --------------------------------------------------------------------------------------------


def _start(shape, cond, generator, device, dtype):
    """(x_{T-1} ~ N(0, I) drawn from ``generator``, device, dtype) with the samplers' defaults."""
    if device is None:
        device = cond.device if isinstance(cond, torch.Tensor) else torch.device("cpu")
    dtype = torch.get_default_dtype() if dtype is None else dtype
    return _randn(shape, generator, device, dtype), torch.device(device), dtype


@torch.no_grad()
def ancestral_sample(
    diffusion,          # The GaussianDiffusion (schedule and model_predictions).
    model,              # Network model(x_t, t, cond) -> output (see the diffusion's ``prediction``).
    shape,              # Output shape (B, C, H, W).
    cond,               # Conditioning (B, ...) passed to the model untouched, or None.
    generator = None,   # torch.Generator for x_T and every step's noise (default: global RNG).
    progress  = False,  # Show a tqdm progress bar.
    device    = None,   # Device of the samples (default: cond's device, else CPU).
    dtype     = None,   # dtype of the samples (default: torch's default dtype).
    clip      = None,   # Clamp x0_hat at every step (see GaussianDiffusion.p_mean_variance); None: no clamp.
):
    """Ancestral DDPM sampling: x_{T-1} ~ N(0, I), then T network calls
    ``x_{t-1} = mean + sqrt(var) z`` with the fixed model variance, no noise at t = 0."""
    x, device, dtype = _start(shape, cond, generator, device, dtype)
    for i in _progress(range(diffusion.T - 1, -1, -1), progress, "sampling"):
        t = torch.full((shape[0],), i, device=device, dtype=torch.long)
        mean, var, _, _ = diffusion.p_mean_variance(model, x, t, cond, clip=clip)
        if i > 0:
            x = mean + var.sqrt() * _randn(shape, generator, device, dtype)
        else:
            x = mean
    return x


@torch.no_grad()
def ddim_sample(
    diffusion,          # The GaussianDiffusion (schedule and model_predictions).
    model,              # Network model(x_t, t, cond) -> output (see the diffusion's ``prediction``).
    shape,              # Output shape (B, C, H, W).
    cond,               # Conditioning (B, ...) passed to the model untouched, or None.
    steps     = 50,     # Number of network calls, on the timesteps of ddim_timesteps(diffusion, steps, spacing).
    spacing   = "linear",  # Timestep grid: "linear", "quadratic" or "edm" (see ddim_timesteps).
    eta       = 0.0,    # Stochasticity: 0 deterministic DDIM, 1 DDPM-like variance.
    generator = None,   # torch.Generator for x_T (and the noise when eta > 0).
    progress  = False,  # Show a tqdm progress bar.
    device    = None,   # Device of the samples (default: cond's device, else CPU).
    dtype     = None,   # dtype of the samples (default: torch's default dtype).
    clip      = None,   # Clamp x0_hat at every step (see GaussianDiffusion.p_mean_variance); None: no clamp.
):
    """DDIM (Song et al. 2021) on the strided timesteps of :func:`ddim_timesteps`, from
    x_{T-1} ~ N(0, I); the last call, at t = 0, returns x0_hat (abar_{-1} = 1)."""
    x, device, dtype = _start(shape, cond, generator, device, dtype)
    ts = ddim_timesteps(diffusion, steps, spacing)[::-1]
    prev = np.append(ts[1:], -1)
    for i, j in _progress(list(zip(ts, prev)), progress, "ddim"):
        t = torch.full((shape[0],), int(i), device=device, dtype=torch.long)
        eps, x0_hat = diffusion.model_predictions(model, x, t, cond)
        if clip is not None:
            x0_hat = _clamp(x0_hat, clip)
            eps = diffusion.predict_eps(x, t, x0_hat)
        if j < 0:
            x = x0_hat
            break
        a_t, a_s = diffusion.alphas_cumprod[i], diffusion.alphas_cumprod[j]
        sigma = eta * math.sqrt((1.0 - a_s) / (1.0 - a_t) * (1.0 - a_t / a_s))
        x = math.sqrt(a_s) * x0_hat + math.sqrt(max(1.0 - a_s - sigma**2, 0.0)) * eps
        if sigma > 0:
            x = x + sigma * _randn(shape, generator, device, dtype)
    return x


@torch.no_grad()
def dpm_solver_sample(
    diffusion,          # The GaussianDiffusion (schedule and model_predictions).
    model,              # Network model(x_t, t, cond) -> output (see the diffusion's ``prediction``).
    shape,              # Output shape (B, C, H, W).
    cond,               # Conditioning (B, ...) passed to the model untouched, or None.
    steps     = 25,     # Number of network calls, on the timesteps of ddim_timesteps(diffusion, steps, spacing).
    spacing   = "quadratic",  # Timestep grid (see ddim_timesteps).
    generator = None,   # torch.Generator for x_T.
    progress  = False,  # Show a tqdm progress bar.
    device    = None,   # Device of the samples (default: cond's device, else CPU).
    dtype     = None,   # dtype of the samples (default: torch's default dtype).
    clip      = None,   # Clamp x0_hat at every step (see GaussianDiffusion.p_mean_variance); None: no clamp.
):
    """DPM-Solver++(2M) (Lu et al. 2022, arXiv:2211.01095, algorithm 2): the probability-flow
    ODE solved in lambda = log(sqrt(abar) / sqrt(1 - abar)) with x0_hat extrapolated
    linearly from the last two network calls; the same calls as DDIM, second order.

    From t_{i-1} to t_i, with h_i = lambda_i - lambda_{i-1} and r_i = h_{i-1} / h_i:
    ``x_i = (sigma_i / sigma_{i-1}) x_{i-1} - alpha_i (e^{-h_i} - 1) D_i``,
    ``D_i = (1 + 1 / (2 r_i)) x0_hat_{i-1} - x0_hat_{i-2} / (2 r_i)`` (D = x0_hat_{i-1},
    which is DDIM's step, for the first step). The last call, at t = 0, returns x0_hat as
    DDIM does; with steps = 2 the two samplers coincide.
    """
    x, device, dtype = _start(shape, cond, generator, device, dtype)
    ts = ddim_timesteps(diffusion, steps, spacing)[::-1]
    alpha = np.sqrt(diffusion.alphas_cumprod)
    sigma = np.sqrt(1.0 - diffusion.alphas_cumprod)
    lam = np.log(alpha) - np.log(sigma)
    prev_x0, prev_h = None, None
    for k, i in enumerate(_progress(list(ts), progress, "dpm-solver++")):
        t = torch.full((shape[0],), int(i), device=device, dtype=torch.long)
        x0_hat = _clamp(diffusion.model_predictions(model, x, t, cond)[1], clip)
        if k == len(ts) - 1:
            return x0_hat
        j = int(ts[k + 1])
        h = lam[j] - lam[i]
        d = x0_hat
        if prev_x0 is not None:
            r = prev_h / h
            d = (1.0 + 0.5 / r) * x0_hat - (0.5 / r) * prev_x0
        x = (sigma[j] / sigma[i]) * x - alpha[j] * math.expm1(-h) * d
        prev_x0, prev_h = x0_hat, h
    return x


#: Sampler name -> function ``f(diffusion, model, shape, cond, **options)``: the names of the
#: config, the CLI and the benchmarks. ``ancestral`` takes no ``steps`` or ``spacing``.
SAMPLERS = {
    "ancestral": ancestral_sample,
    "ddim": ddim_sample,
    "dpm2m": dpm_solver_sample,
}


# --------------------------------------------------------------------------------------------
# settings
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SamplerSettings:
    """How maps are generated: config ``validation`` (less ``select_by``, which only
    select_checkpoint reads) or ``sampling``, which the rules hand to their scripts as one
    ``--settings`` JSON; ``python -m cosmodiff sample`` builds one from its options. Checked
    on construction. The defaults (DDIM, 50 steps on the linear grid, clamped, EMA weights,
    bf16) are what :meth:`cosmodiff.emulator.Emulator.sample` uses without settings.

    sampler:     a name of :data:`SAMPLERS`: "ancestral" (DDPM, T network evaluations per
                 map), "ddim" (deterministic, ``steps`` evaluations) or "dpm2m"
                 (DPM-Solver++(2M): the same ODE and calls as DDIM, second order).
    steps:       ddim / dpm2m steps, the network evaluations per map (ignored by ancestral).
    spacing:     timestep grid of ddim / dpm2m, one of :data:`DDIM_SPACINGS`
                 (:func:`ddim_timesteps`).
    clip:        clamp the denoised estimate x0_hat to [-1, 1], the range of the training
                 maps after normalisation, at every step (as image DDPMs do). With the
                 authors' schedule x0_hat = (x_t - sqrt(1 - abar) eps_hat) / sqrt(abar)
                 amplifies noise-prediction errors ~100 times at t ~ T; an under-trained
                 network then produces log-densities tens of dex off without the clamp.
    batch_size:  maps per network call.
    seed:        base seed: of the choice of points, and point i's noise is seeded seed + i
                 (so every checkpoint sees the same noise).
    n_samples:   generated maps per point.
    n_points:    simulations whose parameters are emulated.
    weights:     the checkpoint's "ema" or "raw" weights.
    precision:   "bf16" (autocast on CUDA) or "fp32" (TF32 matmuls, the authors'); see
                 :func:`cosmodiff.protocol.precision`.
    fiducial:    (validation) None, or (Omega_m, sigma_8) whose nearest simulation is always
                 a point (:func:`cosmodiff.validation.choose_points`).
    points:      (sampling) extra (Omega_m, sigma_8) points.
    """

    sampler: str = "ddim"
    steps: int = 50
    spacing: str = "linear"
    clip: bool = True
    batch_size: int = 16
    seed: int = 0
    n_samples: int = 16
    n_points: int = 1
    weights: str = "ema"
    precision: str = "bf16"
    fiducial: tuple | None = None
    points: tuple = ()

    def __post_init__(self):
        if self.sampler not in SAMPLERS:
            raise ValueError(f"unknown sampler {self.sampler!r}; choose one of {tuple(SAMPLERS)}")
        if self.spacing not in DDIM_SPACINGS:
            raise ValueError(f"unknown DDIM spacing {self.spacing!r}; expected one of {DDIM_SPACINGS}")
        if self.weights not in WEIGHTS:
            raise ValueError(f"weights must be one of {WEIGHTS}, got {self.weights!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if not isinstance(self.clip, bool):
            raise ValueError(f"clip must be true or false, got {self.clip!r}")
        for name in ("steps", "batch_size", "seed", "n_samples", "n_points"):
            value = getattr(self, name)
            if not _is_int(value):
                raise ValueError(f"{name} must be an integer, got {value!r}")
            object.__setattr__(self, name, int(value))  # 50.0 is an integer to the config schema
        for name in ("batch_size", "n_samples", "n_points"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.sampler != "ancestral" and self.steps < 2:
            raise ValueError(f"{self.sampler} needs steps >= 2, got {self.steps}")
        if self.fiducial is not None:
            object.__setattr__(self, "fiducial", _point(self.fiducial, "fiducial"))
        object.__setattr__(self, "points", tuple(_point(p, "points") for p in self.points))

    @classmethod
    def from_json(cls, text):
        """From a config section as JSON (a rule's ``--settings``); unknown keys are an error."""
        return settings_from(cls, json.loads(text), "sampler")

    def emulator_kwargs(self):
        """Keyword arguments of :meth:`cosmodiff.emulator.Emulator.from_checkpoint`."""
        return {"weights": self.weights, "precision": self.precision}

    def sampler_kwargs(self):
        """Keyword arguments of ``SAMPLERS[self.sampler]``: the clamp of x0_hat (1.0, the
        training range, or None) and, for ddim / dpm2m, steps and spacing."""
        clip = 1.0 if self.clip else None
        if self.sampler == "ancestral":
            return {"clip": clip}
        return {"steps": self.steps, "spacing": self.spacing, "clip": clip}

    def attrs(self):
        """The settings recorded with samples (:func:`cosmodiff.emulator.write_samples`)."""
        return {"sampler": self.sampler, "steps": self.steps, "spacing": self.spacing, "seed": self.seed,
                "clip": self.clip, "weights": self.weights, "precision": self.precision}


def _is_int(value):
    """An integer, or a float with an integer value (as JSON Schema's "integer" allows)."""
    return not isinstance(value, bool) and (isinstance(value, numbers.Integral) or (isinstance(value, float) and value.is_integer()))


def _point(value, name):
    """An (Omega_m, sigma_8) pair as a tuple of two floats."""
    if isinstance(value, (str, bytes)) or not hasattr(value, "__len__") or len(value) != 2 \
            or not all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in value):
        raise ValueError(f"{name}: expected [Omega_m, sigma_8], got {value!r}")
    return tuple(float(v) for v in value)


__all__ = [
    "DDIM_SPACINGS",
    "SAMPLERS",
    "SamplerSettings",
    "ancestral_sample",
    "ddim_sample",
    "ddim_timesteps",
    "dpm_solver_sample",
]
