"""Calibration of posteriors over many fields: :func:`coverage` of the intervals and
z-scores against the truths, and :func:`method_metrics`, one method's row of the baselines
comparison (against the truths and against the exact posteriors)."""

from __future__ import annotations

import math

import numpy as np

from .grid import MASSES, PARAMS, GridPosterior


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


def method_metrics(
    rows,               # Per field: dicts with <p>_mean, <p>_std, <p>_lo68/hi68/lo95/hi95 and <p>_truth (any posterior's summary).
    exact = None,       # Per field (same order): the exact posterior's summary (<p>_mean, <p>_std), or None.
    cost  = None,       # Per field: network evaluations (or None: not reported).
    seconds = None,     # Per field: wall-clock seconds.
):
    """One method's row of the comparison, per parameter p: ``<p>_rel_error`` (median
    |mean - truth| / truth), ``<p>_width`` (median posterior std), ``<p>_coverage68/95``
    (truth inside the central intervals), ``<p>_mean_abs_z``; with ``exact`` also
    ``<p>_shift`` (median |mean - exact mean| / exact std) and ``<p>_width_ratio`` (median
    std / exact std); ``evaluations`` and ``seconds`` per field (medians), and ``n`` fields."""
    if not rows:
        raise ValueError("no fields to summarise")
    if exact is not None and len(exact) != len(rows):
        raise ValueError(f"{len(exact)} exact posteriors for {len(rows)} fields")
    out = {"n": len(rows)}
    for name in PARAMS:
        mean = np.array([r[f"{name}_mean"] for r in rows], dtype=np.float64)
        std = np.array([r[f"{name}_std"] for r in rows], dtype=np.float64)
        truth = np.array([r[f"{name}_truth"] for r in rows], dtype=np.float64)
        out[f"{name}_rel_error"] = float(np.median(np.abs(mean - truth) / truth))
        out[f"{name}_width"] = float(np.median(std))
        for tag in (68, 95):
            lo = np.array([r[f"{name}_lo{tag}"] for r in rows], dtype=np.float64)
            hi = np.array([r[f"{name}_hi{tag}"] for r in rows], dtype=np.float64)
            out[f"{name}_coverage{tag}"] = float(np.mean((lo <= truth) & (truth <= hi)))
        out[f"{name}_mean_abs_z"] = float(np.mean(np.abs(mean - truth) / std))
        if exact is not None:
            ex_mean = np.array([e[f"{name}_mean"] for e in exact], dtype=np.float64)
            ex_std = np.array([e[f"{name}_std"] for e in exact], dtype=np.float64)
            out[f"{name}_shift"] = float(np.median(np.abs(mean - ex_mean) / ex_std))
            out[f"{name}_width_ratio"] = float(np.median(std / ex_std))
    out["evaluations"] = float(np.median(cost)) if cost is not None else float("nan")
    out["seconds"] = float(np.median(seconds)) if seconds is not None else float("nan")
    return out


__all__ = ["coverage", "method_metrics"]
