"""Parameter inference with the diffusion model's variational bound as a likelihood.

Mudur, Cuesta-Lazaro & Finkbeiner (2023) turn a conditional DDPM into a likelihood: the
variational bound on -log p(x_0 | theta) is summed over timesteps and scanned over a grid of
(Omega_m, sigma_8) with the same noise at every grid point. This package is that machinery,
in the shape of ``sbi``: a *potential* U(theta | x_o), an estimate of minus the
log-likelihood in nats, that any grid scan or sampler can call on a batch of parameters.

One module per job:

* :mod:`~cosmodiff.inference.potential`: :class:`Potential`, U(theta) of one field for a
  network and its :class:`cosmodiff.diffusion.GaussianDiffusion`; three estimators (below),
  common random numbers, batched network calls, an ``evaluations`` counter. Every potential
  (also :func:`exact_log10_potential`, the exact likelihood of a lognormal field) is a
  :class:`BasePotential`: ``potential(theta) -> U`` and ``evaluations``.
* :mod:`~cosmodiff.inference.estimators`: which timesteps and noise draws each estimator
  uses (the strata of "full", :data:`FULL_DRAWS`); no torch.
* :mod:`~cosmodiff.inference.oracle`: :class:`WienerOracle`, the exact optimal noise
  predictor of the lognormal synthetic data (a Wiener filter in Fourier space), so that
  everything here can be tested against the exact likelihood without training a network;
  :func:`oracle_check` does that for one field.
* :mod:`~cosmodiff.inference.tabulated`: :class:`TabulatedOracle`, the Wiener oracle with its
  spectrum tabulated in (Omega_m, sigma_8) and interpolated by a cubic spline in torch: an
  exact denoiser differentiable in theta, so that gradient-based samplers can be tested.
* :mod:`~cosmodiff.inference.mcmc`: :func:`nuts` -> :class:`NUTSResult`, pyro's No-U-Turn
  sampler on exp(-U(theta)) under the box prior, through ``Potential.torch_call`` (U
  differentiable in theta through the network's cond); samples, moments, ESS, R-hat and
  network evaluations per effective sample. Needs pyro-ppl (the ``baselines`` extra).
* :mod:`~cosmodiff.inference.npe`: :class:`NPEBaseline`, the neural-posterior baseline (sbi's
  NPE, a normalising flow) on :func:`summaries` (P(k) of the log field and its pixel PDF),
  calibrated by sbi's SBC. Needs sbi (the ``baselines`` extra).
* :mod:`~cosmodiff.inference.checks`: :func:`misspecification`, whether the model describes a
  field at all: U per pixel at the posterior mode against fields the model draws there
  (``python -m cosmodiff infer`` warns on a flagged field).
* :mod:`~cosmodiff.inference.shifted`: :func:`generated_fields` and :func:`with_white_noise`,
  the out-of-distribution fields (N-body maps, lognormal maps outside the training box, added
  white noise), prepared as the training maps are.
* :mod:`~cosmodiff.inference.grid`: :func:`grid_posterior` -> :class:`GridPosterior`
  (normalised posterior, marginals, means, stds, equal-tailed intervals, 2D highest-density
  levels, HDF5 output); :func:`grid_around` (the authors' +-0.1 window clipped to the prior),
  :func:`coarse_to_fine` (the whole prior coarsely, then a fine grid sized from the coarse
  posterior), :func:`local_scan` (the cheap posterior: a cheap coarse grid, then a few
  well-estimated points splined), :func:`scan_field` (one field as the workflow scans it),
  :func:`exact_lognormal_posterior` (the reference) and :func:`compare`.
* :mod:`~cosmodiff.inference.calibration`: :func:`coverage` of the intervals and z-scores
  over many fields.
* :mod:`~cosmodiff.inference.settings`: :class:`InferenceSettings`, the config section
  ``inference`` validated once, which hands out each call's keywords; no torch.

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

import importlib

# torch-free: the rules read the settings while Snakemake parses the workflow
from .estimators import ESTIMATORS, FULL_DRAWS, strata_edges, stratified_timesteps, stratified_variance
from .settings import SCANS, InferenceSettings

#: The other public names, by submodule: imported on first use, so that importing the
#: settings (or a torch-free submodule such as grid or calibration) does not import torch.
_LAZY = {
    "potential": ("BasePotential", "ExactLog10Potential", "Potential", "exact_log10_potential"),
    "grid": ("MASSES", "PARAMS", "GridPosterior", "coarse_to_fine", "compare", "exact_lognormal_posterior",
             "grid_around", "grid_posterior", "local_scan", "scan_field", "splined"),
    "oracle": ("OracleBoundPotential", "WienerOracle", "oracle_check"),
    "calibration": ("coverage", "method_metrics"),
    "tabulated": ("TabulatedOracle",),
    "mcmc": ("NUTSResult", "nuts"),
    "npe": ("NPEBaseline",),
    "checks": ("MisspecificationCheck", "check_posterior", "misspecification"),
    "shifted": ("generated_fields", "with_white_noise"),
}
_WHERE = {name: module for module, names in _LAZY.items() for name in names}


def __getattr__(name):
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_WHERE))


__all__ = [
    "ESTIMATORS",
    "FULL_DRAWS",
    "SCANS",
    "InferenceSettings",
    "strata_edges",
    "stratified_timesteps",
    "stratified_variance",
    *_WHERE,
]
