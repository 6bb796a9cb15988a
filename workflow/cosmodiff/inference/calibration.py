"""Calibration of grid posteriors over many fields: :func:`coverage` of the intervals and
z-scores against the truths."""

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


__all__ = ["coverage"]
