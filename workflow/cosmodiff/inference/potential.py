"""Potentials U(theta | x_o): minus the log-likelihood of one field, in nats, for a batch of
parameter points.

Every potential is an object with ``potential(theta) -> U`` and an ``evaluations`` counter
(:class:`BasePotential`), so that a grid scan reports what it cost:

* :class:`Potential`: the diffusion model's variational bound, estimated with common random
  numbers (the estimators are described in :mod:`cosmodiff.inference`); ``evaluations``
  counts network evaluations. ``torch_call`` is the same U differentiable in theta (through
  the network's cond), for gradient-based samplers (:mod:`cosmodiff.inference.mcmc`).
* :class:`ExactLog10Potential` (:func:`exact_log10_potential`): the exact likelihood of a
  prepared lognormal field; ``evaluations`` counts parameter points.

(:class:`cosmodiff.inference.oracle.OracleBoundPotential`, the exact denoiser's bound without
noise, is the third.)
"""

from __future__ import annotations

import numpy as np
import torch

from ..diffusion import crn_noise, crn_seed
from ..prepare import normalise
from ..synthetic import lognormal_log10_likelihood
from .estimators import ESTIMATORS, default_draws, draws, stratified_timesteps


class BasePotential:
    """The protocol of a potential: ``potential(theta)`` with theta (M, 2) physical
    (Omega_m, sigma_8) returns U (M,) float64 in nats, and ``evaluations`` counts the
    evaluations spent so far (what a scan reports as its cost). Subclasses implement
    ``__call__``; the grid scans also take any plain callable theta -> U (one evaluation
    per point)."""

    evaluations: int = 0

    def __call__(
        self,
        theta,              # Parameter points (M, 2) (or (2,)): physical (Omega_m, sigma_8).
    ):
        raise NotImplementedError


def default_device_dtype(
    model,              # A torch.nn.Module (its first parameter decides), or any callable.
    device,             # The device asked for, or None.
    dtype,              # The dtype asked for, or None.
):
    """(device, dtype) for a network: as given, else the model's, else CPU and float64."""
    params = list(model.parameters()) if isinstance(model, torch.nn.Module) else []
    if device is None:
        device = params[0].device if params else torch.device("cpu")
    if dtype is None:
        dtype = params[0].dtype if params else torch.float64
    return torch.device(device), dtype


class Potential(BasePotential):
    """U(theta | x_o): an estimate of -log p(field | theta) in nats from the variational bound.

    ``potential(theta)`` with theta (M, 2) physical (Omega_m, sigma_8) returns U (M,) float64.
    For a given field, noise seed and estimator, U is a deterministic function of theta:
    the noise of timestep t is ``crn_noise(noise_seed, t)`` (further draws: unrelated streams
    of the same seed) and the sampled timesteps are drawn once, so every theta sees the same
    x_t (common random numbers: a smooth surface). (theta, t, draw) triples are batched
    ``batch_size`` at a time into the network; ``evaluations`` counts them (one network
    evaluation each). Estimators: see :mod:`cosmodiff.inference`.

    Noise draws: every bound term is a one-draw Monte Carlo estimate of its expectation
    over x_t, and that noise, although common to all theta, tilts the surface at random
    and shifts the posterior; ``n_noise`` averages several draws per timestep (the "full"
    default, ``FULL_DRAWS``, puts them at the smallest t, where the variance sits for a
    training-like normalisation). ``antithetic`` pairs every draw with -eps, which cancels
    the part of each term that is odd in eps. See :mod:`cosmodiff.inference` for measurements.

    Gradients: :meth:`torch_call` is the same U for a torch theta, differentiable through the
    network's conditioning input (same batches, noise, timesteps and weights; the prior term
    does not depend on theta); :meth:`value_and_grad` is its numpy form. Each batch is
    backpropagated as soon as it is evaluated, so only one batch's graph is held at a time;
    ``gradient_evaluations`` counts the network inputs backpropagated (each also counts in
    ``evaluations``). Only first derivatives (no Hessians through ``torch_call``).

    The network should be in eval mode (a ``torch.nn.Module`` is put there). No autocast:
    the bound sums a term per pixel and needs at least float32.
    """

    def __init__(
        self,
        model,                      # Noise predictor model(x_t, t, cond) -> eps_hat; cond (B, 2) physical parameters.
        diffusion,                  # Its cosmodiff.diffusion.GaussianDiffusion (use model_variance="fixedlarge": tight bound).
        field_log10,                # The observed field x_o: log10 surface density, array (N, N).
        normalisation,              # (lo, hi) of the training maps: x0 = 2 (log10 - lo) / (hi - lo) - 1.
        estimator    = "full",      # "full" (unbiased stratified estimate of the whole bound), "truncated" (t <= t_max) or "exact" (all T).
        t_max        = 10,          # "truncated": last timestep summed (the authors' 10).
        t_exact      = 20,          # "full": timesteps 0..t_exact-1 summed exactly.
        n_strata     = 80,          # "full": strata of [t_exact, T), one sampled t each.
        spacing      = 0.5,         # "full": strata edges uniform in t**spacing (see strata_edges).
        noise_seed   = 0,           # Common random numbers: seed of the noise of every timestep.
        n_noise      = None,        # Noise draws per timestep, averaged: an int for every t, or {t_end: draws, ...} (draws at t < t_end for the smallest such t_end; 1 beyond the largest). None: FULL_DRAWS for "full", 1 otherwise.
        antithetic   = False,       # Pair every draw with its opposite -eps (doubles each timestep's cost).
        strata_seed  = None,        # "full": seed of the sampled timesteps (default: noise_seed).
        batch_size   = 256,         # Network inputs per call.
        device       = None,        # Torch device (default: the model's, else CPU).
        dtype        = None,        # Torch dtype of x_t (default: the model's, else float64).
        progress     = False,       # Show a tqdm bar over the network calls.
    ):
        if estimator not in ESTIMATORS:
            raise ValueError(f"unknown estimator {estimator!r}; expected one of {ESTIMATORS}")
        field = np.asarray(field_log10, dtype=np.float64)
        if field.ndim != 2:
            raise ValueError(f"field_log10 must be (N, N), got shape {field.shape}")
        # everything needed to build the same potential with other options (with_options)
        self._args = (model, diffusion, field, normalisation)
        self._options = dict(estimator=estimator, t_max=t_max, t_exact=t_exact, n_strata=n_strata, spacing=spacing,
                             noise_seed=noise_seed, n_noise=n_noise, antithetic=antithetic, strata_seed=strata_seed,
                             batch_size=batch_size, device=device, dtype=dtype, progress=progress)
        self.model = model
        if isinstance(model, torch.nn.Module):
            model.eval()
        self.diffusion = diffusion
        self.normalisation = tuple(float(v) for v in normalisation)
        self.estimator = estimator
        self.noise_seed = int(noise_seed)
        n_noise = default_draws(n_noise, estimator)
        self.n_noise = n_noise
        self.antithetic = bool(antithetic)
        self.batch_size = int(batch_size)
        self.progress = bool(progress)
        self.device, self.dtype = default_device_dtype(model, device, dtype)
        self.x0 = torch.from_numpy(normalise(field, self.normalisation)).to(device=self.device, dtype=self.dtype)[None, None]
        T = diffusion.T
        if estimator == "truncated":
            if not 0 <= int(t_max) < T:
                raise ValueError(f"t_max must be in [0, {T - 1}], got {t_max}")
            self.timesteps = np.arange(int(t_max) + 1, dtype=np.int64)
            self.weights = np.ones(int(t_max) + 1)
            self.prior = 0.0  # the authors' truncated sum has no prior term (it is theta-free anyway)
        else:
            if estimator == "exact":
                self.timesteps, self.weights = np.arange(T, dtype=np.int64), np.ones(T)
            else:
                seed = self.noise_seed if strata_seed is None else int(strata_seed)
                self.timesteps, self.weights = stratified_timesteps(T, min(int(t_exact), T), n_strata, seed, spacing)
            self.prior = float(diffusion.prior_kl(self.x0.to(torch.float64)).item())
        self.t_max, self.t_exact, self.n_strata, self.spacing = int(t_max), int(t_exact), int(n_strata), float(spacing)
        self.draws = np.array([draws(n_noise, int(t)) for t in self.timesteps], dtype=np.int64)
        signs = (1.0, -1.0) if self.antithetic else (1.0,)
        # every network input of one theta: (index into timesteps, t, draw, sign)
        self._entries = [
            (i, int(t), j, s) for i, t in enumerate(self.timesteps) for j in range(self.draws[i]) for s in signs
        ]
        # each entry's timestep, and how many entries (draws, signs) each timestep averages
        self._index = np.array([e[0] for e in self._entries])
        self._count = np.bincount(self._index, minlength=len(self.timesteps))
        self.evaluations = 0
        self.gradient_evaluations = 0
        self._noise = {}

    @classmethod
    def from_emulator(
        cls,
        emulator,           # A cosmodiff.emulator.Emulator (model, diffusion, normalisation, device).
        field_log10,        # The observed log10 field (N, N).
        **kwargs,           # Further Potential options (estimator, noise_seed, ...).
    ):
        """The potential of a trained emulator's network."""
        kwargs.setdefault("device", emulator.device)
        return cls(emulator.model, emulator.diffusion, field_log10, emulator.normalisation, **kwargs)

    def with_options(
        self,
        **options,          # Potential keywords to change (estimator, t_exact, n_strata, n_noise, ...).
    ):
        """A new potential of the same network, field and normalisation with some options
        changed (its own evaluation counters): e.g. the cheap estimator of a local scan's
        coarse grid."""
        unknown = set(options) - set(self._options)
        if unknown:
            raise TypeError(f"unknown Potential option(s) {sorted(unknown)}")
        return type(self)(*self._args, **{**self._options, **options})

    @property
    def evaluations_per_theta(self):
        """Network evaluations per parameter point."""
        return len(self._entries)

    def _noise_for(self, t, j):
        """The noise of timestep t, draw j: ``crn_noise(noise_seed, t)`` for j = 0 (what
        ``nll_bound`` uses), an unrelated stream of the same seed for j > 0."""
        key = (t, j)
        n = self._noise.get(key)
        if n is None:
            seed = self.noise_seed if j == 0 else crn_seed(self.noise_seed, (1 << 40) + j)
            n = crn_noise(seed, t, tuple(self.x0.shape[1:])).to(device=self.device, dtype=self.dtype)
            if n.numel() * len(self._entries) <= 2**25:  # cache up to 256 MB of float64
                self._noise[key] = n
        return n

    def _sweep(
        self,
        theta,              # Parameter points (M, 2) float64 numpy.
        gradient = False,   # Also dU/dtheta, backpropagating each batch through the network's cond.
    ):
        """Every network input of theta, ``batch_size`` at a time: (vals (E * M,) float64 in
        entry-major order, dU/dtheta (M, 2) float64 or None)."""
        M, E = theta.shape[0], len(self._entries)
        flat_e = np.repeat(np.arange(E), M)  # entry-major: consecutive inputs share a noise
        flat_m = np.tile(np.arange(M), E)
        leaf = torch.from_numpy(theta).requires_grad_(gradient)  # CPU float64, cast per batch (MPS has no float64)
        coef = self._coefficients()[flat_e] if gradient else None
        grad = np.zeros((M, 2)) if gradient else None
        vals = np.empty(flat_e.size)
        starts = range(0, flat_e.size, self.batch_size)
        if self.progress:
            from tqdm.auto import tqdm

            starts = tqdm(starts, desc="potential")
        for lo in starts:
            hi = min(lo + self.batch_size, flat_e.size)
            uniq, inv = np.unique(flat_e[lo:hi], return_inverse=True)
            ent = [self._entries[e] for e in uniq]
            noise = torch.stack([s * self._noise_for(t, j) for _, t, j, s in ent])
            noise = noise[torch.from_numpy(inv.reshape(-1)).to(self.device)]
            t = torch.tensor([ent[k][1] for k in inv.reshape(-1)], dtype=torch.long, device=self.device)
            x0 = self.x0.expand(hi - lo, *self.x0.shape[1:])
            with torch.set_grad_enabled(gradient):
                cond = leaf.to(device=self.device, dtype=self.dtype)[torch.from_numpy(flat_m[lo:hi]).to(self.device)]
                out = self.diffusion.vb_terms(self.model, x0, cond, t, noise)
                if gradient:
                    if not out.requires_grad:
                        raise TypeError("the model's output does not depend differentiably on cond (the plain "
                                        "WienerOracle looks its spectra up in numpy: use TabulatedOracle)")
                    w = torch.from_numpy(coef[lo:hi]).to(out)
                    (g,) = torch.autograd.grad((w * out).sum(), leaf)
                    grad += g.detach().to("cpu", torch.float64).numpy()
                    self.gradient_evaluations += hi - lo
            vals[lo:hi] = out.detach().to("cpu", torch.float64).numpy()
            self.evaluations += hi - lo
        return vals, grad

    def _coefficients(self):
        """Weight of each entry's value in U (E,): its timestep's weight over the number of
        entries (draws and signs) that timestep averages."""
        return self.weights[self._index] / self._count[self._index]

    def _aggregate(self, vals, M):
        """The terms (M, len(timesteps)) from the entry-major values of :meth:`_sweep`."""
        vals = vals.reshape(len(self._entries), M)
        terms = np.zeros((len(self.timesteps), M))
        np.add.at(terms, self._index, vals)
        return (terms / self._count[:, None]).T

    @torch.no_grad()
    def terms(
        self,
        theta,              # Parameter points (M, 2) (or (2,)): physical (Omega_m, sigma_8).
    ):
        """The bound terms (M, len(timesteps)) float64 at ``self.timesteps``, unweighted,
        each averaged over its noise draws (and signs)."""
        theta = np.asarray(theta, dtype=np.float64).reshape(-1, 2)
        vals, _ = self._sweep(theta)
        return self._aggregate(vals, theta.shape[0])

    def __call__(
        self,
        theta,              # Parameter points (M, 2) (or (2,)): physical (Omega_m, sigma_8).
    ):
        """U(theta) (M,) float64, nats: the weighted sum of the terms (+ prior_kl)."""
        return self.terms(theta) @ self.weights + self.prior

    def value_and_grad(
        self,
        theta,              # Parameter points (M, 2) (or (2,)): physical (Omega_m, sigma_8).
    ):
        """(U (M,), dU/dtheta (M, 2)) float64: U as :meth:`__call__` computes it (same
        batches; equal to rounding) and its gradient through the network's cond, one
        backward pass per batch."""
        theta = np.asarray(theta, dtype=np.float64).reshape(-1, 2)
        vals, grad = self._sweep(theta, gradient=True)
        return self._aggregate(vals, theta.shape[0]) @ self.weights + self.prior, grad

    def torch_call(
        self,
        theta,              # Parameter points, a tensor (..., 2): physical (Omega_m, sigma_8).
    ):
        """U(theta) as a float64 tensor of shape theta.shape[:-1] on theta's device. When theta
        requires grad, U carries dU/dtheta (computed now, batch by batch, by
        :meth:`value_and_grad`; first derivatives only); otherwise it is :meth:`__call__`."""
        theta = torch.as_tensor(theta).to(torch.float64)
        flat = theta.reshape(-1, 2)
        if flat.requires_grad and torch.is_grad_enabled():
            U = _PotentialFunction.apply(flat, self)
        else:
            U = torch.from_numpy(self(flat.detach().cpu().numpy())).to(theta.device)
        return U.reshape(theta.shape[:-1])


class _PotentialFunction(torch.autograd.Function):
    """U(theta) (M,) of a :class:`Potential` with its gradient computed in the forward pass
    (one batch's graph in memory at a time) and applied in the backward pass."""

    @staticmethod
    def forward(ctx, theta, potential):
        U, grad = potential.value_and_grad(theta.detach().cpu().numpy())
        ctx.save_for_backward(torch.from_numpy(grad).to(theta))
        return torch.from_numpy(U).to(theta)

    @staticmethod
    def backward(ctx, grad_U):
        (grad,) = ctx.saved_tensors
        return grad_U[:, None] * grad, None


class ExactLog10Potential(BasePotential):
    """U(theta) = -log p(field | theta), exact, for a prepared lognormal field
    (:func:`cosmodiff.synthetic.lognormal_log10_likelihood`); ``evaluations`` counts the
    parameter points."""

    def __init__(
        self,
        field_log10,        # A prepared lognormal field: log10 surface density (N, N).
        native_resolution = None,  # Resolution the field was generated at (None: N).
        method   = "bicubic",      # Downsampling of prepare.
    ):
        self.field = np.asarray(field_log10, dtype=np.float64)
        self.native_resolution = native_resolution
        self.method = method
        self.evaluations = 0

    def __call__(
        self,
        theta,              # Parameter points (M, 2): physical (Omega_m, sigma_8).
    ):
        """U (M,) float64, nats of the log10 field."""
        U = -np.array([lognormal_log10_likelihood(self.field, a, b, self.native_resolution, self.method)
                       for a, b in theta])
        self.evaluations += len(U)
        return U


def exact_log10_potential(
    field_log10,        # A prepared lognormal field: log10 surface density (N, N).
    native_resolution = None,  # Resolution the field was generated at (None: N).
    method   = "bicubic",      # Downsampling of prepare.
):
    """U(theta) = -log p(field | theta), exact, for a prepared lognormal field: an
    :class:`ExactLog10Potential`, theta (M, 2) -> (M,), for any scan."""
    return ExactLog10Potential(field_log10, native_resolution, method)


__all__ = [
    "BasePotential",
    "ExactLog10Potential",
    "Potential",
    "default_device_dtype",
    "exact_log10_potential",
]
