"""The baselines comparison: the exact posterior, the diffusion grid scan, the cheap (local)
scan, NUTS on the bound and NPE on the same test fields, and the out-of-distribution sets.

:func:`comparison_table` turns per-field posterior summaries of each method into one row per
method (:func:`cosmodiff.inference.calibration.method_metrics`): median relative error of the
mean, median width, 68/95% coverage, mean |z|, distance to the exact posterior and cost.
:func:`ood_table` summarises the out-of-distribution rows per set: bias, coverage and how
often the misspecification check flags a field, for the diffusion posterior and NPE.
:func:`comparison_figure` and :func:`ood_figure` draw them.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .inference.calibration import method_metrics
from .inference.grid import PARAMS

#: Methods in table order, with their labels.
METHODS = {"exact": "exact likelihood", "grid": "diffusion, grid scan", "local": "diffusion, cheap scan",
           "mcmc": "diffusion, NUTS", "npe": "NPE on P(k) + PDF"}
LABELS = {"omega_m": r"$\Omega_m$", "sigma_8": r"$\sigma_8$"}


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


def comparison_figure(
    methods,            # As comparison_table.
    exact,              # As comparison_table.
):
    """Per parameter: each method's posterior mean minus the exact one, in exact sigmas,
    against its width over the exact width, one point per field."""
    import matplotlib.pyplot as plt

    ex = exact.set_index("field")
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2), constrained_layout=True)
    for ax, name in zip(axes, PARAMS):
        for k, (key, df) in enumerate(m for m in methods.items() if m[0] != "exact"):
            e = ex.loc[df["field"]]
            shift = (df[f"{name}_mean"].to_numpy() - e[f"{name}_mean"].to_numpy()) / e[f"{name}_std"].to_numpy()
            ratio = df[f"{name}_std"].to_numpy() / e[f"{name}_std"].to_numpy()
            ax.scatter(shift, ratio, s=16, alpha=0.7, color=f"C{k}", label=f"{METHODS.get(key, key)} ({len(df)})")
        ax.axvline(0, color="k", lw=0.8)
        ax.axhline(1, color="k", lw=0.8)
        ax.axvspan(-0.1, 0.1, color="0.9", zorder=0)
        ax.set_xlabel(f"(mean - exact mean) / exact sigma, {LABELS[name]}")
        ax.set_ylabel(f"sigma / exact sigma, {LABELS[name]}")
        ax.set_yscale("log")
    axes[0].legend(fontsize=8, loc="upper left")
    fig.suptitle("Posteriors of the same test fields against the exact posterior (grey: within 0.1 sigma)")
    return fig


def ood_figure(
    rows,               # DataFrame of rule out_of_distribution.
    threshold,          # |z| above which the check flags a field.
):
    """Left: the misspecification check's z per field, by set (the threshold dashed). Right:
    the diffusion posterior's and NPE's z of the truth for sigma_8, by set."""
    import matplotlib.pyplot as plt

    labels = [f"{s}" + (f" {n:g} dex" if n else "") for s, n in rows[["set", "noise"]].drop_duplicates().to_numpy()]
    keys = [tuple(k) for k in rows[["set", "noise"]].drop_duplicates().to_numpy()]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), constrained_layout=True)
    for y, key in enumerate(keys):
        g = rows[(rows["set"] == key[0]) & (rows["noise"] == key[1])]
        jitter = np.linspace(-0.15, 0.15, len(g))
        axes[0].scatter(np.abs(g["check_z"]).clip(lower=0.05), y + jitter, s=18,
                        c=np.where(g["flagged"].astype(bool), "C3", "C0"))
        for k, (prefix, who) in enumerate((("", "diffusion"), ("npe_", "NPE"))):
            z = (g[f"{prefix}sigma_8_mean"] - g["sigma_8_truth"]) / g[f"{prefix}sigma_8_std"]
            axes[1].scatter(z, y + jitter + (0.2 if k else -0.2), s=14, color=f"C{k}", label=who if y == 0 else None)
    axes[0].axvline(threshold, color="C3", ls="--", lw=1)
    axes[0].set_xscale("log")
    axes[0].set_xlabel("|z| of U per pixel at the mode (model check)")
    axes[1].axvspan(-2, 2, color="0.9", zorder=0)
    axes[1].set_xlabel(r"($\sigma_8$ mean - truth) / sigma")
    axes[1].legend(fontsize=8)
    for ax in axes:
        ax.set_yticks(range(len(keys)))
        ax.set_yticklabels(labels)
        ax.invert_yaxis()
    axes[1].set_yticklabels([])
    fig.suptitle("Fields the network never saw: flagged by the model check (red), and their posteriors")
    return fig


__all__ = ["METHODS", "comparison_figure", "comparison_table", "ood_figure", "ood_table"]
