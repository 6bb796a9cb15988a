"""Which timesteps and how many noise draws an estimate of the bound uses.

The three estimators of U (``Potential(estimator=...)``, described in :mod:`cosmodiff.inference`)
differ only in the timesteps they evaluate, their weights and the noise draws per timestep;
this module holds those choices, with no torch, so that cost projections and settings can
use them without a network: the strata of the "full" estimator (:func:`strata_edges`,
:func:`stratified_timesteps`, :func:`stratified_variance`) and the noise draws per timestep
(:data:`FULL_DRAWS`, :func:`default_draws`, :func:`draws`).
"""

from __future__ import annotations

from itertools import pairwise

import numpy as np

ESTIMATORS = ("full", "truncated", "exact")
#: Default noise draws of the "full" estimator: {t_end: draws at t < t_end} (84 evaluations
#: for t < 20; see :mod:`cosmodiff.inference` for why the small t get most of them).
FULL_DRAWS = {1: 16, 4: 8, 10: 4, 20: 2}


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
# noise draws per timestep
# --------------------------------------------------------------------------------------------


def default_draws(
    n_noise,            # The n_noise setting: None, an int, or {t_end: draws}.
    estimator,          # The estimator it is for (one of ESTIMATORS).
):
    """The ``n_noise`` an estimator uses: as given, or for None :data:`FULL_DRAWS` for
    "full" and one draw per timestep otherwise."""
    if n_noise is None:
        return dict(FULL_DRAWS) if estimator == "full" else 1
    return n_noise


def draws(
    n_noise,            # An int for every t, or {t_end: draws} (draws at t < t_end for the smallest such t_end; 1 beyond the largest).
    t,                  # The timestep (an int).
):
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


__all__ = [
    "ESTIMATORS",
    "FULL_DRAWS",
    "default_draws",
    "draws",
    "strata_edges",
    "stratified_timesteps",
    "stratified_variance",
]
