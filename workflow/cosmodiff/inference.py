"""Parameter inference with the diffusion model's variational bound as a likelihood.

Mudur, Cuesta-Lazaro & Finkbeiner (2023) turn a conditional DDPM into a likelihood: the
variational bound on -log p(x_0 | theta) is summed over timesteps and scanned over a grid of
(Omega_m, sigma_8) with the same noise at every grid point. This module is that machinery,
in the shape of ``sbi``: a *potential* U(theta | x_o), an estimate of minus the
log-likelihood in nats, that any grid scan or sampler can call on a batch of parameters.

Pieces:

* :class:`Potential`: U(theta) of one field for a network and its
  :class:`cosmodiff.diffusion.GaussianDiffusion`; three estimators (below), common random
  numbers, batched network calls, an ``evaluations`` counter.
* :class:`WienerOracle`: the exact optimal noise predictor of the lognormal synthetic data
  (a Wiener filter in Fourier space), so that everything here can be tested against the
  exact likelihood without training a network.
* Grid scans: :func:`grid_posterior` -> :class:`GridPosterior` (normalised posterior,
  marginals, means, stds, equal-tailed intervals, 2D highest-density levels, HDF5 output);
  :func:`grid_around` (the authors' +-0.1 window clipped to the prior), :func:`coarse_to_fine`
  (the whole prior coarsely, then a fine grid sized from the coarse posterior),
  :func:`exact_lognormal_posterior` (the reference) and :func:`compare`.
* Calibration: :func:`coverage` of the intervals and z-scores over many fields.

Estimators of U (``Potential(estimator=...)``); every one adds ``prior_kl`` except
"truncated", and every one is a deterministic function of theta once the noise seed is
fixed (common random numbers: every theta sees the same x_t at every t):

``"truncated"``
    The authors' baseline: sum of the bound terms over t = 0..t_max (t_max = 10 in the
    paper's grid scans), one noise draw per t; t_max + 1 evaluations per theta. Not the
    likelihood: the terms for t > t_max depend on theta too (32 x 32, exact denoiser: 60-90%
    of dU/dOmega_m comes from t > 200, through the mean density), and dropping them biases
    and widens the posterior (noise-free, two fields, both normalisations below: KL to the exact
    posterior 0.44-1.03 nats, widths 1.07-2.08 times, means off by up to 1.3 sigma).
``"exact"``
    Every t = 0..T-1, one draw each (T = 1000 evaluations per theta): ``nll_bound``.
``"full"`` (default)
    An unbiased estimate of the whole bound at a fraction of the cost, built from two
    measured facts (32 x 32 lognormal fields, exact denoiser): (i) each term is a one-draw
    Monte Carlo estimate, and the noise, though common to all theta, tilts U(theta) at
    random and moves the posterior; (ii) at a training-like normalisation ((lo, hi) =
    (7, 15), x0 in [-1, 1]) 65-84% of the variance of dU/dtheta comes from t = 0 and
    95-97% from t < 5. So: t = 0..t_exact-1 (default 20) are all evaluated, with extra
    noise draws at the smallest t (``FULL_DRAWS``: 16 at t = 0, 8 at t = 1..3, 4 at 4..9, 2
    at 10..19: 84 evaluations); [t_exact, T) is cut into ``n_strata`` (80) strata with
    edges uniform in sqrt(t) (``spacing=0.5``: sampling density ~ t^-1/2, near the Neyman
    allocation for a per-t noise variance falling as 1/t), one t drawn uniformly per stratum
    and weighted by the stratum size n_k. Given the noise, E[sum_k n_k L(t_k)] =
    sum_{t >= t_exact} L(t) with variance sum_k n_k^2 Var_k(L) (:func:`stratified_variance`);
    averaging draws keeps every term unbiased. The sampled t come from ``strata_seed``
    (default ``noise_seed``), shared by every theta. Cost 164 evaluations per theta (a sixth
    of "exact").

    Measured posterior-mean noise (standard deviation over noise seeds, in units of the
    posterior sigma, Omega_m / sigma_8), 32 x 32: normalisation (7, 15): "full" 0.17 / 0.13
    at 164 evaluations, "exact" 0.44 / 0.36 at 1000, 50 exact t + 50 strata without extra
    draws 0.51 / 0.36 at 100; normalisation (11.5, 11.75), where the variance is spread over all t:
    "full" 0.33 / 0.22, "exact" 0.15 / 0.13. Reaching ~0.05 sigma takes ~8000 evaluations
    per theta there (tests: the slow test). ``antithetic`` pairs each draw with -eps: it
    halves the t = 0 variance but does nothing at t >= 1 (the part even in eps dominates),
    so it is off by default.

Normalisation matters beyond units: the decoder and first reverse steps have variance
beta_0 = 1e-4 in normalised units, so Fourier modes of x0 with variance below ~10 beta_0 are
invisible to the bound (it is then the likelihood of a slightly noised field), and modes
with variance above ~1 / abar_{T-1} ~ 1e4 are not forgotten by the chain. With (7, 15) at
32 x 32, 6% of the modes of the lognormal maps are below beta_0 and those below 10 beta_0
carry most of the Fisher information of the exact likelihood; the exact denoiser's bound is
then 0.14 nats/pixel above the NLL and, even without noise, its posterior is 0.98-1.28
times as wide and up to 0.7 sigma off (4 fields). With (11.5, 11.75) every mode is >= 17 beta_0, the gap is 0.01
nats/pixel and the noise-free posterior is within 0.06 sigma and 2.4% of the exact one.

Units: a map enters the network as ``x0 = 2 (log10 Sigma - lo) / (hi - lo) - 1`` (the
training normalisation); U is in nats of that normalised field. The Jacobian to physical
units (``-sum log|dx0/dSigma|``) does not depend on theta, so posteriors and U differences
are those of the physical field.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from itertools import pairwise

import numpy as np
import torch

from .cosmology import BOX_SIZE, PRIOR
from .diffusion import crn_noise, crn_seed
from .prepare import normalise
from .synthetic import log10_spectrum, lognormal_log_likelihood

ESTIMATORS = ("full", "truncated", "exact")
#: Default noise draws of the "full" estimator: {t_end: draws at t < t_end} (84 evaluations
#: for t < 20; see the module docstring for why the small t get most of them).
FULL_DRAWS = {1: 16, 4: 8, 10: 4, 20: 2}
PARAMS = ("omega_m", "sigma_8")
#: Probability masses of the reported intervals and 2D highest-density regions.
MASSES = (0.68, 0.95)

LN10 = math.log(10.0)


# --------------------------------------------------------------------------------------------
# stratified timesteps
# --------------------------------------------------------------------------------------------


def strata_edges(
    T,                  # Number of diffusion steps.
    t_exact,            # First timestep of the sampled range [t_exact, T).
    n_strata,           # Number of strata (at most T - t_exact).
    spacing = 0.5,      # Edges uniform in t**spacing (1: equal widths; 0: uniform in log t).
):
    """Integer edges t_exact = e_0 < e_1 < ... < e_K = T of the strata of the "full"
    estimator, equally spaced in t**spacing (log t for 0), every stratum non-empty. One t is
    drawn per stratum, so the sampling density goes as t**(spacing - 1)."""
    T, t_exact, n_strata = int(T), int(t_exact), int(n_strata)
    if not 0 <= t_exact <= T:
        raise ValueError(f"t_exact must be in [0, T={T}], got {t_exact}")
    span = T - t_exact
    if span == 0:
        return np.array([T], dtype=np.int64)
    if not 1 <= n_strata <= span:
        raise ValueError(f"n_strata must be in [1, {span}] for t_exact={t_exact}, T={T}; got {n_strata}")
    p = float(spacing)
    if p < 0:
        raise ValueError(f"spacing must be >= 0, got {spacing}")
    a, b = float(max(t_exact, 1)), float(T)
    if p == 0:
        raw = np.geomspace(a, b, n_strata + 1)
    else:
        raw = np.linspace(a**p, b**p, n_strata + 1) ** (1.0 / p)
    raw = (raw - raw[0]) * (T - t_exact) / (raw[-1] - raw[0]) + t_exact
    edges = np.round(raw).astype(np.int64)
    edges[0], edges[-1] = t_exact, T
    # strictly increasing: each stratum at least 1 wide, still ending at T
    for k in range(1, n_strata + 1):
        edges[k] = max(edges[k], edges[k - 1] + 1)
    edges[-1] = T
    for k in range(n_strata - 1, 0, -1):
        edges[k] = min(edges[k], edges[k + 1] - 1)
    return edges


def stratified_timesteps(
    T,                  # Number of diffusion steps.
    t_exact,            # t = 0..t_exact-1 are all taken, with weight 1.
    n_strata,           # Number of strata of [t_exact, T), one draw each.
    seed,               # Seed of the draws (an int).
    spacing  = 0.5,     # Strata edges uniform in t**spacing (see strata_edges).
):
    """The timesteps and weights of the "full" estimator: ``(timesteps, weights)``, int64 and
    float64 arrays of length ``t_exact + n_strata``; ``sum(weights) == T``."""
    edges = strata_edges(T, t_exact, n_strata, spacing)
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, 0x57A7])
    drawn = np.array([rng.integers(lo, hi) for lo, hi in pairwise(edges)], dtype=np.int64)
    timesteps = np.concatenate([np.arange(int(t_exact), dtype=np.int64), drawn])
    weights = np.concatenate([np.ones(int(t_exact)), np.diff(edges).astype(np.float64)])
    return timesteps, weights


def stratified_variance(
    terms,              # Bound terms L(t) for every t = 0..T-1: array (..., T).
    t_exact,            # As in stratified_timesteps.
    n_strata,           # As in stratified_timesteps.
    spacing  = 0.5,     # As in stratified_timesteps.
):
    """Exact variance (over the draw of timesteps, the noise held fixed) of the "full"
    estimate of ``terms.sum(-1)``: ``sum_k n_k^2 Var_k`` with ``Var_k`` the population
    variance of the terms inside stratum k. Pass differences of the terms between two
    parameter points to get the variance of a U difference."""
    terms = np.asarray(terms, dtype=np.float64)
    edges = strata_edges(terms.shape[-1], t_exact, n_strata, spacing)
    var = np.zeros(terms.shape[:-1])
    for lo, hi in pairwise(edges):
        var = var + (hi - lo) ** 2 * terms[..., lo:hi].var(axis=-1)
    return var


# --------------------------------------------------------------------------------------------
# the potential
# --------------------------------------------------------------------------------------------


def _default_device_dtype(model, device, dtype):
    params = list(model.parameters()) if isinstance(model, torch.nn.Module) else []
    if device is None:
        device = params[0].device if params else torch.device("cpu")
    if dtype is None:
        dtype = params[0].dtype if params else torch.float64
    return torch.device(device), dtype


class Potential:
    """U(theta | x_o): an estimate of -log p(field | theta) in nats from the variational bound.

    ``potential(theta)`` with theta (M, 2) physical (Omega_m, sigma_8) returns U (M,) float64.
    For a given field, noise seed and estimator, U is a deterministic function of theta:
    the noise of timestep t is ``crn_noise(noise_seed, t)`` (further draws: unrelated streams
    of the same seed) and the sampled timesteps are drawn once, so every theta sees the same
    x_t (common random numbers: a smooth surface). (theta, t, draw) triples are batched
    ``batch_size`` at a time into the network; ``evaluations`` counts them (one network
    evaluation each). Estimators: see the module docstring.

    Noise draws: every bound term is a one-draw Monte Carlo estimate of its expectation
    over x_t, and that noise, although common to all theta, tilts the surface at random
    and shifts the posterior; ``n_noise`` averages several draws per timestep (the "full"
    default, ``FULL_DRAWS``, puts them at the smallest t, where the variance sits for a
    training-like normalisation). ``antithetic`` pairs every draw with -eps, which cancels
    the part of each term that is odd in eps. See the module docstring for measurements.

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
        self.model = model
        if isinstance(model, torch.nn.Module):
            model.eval()
        self.diffusion = diffusion
        self.normalisation = tuple(float(v) for v in normalisation)
        self.estimator = estimator
        self.noise_seed = int(noise_seed)
        if n_noise is None:
            n_noise = dict(FULL_DRAWS) if estimator == "full" else 1
        self.n_noise = n_noise
        self.antithetic = bool(antithetic)
        self.batch_size = int(batch_size)
        self.progress = bool(progress)
        self.device, self.dtype = _default_device_dtype(model, device, dtype)
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
        self.draws = np.array([_draws(n_noise, int(t)) for t in self.timesteps], dtype=np.int64)
        signs = (1.0, -1.0) if self.antithetic else (1.0,)
        # every network input of one theta: (index into timesteps, t, draw, sign)
        self._entries = [
            (i, int(t), j, s) for i, t in enumerate(self.timesteps) for j in range(self.draws[i]) for s in signs
        ]
        self.evaluations = 0
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

    @torch.no_grad()
    def terms(
        self,
        theta,              # Parameter points (M, 2) (or (2,)): physical (Omega_m, sigma_8).
    ):
        """The bound terms (M, len(timesteps)) float64 at ``self.timesteps``, unweighted,
        each averaged over its noise draws (and signs)."""
        theta = np.asarray(theta, dtype=np.float64).reshape(-1, 2)
        M, E = theta.shape[0], len(self._entries)
        flat_e = np.repeat(np.arange(E), M)  # entry-major: consecutive inputs share a noise
        flat_m = np.tile(np.arange(M), E)
        cond_all = torch.from_numpy(theta).to(device=self.device, dtype=self.dtype)
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
            cond = cond_all[torch.from_numpy(flat_m[lo:hi]).to(self.device)]
            x0 = self.x0.expand(hi - lo, *self.x0.shape[1:])
            out = self.diffusion.vb_terms(self.model, x0, cond, t, noise)
            vals[lo:hi] = out.detach().to("cpu", torch.float64).numpy()
            self.evaluations += hi - lo
        vals = vals.reshape(E, M)
        index = np.array([e[0] for e in self._entries])
        terms = np.zeros((len(self.timesteps), M))
        np.add.at(terms, index, vals)
        count = np.bincount(index, minlength=len(self.timesteps))
        return (terms / count[:, None]).T

    def __call__(
        self,
        theta,              # Parameter points (M, 2) (or (2,)): physical (Omega_m, sigma_8).
    ):
        """U(theta) (M,) float64, nats: the weighted sum of the terms (+ prior_kl)."""
        return self.terms(theta) @ self.weights + self.prior


def potential_options(
    settings,           # The workflow config's `inference` section (or a dict with its keys).
    field    = 0,       # Test field index: its noise seed is noise_seed + field.
):
    """The :class:`Potential` keywords of the workflow's `inference` settings for one field:
    estimator, t_max, t_exact, n_strata, n_noise and noise_seed."""
    keys = ("estimator", "t_max", "t_exact", "n_strata", "n_noise")
    return {**{k: settings[k] for k in keys}, "noise_seed": int(settings["noise_seed"]) + int(field)}


def scan_field(
    potential,          # Potential (or any callable theta (M, 2) -> U (M,)) of one field.
    settings,           # The workflow config's `inference` section: scan, n_coarse, n_fine, max_refine, half_width, n_grid.
    truth    = None,    # (Omega_m, sigma_8): the centre of the authors' "around_truth" window.
):
    """The grid posterior of one field as the workflow scans it: :func:`coarse_to_fine`
    over the prior, or the authors' window :func:`grid_around` the truth."""
    if settings["scan"] == "coarse_to_fine":
        return coarse_to_fine(
            potential, n_coarse=settings["n_coarse"], n_fine=settings["n_fine"], max_refine=settings["max_refine"]
        )
    if truth is None:
        raise ValueError("the around_truth scan needs the field's true parameters")
    return grid_posterior(potential, *grid_around(truth, settings["half_width"], settings["n_grid"]))


def exact_log10_potential(
    field_log10,        # A prepared lognormal field: log10 surface density (N, N).
    native_resolution = None,  # Resolution the field was generated at (None: N).
    method   = "bicubic",      # Downsampling of prepare.
):
    """U(theta) = -log p(field | theta), exact, for a prepared lognormal field: a callable
    theta (M, 2) -> (M,) for any scan (:func:`cosmodiff.synthetic.lognormal_log10_likelihood`)."""
    from .synthetic import lognormal_log10_likelihood

    field = np.asarray(field_log10, dtype=np.float64)

    def potential(theta):
        return -np.array([lognormal_log10_likelihood(field, a, b, native_resolution, method) for a, b in theta])

    return potential


def _draws(n_noise, t):
    """Noise draws at timestep t for an ``n_noise`` setting (int or {t_end: draws})."""
    if isinstance(n_noise, dict):
        ends = sorted(int(k) for k in n_noise)
        for e in ends:
            if t < e:
                n = int(n_noise[e] if e in n_noise else n_noise[str(e)])
                break
        else:
            n = 1
    else:
        n = int(n_noise)
    if n < 1:
        raise ValueError(f"noise draws must be >= 1, got {n} at t={t}")
    return n


# --------------------------------------------------------------------------------------------
# the exact optimal denoiser of the lognormal data
# --------------------------------------------------------------------------------------------


class WienerOracle(torch.nn.Module):
    """The exact E[eps | x_t, theta] of the lognormal synthetic maps, in normalised units.

    With g ~ N(0, C_g) (C_g circulant, eigenvalues ``lognormal_spectrum(...).gaussian``), a
    map Sigma = exp(log_mean + g - sigma_g^2 / 2) normalises to x0 = A g + mu, with
    A = 2 / ((hi - lo) ln 10) and mu = 2 ((log_mean - sigma_g^2/2) / ln 10 - lo) / (hi - lo) - 1.
    Then x_t = sqrt(abar) x0 + sqrt(1 - abar) eps is Gaussian and
    E[eps | x_t] = sqrt(1 - abar) Sigma_t^{-1} (x_t - sqrt(abar) mu),
    Sigma_t = abar A^2 C_g + (1 - abar) I, diagonal in Fourier space (applied with FFTs).
    Spectra are cached per (Omega_m, sigma_8, N). Computed in float64 (returned in x_t's dtype).

    Prepared fields: with ``native_resolution`` larger than the fields' N, the maps are taken
    to be made at that resolution and downsampled by ``prepare.downsample(..., N, method)``,
    which is linear in log10 Sigma and commutes with shifts, so the field stays Gaussian with
    the aliased spectrum of :func:`cosmodiff.synthetic.log10_spectrum` (the same one that
    gives the exact likelihood of the workflow's prepared fields).
    """

    def __init__(
        self,
        diffusion,          # The GaussianDiffusion whose alphas_cumprod define x_t.
        normalisation,      # (lo, hi) of the log10 maps: x0 = 2 (log10 - lo) / (hi - lo) - 1.
        box_size = BOX_SIZE,  # Side of the periodic box, Mpc/h (that of the maps).
        native_resolution = None,  # Resolution the maps were generated at (None: that of the fields).
        method   = "bicubic",  # Downsampling of prepare, when native_resolution is larger.
    ):
        super().__init__()
        self.diffusion = diffusion
        self.normalisation = tuple(float(v) for v in normalisation)
        self.box_size = float(box_size)
        self.native_resolution = None if native_resolution is None else int(native_resolution)
        self.method = str(method)
        self._cache = {}

    def spectrum(
        self,
        omega_m,            # Parameter point.
        sigma_8,
        resolution,         # Pixels per side N.
    ):
        """(lambda, mu): the eigenvalues (N, N) float64 tensor of the covariance of x0,
        A^2 C_g (log10 units: (2 / (hi - lo))^2 times those of log10 Sigma), and its mean mu
        (a float), cached."""
        key = (float(omega_m), float(sigma_8), int(resolution))
        hit = self._cache.get(key)
        if hit is None:
            native = max(key[2], self.native_resolution or 0)
            lam10, mean10 = log10_spectrum(key[0], key[1], native, key[2], self.method, self.box_size)
            lo, hi = self.normalisation
            hit = (torch.from_numpy((2.0 / (hi - lo)) ** 2 * lam10), float(normalise(mean10, self.normalisation)))
            self._cache[key] = hit
        return hit

    def _batch_spectra(self, cond, resolution, device):
        c = np.asarray(cond.detach().to("cpu", torch.float64).numpy()).reshape(-1, 2)
        uniq, inv = np.unique(c, axis=0, return_inverse=True)
        specs = [self.spectrum(om, s8, resolution) for om, s8 in uniq]
        inv = torch.from_numpy(np.asarray(inv).reshape(-1)).to(device)
        lam = torch.stack([s[0] for s in specs]).to(device)[inv]
        mu = torch.tensor([s[1] for s in specs], dtype=torch.float64, device=device)[inv]
        return lam[:, None], mu.view(-1, 1, 1, 1)

    def _abar(self, t, device):
        return torch.from_numpy(self.diffusion.alphas_cumprod)[t.detach().cpu().long()].to(device).view(-1, 1, 1, 1)

    def forward(self, x_t, t, cond):
        """The network output of the diffusion's parametrisation (eps_hat for
        ``prediction="eps"``), (B, 1, N, N), for x_t (B, 1, N, N), timesteps t (B,), cond (B, 2)."""
        dt = torch.float32 if x_t.device.type == "mps" else torch.float64
        x = x_t.to(dt)
        lam, mu = self._batch_spectra(cond, x.shape[-1], x.device)
        a = self._abar(t, x.device)
        lam, mu, a = lam.to(dt), mu.to(dt), a.to(dt)
        filt = (1.0 - a).sqrt() / (a * lam + 1.0 - a)
        eps = torch.fft.ifft2(filt * torch.fft.fft2(x - a.sqrt() * mu)).real
        return self.diffusion.model_output_from_eps(x, t, eps).to(x_t.dtype)

    def mmse(
        self,
        t,                  # Timestep (an int).
        theta,              # One parameter point (Omega_m, sigma_8).
        resolution,         # Pixels per side N.
    ):
        """The minimum mean squared error per pixel of any noise predictor at t:
        1 - (1 - abar) mean_k 1 / (abar lambda_k + 1 - abar) (the posterior variance of eps)."""
        lam, _ = self.spectrum(theta[0], theta[1], resolution)
        a = self.diffusion.alphas_cumprod[int(t)]
        return float(1.0 - (1.0 - a) * (1.0 / (a * lam.numpy() + 1.0 - a)).mean())

    def expected_bound(
        self,
        x0,                 # Normalised fields (B, 1, N, N) or (B, N, N) (numpy or torch).
        theta,              # One parameter point (Omega_m, sigma_8).
        diffusion,          # The GaussianDiffusion whose bound (model variances) is meant.
        return_terms = False,  # Also return the expected terms (B, T).
    ):
        """The expectation over the forward noise of the whole bound of this oracle,
        ``E[nll_bound(self, x0, theta)]`` (all T terms + prior_kl), in closed form, per field
        (B,) float64: the noise-free reference of every Monte Carlo estimator.

        In the orthonormal real Fourier basis the fields, the noise and the denoiser
        decouple into independent real degrees of freedom with variances s_k^2 = A^2 lambda_k,
        and the optimal denoiser's error is x0_hat - x0 = -y b^2 / v + a b s^2 / v eps
        (a^2 = abar_t, b^2 = 1 - abar_t, v = a^2 s^2 + b^2, y the deviation from the mean), so
        E (x0_hat - x0)^2 = y^2 b^4 / v^2 + a^2 b^2 s^4 / v^2 per degree of freedom; summing
        over the degrees of freedom is summing over all N^2 FFT coefficients with
        y^2 -> |fft(x0 - mu)_k|^2 / N^2 (conjugate pairs hold two real ones). Then
        E KL_t = 0.5 (log(var_p / var_q) + var_q / var_p - 1) + coef1^2 E err^2 / (2 var_p) for
        t >= 1 and E[-log N(x0; x0_hat, beta_0)] = 0.5 log(2 pi beta_0) + E err^2 / (2 beta_0)."""
        x = np.asarray(torch.as_tensor(x0).detach().cpu().double().numpy())
        x = x.reshape(x.shape[0], x.shape[-2], x.shape[-1])
        n = x.shape[-1]
        lam, mu = self.spectrum(theta[0], theta[1], n)
        s2 = lam.numpy().ravel()
        y2 = (np.abs(np.fft.fft2(x - mu)) ** 2).reshape(x.shape[0], -1) / (n * n)  # (B, N^2)
        abar = np.asarray(diffusion.alphas_cumprod)
        var_p = np.asarray(diffusion.model_variance)
        var_q = np.asarray(diffusion.posterior_variance)
        coef1 = np.asarray(diffusion.posterior_mean_coef1)
        terms = np.empty((x.shape[0], abar.size))
        step = max(1, 2**22 // s2.size)
        for lo in range(0, abar.size, step):
            hi = min(abar.size, lo + step)
            a2, b2 = abar[lo:hi, None], 1.0 - abar[lo:hi, None]
            v = a2 * s2[None] + b2
            w_y = b2**2 / v**2                                   # (t, k): coefficient of y^2
            c = (a2 * b2 * s2[None] ** 2 / v**2).sum(axis=1)     # (t,): noise part, summed over k
            err2 = y2 @ w_y.T + c[None]                          # (B, t)
            vp, vq, c1 = var_p[lo:hi], var_q[lo:hi], coef1[lo:hi]
            with np.errstate(divide="ignore", invalid="ignore"):
                kl_const = 0.5 * (np.log(vp / vq) + vq / vp - 1.0) * s2.size
            terms[:, lo:hi] = kl_const[None] + c1[None] ** 2 * err2 / (2.0 * vp[None])
            if lo == 0:
                terms[:, 0] = 0.5 * math.log(2 * math.pi * var_p[0]) * s2.size + err2[:, 0] / (2.0 * var_p[0])
        prior = diffusion.prior_kl(torch.from_numpy(x[:, None])).numpy()
        total = terms.sum(axis=1) + prior
        return (total, terms) if return_terms else total

    def nll(
        self,
        x0,                 # Normalised fields (B, 1, N, N) or (B, N, N) (numpy or torch).
        theta,              # One parameter point (Omega_m, sigma_8).
    ):
        """Exact -log N(x0; mu, A^2 C_g) per field (B,) float64, nats of the normalised field."""
        x = np.asarray(torch.as_tensor(x0).detach().cpu().double().numpy())
        x = x.reshape(x.shape[0], x.shape[-2], x.shape[-1])
        n = x.shape[-1]
        lam, mu = self.spectrum(theta[0], theta[1], n)
        lam = lam.numpy()
        quad = (np.abs(np.fft.fft2(x - mu)) ** 2 / lam).sum(axis=(-2, -1)) / (n * n)
        return 0.5 * (quad + np.log(lam).sum() + n * n * math.log(2 * math.pi))


# --------------------------------------------------------------------------------------------
# grid posteriors
# --------------------------------------------------------------------------------------------


def _trapezoid_weights(x):
    """Integration weights of a 1D grid: half the distance to each neighbour (cell widths)."""
    x = np.asarray(x, dtype=np.float64)
    d = np.diff(x)
    w = np.zeros_like(x)
    w[:-1] += d / 2
    w[1:] += d / 2
    return w


def _cdf(x, pdf):
    """CDF of a piecewise-linear density at the nodes x (trapezoid rule), ending at 1."""
    c = np.concatenate([[0.0], np.cumsum(np.diff(x) * (pdf[1:] + pdf[:-1]) / 2)])
    return c / c[-1]


def _quantile(x, pdf, q):
    """Quantile(s) q of a piecewise-linear density on nodes x (CDF interpolated linearly)."""
    c = _cdf(x, pdf)
    keep = np.concatenate([[True], np.diff(c) > 0])  # strictly increasing for interp
    return np.interp(q, c[keep], x[keep])


@dataclass
class GridPosterior:
    """A posterior on a (Omega_m, sigma_8) grid from a potential U, under a flat prior.

    omega_m, sigma_8:   the grid axes (n_om,), (n_s8,), increasing.
    potential:          U on the grid (n_om, n_s8), nats (indexing "ij").
    log_post:           -(U - min U): the unnormalised log posterior, 0 at the mode.
    log_density:        normalised log posterior density (integrates to 1 with the cells).
    density:            exp(log_density).
    prob:               mass of each node's cell: density * cell area; sums to 1. Cells are
                        the trapezoid-rule cells (half cells on the grid's edges).
    marginals:          {"omega_m": (n_om,), "sigma_8": (n_s8,)} 1D densities.
    mean, std:          (2,) marginal means and standard deviations; cov (2, 2).
    intervals:          {0.68: (2, 2), 0.95: (2, 2)}: per parameter (row) the equal-tailed
                        interval [q_(1-m)/2, q_(1+m)/2] of the marginal CDF (linear in each cell).
    levels:             {0.68: d, 0.95: d}: the density whose superlevel set holds that mass
                        (the 2D highest-density contours).
    evaluations:        network evaluations that produced U (None if unknown).
    meta:               free-form provenance (scan settings, stages, truth, ...).
    """

    omega_m: np.ndarray
    sigma_8: np.ndarray
    potential: np.ndarray
    log_post: np.ndarray
    log_density: np.ndarray
    density: np.ndarray
    prob: np.ndarray
    marginals: dict
    mean: np.ndarray
    std: np.ndarray
    cov: np.ndarray
    intervals: dict
    levels: dict
    evaluations: int | None = None
    meta: dict = field(default_factory=dict)

    @classmethod
    def from_potential(
        cls,
        omega_m,            # Grid axis of Omega_m (n_om,), increasing, >= 2 points.
        sigma_8,            # Grid axis of sigma_8 (n_s8,), increasing, >= 2 points.
        potential,          # U (n_om, n_s8) in nats; +inf allowed (zero posterior), no NaN.
        evaluations = None, # Network evaluations spent (recorded in the summary).
        meta        = None, # Provenance dict.
    ):
        om = np.asarray(omega_m, dtype=np.float64)
        s8 = np.asarray(sigma_8, dtype=np.float64)
        U = np.asarray(potential, dtype=np.float64).reshape(om.size, s8.size)
        for name, ax in (("omega_m", om), ("sigma_8", s8)):
            if ax.ndim != 1 or ax.size < 2 or np.any(np.diff(ax) <= 0):
                raise ValueError(f"{name} grid must be 1D, increasing, with >= 2 points")
        if np.isnan(U).any() or not np.isfinite(U).any() or (U == -np.inf).any():
            raise ValueError("potential must be finite or +inf (no NaN), with a finite value somewhere")
        log_post = -(U - U[np.isfinite(U)].min())
        w_om, w_s8 = _trapezoid_weights(om), _trapezoid_weights(s8)
        area = w_om[:, None] * w_s8[None, :]
        log_z = math.log(float((np.exp(log_post) * area).sum()))
        log_density = log_post - log_z
        density = np.exp(log_density)
        prob = density * area
        prob = prob / prob.sum()  # rounding only
        m_om = density @ w_s8
        m_s8 = w_om @ density
        pm_om, pm_s8 = prob.sum(axis=1), prob.sum(axis=0)
        mean = np.array([pm_om @ om, pm_s8 @ s8])
        d_om, d_s8 = om - mean[0], s8 - mean[1]
        cov = np.array(
            [[pm_om @ d_om**2, float(d_om @ prob @ d_s8)], [float(d_om @ prob @ d_s8), pm_s8 @ d_s8**2]]
        )
        std = np.sqrt(np.diag(cov))
        intervals = {}
        for m in MASSES:
            q = [(1 - m) / 2, (1 + m) / 2]
            intervals[m] = np.array([_quantile(om, m_om, q), _quantile(s8, m_s8, q)])
        flat_d, flat_p = density.ravel(), prob.ravel()
        order = np.argsort(flat_d)[::-1]
        cum = np.cumsum(flat_p[order])
        levels = {m: float(np.interp(m, cum, flat_d[order])) for m in MASSES}
        return cls(
            omega_m=om, sigma_8=s8, potential=U, log_post=log_post, log_density=log_density,
            density=density, prob=prob, marginals={"omega_m": m_om, "sigma_8": m_s8},
            mean=mean, std=std, cov=cov, intervals=intervals, levels=levels,
            evaluations=None if evaluations is None else int(evaluations), meta=dict(meta or {}),
        )

    @property
    def shape(self):
        return self.potential.shape

    @property
    def mode(self):
        """The grid node of highest posterior (Omega_m, sigma_8)."""
        i, j = np.unravel_index(np.argmax(self.log_post), self.shape)
        return np.array([self.omega_m[i], self.sigma_8[j]])

    def density_at(
        self,
        point,              # (Omega_m, sigma_8).
    ):
        """Posterior density at a point by bilinear interpolation (0 outside the grid)."""
        from scipy.interpolate import RegularGridInterpolator

        f = RegularGridInterpolator((self.omega_m, self.sigma_8), self.density, bounds_error=False, fill_value=0.0)
        return float(f(np.asarray(point, dtype=np.float64).reshape(1, 2))[0])

    def hpd_mass(
        self,
        point,              # (Omega_m, sigma_8), e.g. the truth.
    ):
        """Mass of the smallest highest-density region containing ``point`` (1 outside the
        grid): the point is inside the m-HPD region iff hpd_mass(point) <= m."""
        d = self.density_at(point)
        return float(self.prob[self.density >= d].sum()) if d > 0 else 1.0

    def summary(
        self,
        truth = None,       # Optional true (Omega_m, sigma_8): adds truth, z-scores, hpd_mass.
    ):
        """One tidy row (dict of floats): per parameter mean, std, mode and 68/95% interval
        bounds; the HPD levels; grid size and evaluations; with a truth its z-scores."""
        row = {}
        for k, name in enumerate(PARAMS):
            row[f"{name}_mean"] = float(self.mean[k])
            row[f"{name}_std"] = float(self.std[k])
            row[f"{name}_mode"] = float(self.mode[k])
            for m in MASSES:
                tag = round(100 * m)
                row[f"{name}_lo{tag}"] = float(self.intervals[m][k, 0])
                row[f"{name}_hi{tag}"] = float(self.intervals[m][k, 1])
        row["corr"] = float(self.cov[0, 1] / (self.std[0] * self.std[1]))
        for m in MASSES:
            row[f"level{round(100 * m)}"] = self.levels[m]
        row["n_omega_m"], row["n_sigma_8"] = int(self.shape[0]), int(self.shape[1])
        row["evaluations"] = -1 if self.evaluations is None else int(self.evaluations)
        if truth is not None:
            truth = np.asarray(truth, dtype=np.float64)
            for k, name in enumerate(PARAMS):
                row[f"{name}_truth"] = float(truth[k])
                row[f"{name}_z"] = float((self.mean[k] - truth[k]) / self.std[k])
            row["hpd_mass_truth"] = self.hpd_mass(truth)
        return row

    def to_hdf5(
        self,
        path,               # Output .h5 (written to a temporary name, then renamed).
        attrs = None,       # Extra attributes (field id, truth, estimator, ...); non-scalars as JSON.
    ):
        """Write the grid, U, the normalised log density and the marginals; the summary and
        ``attrs`` (and ``meta``) as attributes."""
        import h5py

        from .files import atomic_output

        with atomic_output(path) as tmp, h5py.File(tmp, "w") as f:
            f.create_dataset("omega_m", data=self.omega_m)
            f.create_dataset("sigma_8", data=self.sigma_8)
            f.create_dataset("potential", data=self.potential)
            f.create_dataset("log_density", data=self.log_density)
            f.create_dataset("marginal_omega_m", data=self.marginals["omega_m"])
            f.create_dataset("marginal_sigma_8", data=self.marginals["sigma_8"])
            extra = {**({"meta": self.meta} if self.meta else {}), **dict(attrs or {})}
            for k, v in {**self.summary(), **extra}.items():
                if isinstance(v, (dict, list, tuple)) or v is None or isinstance(v, np.ndarray):
                    v = json.dumps(np.asarray(v).tolist() if isinstance(v, np.ndarray) else v, default=_jsonable)
                f.attrs[k] = v

    @classmethod
    def from_hdf5(cls, path):
        """Rebuild from a file written by :meth:`to_hdf5` (returns the posterior, attrs)."""
        import h5py

        with h5py.File(path, "r") as f:
            attrs = dict(f.attrs)
            ev = int(attrs.get("evaluations", -1))
            post = cls.from_potential(f["omega_m"][:], f["sigma_8"][:], f["potential"][:], None if ev < 0 else ev)
        return post, attrs


def _jsonable(o):
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, np.generic):
        return o.item()
    raise TypeError(f"not JSON serialisable: {type(o)}")


def _evaluate(potential, theta):
    """U at theta (M, 2) and the network evaluations it cost (M if the callable does not count)."""
    before = getattr(potential, "evaluations", None)
    U = np.asarray(potential(theta), dtype=np.float64).reshape(-1)
    if U.size != len(theta):
        raise ValueError(f"potential returned {U.size} values for {len(theta)} points")
    after = getattr(potential, "evaluations", None)
    spent = after - before if isinstance(before, (int, np.integer)) and isinstance(after, (int, np.integer)) else len(theta)
    return U, int(spent)


def grid_posterior(
    potential,          # Potential, or any callable theta (M, 2) -> U (M,) in nats.
    omega_m_grid,       # Omega_m axis (n_om,), increasing.
    sigma_8_grid,       # sigma_8 axis (n_s8,), increasing.
    meta = None,        # Provenance stored in the result's meta.
):
    """Evaluate U on the grid (all points in one call: the potential batches them) and
    return the flat-prior :class:`GridPosterior` exp(-(U - min U)). ``evaluations`` is the
    potential's counter difference, or the number of points for a plain callable."""
    om = np.asarray(omega_m_grid, dtype=np.float64)
    s8 = np.asarray(sigma_8_grid, dtype=np.float64)
    theta = np.stack(np.meshgrid(om, s8, indexing="ij"), axis=-1).reshape(-1, 2)
    U, spent = _evaluate(potential, theta)
    return GridPosterior.from_potential(om, s8, U.reshape(om.size, s8.size), spent, meta)


def grid_around(
    truth,              # Centre (Omega_m, sigma_8).
    half_width = 0.1,   # Half width of the window in both parameters (or a pair), the authors' 0.1.
    n          = 100,   # Points per axis (or a pair), the authors' 100.
    prior      = PRIOR, # {"omega_m": (lo, hi), "sigma_8": (lo, hi)}: the window is clipped to it.
):
    """The authors' grid: (omega_m_grid, sigma_8_grid), each linspace over centre +- half_width
    clipped to the prior."""
    hw = np.broadcast_to(np.asarray(half_width, dtype=np.float64), (2,))
    nn = np.broadcast_to(np.asarray(n, dtype=np.int64), (2,))
    axes = []
    for k, name in enumerate(PARAMS):
        lo, hi = prior[name]
        a, b = max(lo, truth[k] - hw[k]), min(hi, truth[k] + hw[k])
        if not a < b:
            raise ValueError(f"window of {name} around {truth[k]} is empty inside the prior {prior[name]}")
        axes.append(np.linspace(a, b, int(nn[k])))
    return axes[0], axes[1]


def coarse_to_fine(
    potential,          # Potential, or any callable theta (M, 2) -> U (M,).
    n_coarse   = 11,    # Points per axis of the coarse grid over the whole prior.
    n_fine     = 21,    # Points per axis of each fine grid.
    n_sigma    = 5.0,   # Fine window: coarse mean +- n_sigma coarse std (per parameter).
    min_cells  = 1.5,   # ... but at least +- min_cells spacings of the previous grid (a posterior narrower than a coarse cell has a useless coarse std).
    max_refine = 2,     # Fine grids at most (each sized from the previous posterior).
    prior      = PRIOR, # {"omega_m": (lo, hi), "sigma_8": (lo, hi)}.
):
    """Coarse grid over the prior, then fine grids around the posterior until the window is
    stable. Each fine grid spans mean +- max(n_sigma std, min_cells spacing) of the previous
    posterior, clipped to the prior; refinement stops when the new window would be within
    a factor 1.5 of the current one (the current grid already resolves the posterior with
    margin) or after ``max_refine`` fine grids. Returns the last GridPosterior with
    ``evaluations`` the total over all stages and ``meta["stages"]`` each stage's grid
    window, points and evaluations."""
    axes = [np.linspace(*prior[name], int(n_coarse)) for name in PARAMS]
    post = grid_posterior(potential, axes[0], axes[1])
    stages = [_stage(post, "coarse")]
    total = post.evaluations
    for _ in range(int(max_refine)):
        window = _window(post, n_sigma, min_cells, prior)
        cur = [(post.omega_m[0], post.omega_m[-1]), (post.sigma_8[0], post.sigma_8[-1])]
        if len(stages) > 1 and all(_similar(w, c) for w, c in zip(window, cur)):
            break
        post = grid_posterior(potential, *(np.linspace(a, b, int(n_fine)) for a, b in window))
        total += post.evaluations
        stages.append(_stage(post, "fine"))
    post.evaluations = total
    post.meta.update(
        scan="coarse_to_fine", stages=stages, n_points=int(sum(s["points"] for s in stages)),
        n_coarse=int(n_coarse), n_fine=int(n_fine), n_sigma=float(n_sigma),
    )
    return post


def _stage(post, kind):
    return {
        "kind": kind,
        "omega_m": [float(post.omega_m[0]), float(post.omega_m[-1])],
        "sigma_8": [float(post.sigma_8[0]), float(post.sigma_8[-1])],
        "points": int(post.potential.size),
        "evaluations": int(post.evaluations),
    }


def _window(post, n_sigma, min_cells, prior):
    out = []
    for k, (name, ax) in enumerate(zip(PARAMS, (post.omega_m, post.sigma_8))):
        spacing = float(np.max(np.diff(ax)))
        h = max(n_sigma * post.std[k], min_cells * spacing)
        lo, hi = prior[name]
        c = float(np.clip(post.mean[k], lo, hi))
        out.append((max(lo, c - h), min(hi, c + h)))
    return out


def _similar(new, cur):
    wn, wc = new[1] - new[0], cur[1] - cur[0]
    shift = max(abs(new[0] - cur[0]), abs(new[1] - cur[1]))
    return wc / 1.5 <= wn <= wc * 1.5 and shift <= 0.25 * wc


def exact_lognormal_posterior(
    field_physical,     # Map(s) in (Msun/h)/(Mpc/h)^2: (N, N) or (n, N, N).
    omega_m_grid,       # Omega_m axis.
    sigma_8_grid,       # sigma_8 axis.
    box_size = BOX_SIZE,  # Side of the periodic box, Mpc/h.
):
    """The exact posterior of lognormal maps (flat prior) from
    :func:`cosmodiff.synthetic.lognormal_log_likelihood`: a GridPosterior, or a list of them
    for (n, N, N) (each spectrum is computed once for all maps)."""
    maps = np.asarray(field_physical, dtype=np.float64)
    single = maps.ndim == 2
    maps = maps[None] if single else maps
    om = np.asarray(omega_m_grid, dtype=np.float64)
    s8 = np.asarray(sigma_8_grid, dtype=np.float64)
    U = np.empty((maps.shape[0], om.size, s8.size))
    for i, a in enumerate(om):
        for j, b in enumerate(s8):
            U[:, i, j] = -lognormal_log_likelihood(maps, a, b, box_size=box_size)
    posts = [GridPosterior.from_potential(om, s8, u, 0, {"scan": "exact_lognormal"}) for u in U]
    return posts[0] if single else posts


def compare(
    post,               # GridPosterior to judge.
    ref,                # Reference GridPosterior (e.g. the exact one) on the same grid.
):
    """How far ``post`` is from ``ref``: per parameter the mean shift in units of ref's std
    (``shift_<p>``, signed) and the width ratio post.std / ref.std (``width_<p>``); and
    KL(ref || post) in nats on the grid (``kl``, NaN if the grids differ)."""
    out = {}
    for k, name in enumerate(PARAMS):
        out[f"shift_{name}"] = float((post.mean[k] - ref.mean[k]) / ref.std[k])
        out[f"width_{name}"] = float(post.std[k] / ref.std[k])
    same = post.shape == ref.shape and np.allclose(post.omega_m, ref.omega_m) and np.allclose(post.sigma_8, ref.sigma_8)
    if same:
        with np.errstate(invalid="ignore"):
            d = np.where(ref.prob > 0, ref.log_density - post.log_density, 0.0)
        out["kl"] = float((ref.prob * d).sum())
    else:
        out["kl"] = float("nan")
    return out


# --------------------------------------------------------------------------------------------
# the oracle check: the whole machinery against the exact posterior, no network
# --------------------------------------------------------------------------------------------

def oracle_check(
    field_log10,        # A prepared lognormal field: log10 surface density (N, N).
    diffusion,          # The GaussianDiffusion of the workflow (schedule, model variance).
    normalisation,      # (lo, hi) of the training maps, as the network would see the field.
    estimators,         # {label: Potential keywords (estimator, t_max, t_exact, n_strata, n_noise, noise_seed, ...)}: the Monte Carlo scans.
    native_resolution = None,  # Resolution the field was generated at (None: N).
    method   = "bicubic",      # Downsampling of prepare.
    n_grid   = 11,      # Points per axis of the common grid.
    n_coarse = 5,       # Points per axis of the coarse grid that finds the exact posterior.
):
    """Posteriors of one lognormal field on one grid with the network replaced by the exact
    denoiser (:class:`WienerOracle`): ``exact`` (lognormal_log10_likelihood), ``bound`` (the
    oracle's whole bound without noise, in closed form: what every estimator estimates), and
    one :class:`Potential` scan per entry of ``estimators`` (Monte Carlo with common random
    numbers, exactly as a network is scanned). The common grid is the last one of
    :func:`coarse_to_fine` on the exact posterior (its mean +- 5 sigma, within the prior):
    it resolves the reference wherever it lies, not only near the truth.

    Returns ({label: GridPosterior}, [row per label]) with ``method``, ``evaluations``
    (denoiser calls), ``seconds`` and :func:`compare` against ``exact``. A difference from
    ``exact`` can only come from the bound itself (``bound``: the decoder variance beta_0
    hides modes of x0 whose variance is below it) or from an estimator's noise and
    truncation: none from a network."""
    import time

    field = np.asarray(field_log10, dtype=np.float64)
    native = int(native_resolution or field.shape[-1])
    oracle = WienerOracle(diffusion, normalisation, native_resolution=native, method=method)
    x0 = normalise(field, oracle.normalisation)[None]

    def bound(theta):
        return np.array([oracle.expected_bound(x0, th, diffusion)[0] for th in theta])

    t0 = time.perf_counter()
    ref = coarse_to_fine(exact_log10_potential(field, native, method), n_coarse=n_coarse, n_fine=n_grid, max_refine=2)
    posts, rows = {"exact": ref}, [{"method": "exact", "evaluations": 0, "seconds": time.perf_counter() - t0,
                                    **compare(ref, ref)}]
    scans = {"bound": bound}
    for label, options in estimators.items():
        options = {"batch_size": 512, **options}
        scans[label] = Potential(oracle, diffusion, field, normalisation, dtype=torch.float64, **options)
    for label, fn in scans.items():
        t0 = time.perf_counter()
        posts[label] = post = grid_posterior(fn, ref.omega_m, ref.sigma_8)
        rows.append({
            "method": label,
            "evaluations": int(post.evaluations) if isinstance(fn, Potential) else 0,
            "seconds": time.perf_counter() - t0,
            **compare(post, ref),
        })
    return posts, rows


# --------------------------------------------------------------------------------------------
# calibration
# --------------------------------------------------------------------------------------------


def coverage(
    summaries,          # Per field: GridPosterior.summary() dicts, or GridPosterior objects.
    truths,             # True parameters (n, 2).
):
    """Empirical calibration over n fields: for each parameter the fraction of truths inside
    the 68% and 95% equal-tailed intervals (``<p>_coverage68/95``), the z-scores
    (mean - truth) / std (``<p>_z``, array) with their mean and rms; for GridPosterior inputs
    also the coverage of the 2D highest-density regions (``hpd_coverage68/95``). ``n`` and
    the binomial standard errors of a calibrated 68/95% coverage (``se68``, ``se95``) too."""
    truths = np.asarray(truths, dtype=np.float64).reshape(-1, 2)
    if len(summaries) != len(truths):
        raise ValueError(f"{len(summaries)} summaries for {len(truths)} truths")
    hpd = []
    rows = []
    for s, t in zip(summaries, truths):
        if isinstance(s, GridPosterior):
            hpd.append(s.hpd_mass(t))
            s = s.summary()
        elif "hpd_mass_truth" in s:
            hpd.append(float(s["hpd_mass_truth"]))
        rows.append(s)
    n = len(rows)
    out = {"n": n}
    for m in MASSES:
        out[f"se{round(100 * m)}"] = math.sqrt(m * (1 - m) / n) if n else float("nan")
    for k, name in enumerate(PARAMS):
        tr = truths[:, k]
        for m in MASSES:
            tag = round(100 * m)
            lo = np.array([r[f"{name}_lo{tag}"] for r in rows])
            hi = np.array([r[f"{name}_hi{tag}"] for r in rows])
            out[f"{name}_coverage{tag}"] = float(np.mean((lo <= tr) & (tr <= hi)))
        z = np.array([(r[f"{name}_mean"] - t) / r[f"{name}_std"] for r, t in zip(rows, tr)])
        out[f"{name}_z"] = z
        out[f"{name}_mean_z"] = float(z.mean())
        out[f"{name}_rms_z"] = float(np.sqrt((z**2).mean()))
    if len(hpd) == n and n:
        hpd = np.array(hpd)
        for m in MASSES:
            out[f"hpd_coverage{round(100 * m)}"] = float(np.mean(hpd <= m))
    return out


__all__ = [
    "ESTIMATORS",
    "MASSES",
    "GridPosterior",
    "Potential",
    "WienerOracle",
    "coarse_to_fine",
    "compare",
    "scan_field",
    "coverage",
    "exact_log10_potential",
    "exact_lognormal_posterior",
    "grid_around",
    "grid_posterior",
    "oracle_check",
    "potential_options",
    "strata_edges",
    "stratified_timesteps",
    "stratified_variance",
]
