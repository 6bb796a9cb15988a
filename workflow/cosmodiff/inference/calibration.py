"""Calibration of posteriors over many fields: :func:`coverage` of the intervals and
z-scores against the truths; the baselines comparison: :func:`method_metrics` (one method's
row, against the truths and the exact posteriors), :func:`comparison_table` (the exact
posterior, the grid scan, the cheap scan, NUTS and NPE on the same fields),
:func:`chain_agreement` (NUTS against the grid posterior of the same U) and
:func:`ood_table` (the out-of-distribution sets: bias, coverage, how often the model check
flags a field)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from .grid import MASSES, PARAMS, GridPosterior

#: Methods of the comparison in table order, with their labels.
METHODS = {"exact": "exact likelihood", "grid": "diffusion, grid scan", "local": "diffusion, cheap scan",
           "mcmc": "diffusion, NUTS", "npe": "NPE on P(k) + PDF"}


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
    truths = np.array([[r[f"{name}_truth"] for name in PARAMS] for r in rows], dtype=np.float64)
    cov = coverage(rows, truths)
    for k, name in enumerate(PARAMS):
        mean = np.array([r[f"{name}_mean"] for r in rows], dtype=np.float64)
        std = np.array([r[f"{name}_std"] for r in rows], dtype=np.float64)
        out[f"{name}_rel_error"] = float(np.median(np.abs(mean - truths[:, k]) / truths[:, k]))
        out[f"{name}_width"] = float(np.median(std))
        for tag in (68, 95):
            out[f"{name}_coverage{tag}"] = cov[f"{name}_coverage{tag}"]
        out[f"{name}_mean_abs_z"] = float(np.mean(np.abs(cov[f"{name}_z"])))
        if exact is not None:
            ex_mean = np.array([e[f"{name}_mean"] for e in exact], dtype=np.float64)
            ex_std = np.array([e[f"{name}_std"] for e in exact], dtype=np.float64)
            out[f"{name}_shift"] = float(np.median(np.abs(mean - ex_mean) / ex_std))
            out[f"{name}_width_ratio"] = float(np.median(std / ex_std))
    out["evaluations"] = float(np.median(cost)) if cost is not None else float("nan")
    out["seconds"] = float(np.median(seconds)) if seconds is not None else float("nan")
    return out


def _rows(df):
    return df.to_dict("records")


def comparison_table(
    methods,            # {method: DataFrame of per-field summaries (<p>_mean, _std, _lo68, ..., _truth, field; evaluations, seconds if known)}.
    exact,              # DataFrame of the exact posteriors' summaries of the same fields (column field).
):
    """One row per method (index: its label): the columns of ``method_metrics``, each method
    against the exact posterior of the same fields (those it has)."""
    ex = exact.set_index("field")
    out = {}
    for key, df in methods.items():
        df = df.sort_values("field")
        ref = _rows(ex.loc[df["field"]].reset_index()) if key != "exact" else None
        cost = df["evaluations"].to_numpy() if "evaluations" in df else None
        seconds = df["seconds"].to_numpy() if "seconds" in df else None
        out[METHODS.get(key, key)] = method_metrics(_rows(df), ref, cost, seconds)
    return pd.DataFrame(out).T


def chain_agreement(
    rows,               # DataFrame of rule posterior_mcmc's summaries: <p>_mean, _std, _ess, _r_hat, same_u_grid_<p>_mean, _std, divergences.
):
    """Does each chain sample its U? Per parameter p, against the grid posterior of the same
    U: ``same_u_<p>_mcse`` (median |chain mean - grid mean| in Monte Carlo standard errors,
    chain std / sqrt(ESS); 0.674 for a correct sampler), ``same_u_<p>_within2`` (fraction of
    fields within 2 of them; 0.95), ``same_u_<p>_width`` (median chain std / grid std), and
    ``<p>_ess_min``; over both ``r_hat_max`` and ``divergences`` (total). The grid's own
    error is left out, so a correct sampler reads slightly worse than its ideal."""
    if len(rows) == 0:
        raise ValueError("no chains to check")
    out = {}
    for name in PARAMS:
        mcse = rows[f"{name}_std"] / np.sqrt(rows[f"{name}_ess"])
        dev = (rows[f"{name}_mean"] - rows[f"same_u_grid_{name}_mean"]).abs() / mcse
        out[f"same_u_{name}_mcse"] = float(dev.median())
        out[f"same_u_{name}_within2"] = float((dev <= 2).mean())
        out[f"same_u_{name}_width"] = float((rows[f"{name}_std"] / rows[f"same_u_grid_{name}_std"]).median())
        out[f"{name}_ess_min"] = float(rows[f"{name}_ess"].min())
    out["r_hat_max"] = float(rows[[f"{name}_r_hat" for name in PARAMS]].to_numpy().max())
    out["divergences"] = int(rows["divergences"].sum())
    return out


def ood_table(
    rows,               # DataFrame of rule out_of_distribution: set, noise, <p>_mean/_std/_lo95/_hi95/_truth, npe_*, check_z, flagged.
):
    """Per set (and noise level): fields, median check z, fraction flagged, and for the
    diffusion posterior and NPE the mean z of the truth, the 95% coverage and (where the
    exact posterior of the clean field is known) the median |shift| from it in its sigmas."""
    out = []
    for (kind, level), g in rows.groupby(["set", "noise"], sort=False):
        row = {"set": kind, "noise_dex": level, "n": len(g), "check_z": float(g["check_z"].median()),
               "flagged": float(g["flagged"].astype(bool).mean())}
        for who, prefix in (("diffusion", ""), ("npe", "npe_")):
            for name in PARAMS:
                z = (g[f"{prefix}{name}_mean"] - g[f"{name}_truth"]) / g[f"{prefix}{name}_std"]
                inside = (g[f"{prefix}{name}_lo95"] <= g[f"{name}_truth"]) & (g[f"{name}_truth"] <= g[f"{prefix}{name}_hi95"])
                row[f"{who}_{name}_mean_z"] = float(z.mean())
                row[f"{who}_{name}_coverage95"] = float(inside.mean())
                if f"exact_{name}_mean" in g and g[f"exact_{name}_mean"].notna().all():
                    shift = (g[f"{prefix}{name}_mean"] - g[f"exact_{name}_mean"]) / g[f"exact_{name}_std"]
                    row[f"{who}_{name}_shift"] = float(shift.abs().median())
        out.append(row)
    return pd.DataFrame(out)


__all__ = ["METHODS", "chain_agreement", "comparison_table", "coverage", "method_metrics", "ood_table"]
