"""Statistics that compare generated fields with simulations.

Reduced chi-squared of power spectra (Mudur et al. 2023, as in their code): for one parameter
point with n simulated maps, mean <P_sim>(k) and diagonal variance var_sim(k) (ddof = 1) over
those maps; a generated map's statistic is

    chi2_red = sum_k (P_gen(k) - <P_sim>(k))^2 / var_sim(k) / (N_k - 1)

and the reference is the same statistic for each simulated map against the other n - 1
(leave one out). For Gaussian, independent bins a map independent of the reference set has

    E[chi2_red] = N_k / (N_k - 1) * (1 + 1/m) (m - 1) / (m - 3)

with m the size of the reference set (the sample variance in the denominator makes it exceed
1): 1.276 for the leave-one-out reference at m = 14, N_k = 128 (the paper quotes 1.27) and
1.253 for a perfect emulator against m = 15 maps.

Past the power spectrum: the one-point PDF distance (Wasserstein-1 and Kolmogorov-Smirnov
between pixel distributions) and peak counts of the (log) field.
"""

from __future__ import annotations

import numpy as np


def _check_pk(name, pk):
    pk = np.asarray(pk, dtype=np.float64)
    if pk.ndim != 2:
        raise ValueError(f"{name} must be (maps, k bins), got shape {pk.shape}")
    return pk


def reduced_chi2(pk_gen, pk_sim):
    """Reduced chi-squared of each generated spectrum against a set of simulated spectra.

    pk_gen: (m, N_k) power spectra of generated maps.
    pk_sim: (n, N_k) power spectra of the simulated maps of the same parameter point, n >= 2.
    Returns (m,).
    """
    pk_gen, pk_sim = _check_pk("pk_gen", pk_gen), _check_pk("pk_sim", pk_sim)
    if pk_gen.shape[1] != pk_sim.shape[1]:
        raise ValueError(f"k bins differ: {pk_gen.shape[1]} generated vs {pk_sim.shape[1]} simulated")
    if len(pk_sim) < 2:
        raise ValueError("need at least 2 simulated maps for a variance")
    mean = pk_sim.mean(axis=0)
    var = pk_sim.var(axis=0, ddof=1)
    return ((pk_gen - mean) ** 2 / var).sum(axis=1) / (pk_sim.shape[1] - 1)


def loo_chi2(pk_sim):
    """Leave-one-out reference: each simulated spectrum against the other n - 1. (n,)."""
    pk_sim = _check_pk("pk_sim", pk_sim)
    n = len(pk_sim)
    if n < 4:
        raise ValueError("need at least 4 simulated maps for the leave-one-out reference")
    return np.array([reduced_chi2(pk_sim[i : i + 1], np.delete(pk_sim, i, axis=0))[0] for i in range(n)])


def expected_reduced_chi2(n_reference, n_bins):
    """E[chi2_red] for Gaussian independent bins, a map independent of ``n_reference`` maps."""
    m = n_reference
    if m <= 3:
        raise ValueError("the expectation is finite only for more than 3 reference maps")
    return n_bins / (n_bins - 1) * (1 + 1 / m) * (m - 1) / (m - 3)


def mean_density_zscore(log_gen, log_sim):
    """Mean log-density of generated maps against simulations, in units of their scatter.

    The chi-squared of P(k) of field/mean - 1 cannot see the mean density, which carries most
    of the Omega_m information; this statistic does.

    log_gen: (m, N, N) log10 maps generated; log_sim: (n, N, N) simulated maps.
    Returns (mean over generated maps of their pixel mean - mean over simulations) / (standard
    deviation of the simulations' pixel means).
    """
    g = np.asarray(log_gen, dtype=np.float64).reshape(len(log_gen), -1).mean(axis=1)
    s = np.asarray(log_sim, dtype=np.float64).reshape(len(log_sim), -1).mean(axis=1)
    return float((g.mean() - s.mean()) / s.std(ddof=1))


def pdf_distance(a, b):
    """One-point PDF distances between two sets of pixels: (Wasserstein-1, Kolmogorov-Smirnov).

    a, b: arrays of any shape (all pixels pooled), e.g. log10 maps.
    """
    a = np.sort(np.asarray(a, dtype=np.float64).ravel())
    b = np.sort(np.asarray(b, dtype=np.float64).ravel())
    grid = np.concatenate([a, b])
    grid.sort()
    ca = np.searchsorted(a, grid, side="right") / len(a)
    cb = np.searchsorted(b, grid, side="right") / len(b)
    w1 = float(np.sum(np.abs(ca - cb)[:-1] * np.diff(grid)))
    ks = float(np.abs(ca - cb).max())
    return w1, ks


def peak_counts(fields, thresholds):
    """Number of local maxima above each threshold, per field (periodic 8-neighbourhood).

    fields:     (..., N, N).
    thresholds: 1D array; returns (..., len(thresholds)) counts of peaks with height > t.
    """
    f = np.asarray(fields, dtype=np.float64)
    is_peak = np.ones(f.shape, dtype=bool)
    for dx in (-1, 0, 1):
        for dy in (-1, 0, 1):
            if dx or dy:
                is_peak &= f > np.roll(f, (dx, dy), axis=(-2, -1))
    thresholds = np.asarray(thresholds, dtype=np.float64)
    heights = np.where(is_peak, f, -np.inf)
    return (heights[..., None] > thresholds).sum(axis=(-3, -2))
