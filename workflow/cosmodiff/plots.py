"""Every figure of the workflow, one function each: data in, matplotlib figure out.

:func:`save` writes a figure as PNG and as PDF beside it. Figures use a non-interactive
backend, so they render on machines without a screen.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .powerspec import power_spectrum  # noqa: E402
from .prepare import SPLITS  # noqa: E402

LABELS = {"omega_m": r"$\Omega_m$", "sigma_8": r"$\sigma_8$"}
MAP_CMAP = "magma"


def _style():
    import seaborn as sns

    sns.set_theme(context="paper", style="ticks", font_scale=1.1)


def save(fig, png_path, dpi=150):
    """Write ``fig`` to png_path and to the same name with .pdf; close it."""
    png_path = Path(png_path)
    png_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png_path, dpi=dpi, bbox_inches="tight")
    fig.savefig(png_path.with_suffix(".pdf"), bbox_inches="tight")
    plt.close(fig)


def _read_prepared(path):
    """All splits of a prepared file: (h5 maps datasets per split, params (n, 6), attrs)."""
    import h5py

    f = h5py.File(path, "r")
    params = np.concatenate([f[s]["params"][:] for s in SPLITS if s in f])
    offsets = np.cumsum([0] + [len(f[s]["params"]) for s in SPLITS if s in f])
    return f, params, offsets


def _read_maps(f, offsets, indices):
    """Maps at global indices (over the concatenated splits), in that order."""
    splits = [s for s in SPLITS if s in f]
    out = []
    for i in indices:
        j = int(np.searchsorted(offsets, i, side="right") - 1)
        out.append(f[splits[j]]["maps"][i - offsets[j]])
    return np.stack(out)


def data_gallery(path, columns=4):
    """Maps across the parameter range: top row by Omega_m, bottom row by sigma_8.

    path:    prepared HDF5 file (log10 maps).
    columns: maps per row; the simulations are the quantiles of each parameter, the map is
             the first of each simulation.
    """
    _style()
    f, params, offsets = _read_prepared(path)
    with f:
        n_sims = len(params) // 15
        sim_params = params[::15]
        rows = []
        for j in (0, 1):
            order = np.argsort(sim_params[:, j])
            picks = order[np.linspace(0, n_sims - 1, columns).round().astype(int)]
            rows.append(picks)
        maps = _read_maps(f, offsets, [s * 15 for row in rows for s in row])
        units = f.attrs.get("units", "log10 surface density")
    vmin, vmax = np.percentile(maps, [0.5, 99.9])
    fig, axes = plt.subplots(2, columns, figsize=(2.6 * columns + 0.8, 5.6), constrained_layout=True)
    k = 0
    for r, row in enumerate(rows):
        for c, s in enumerate(row):
            ax = axes[r, c]
            im = ax.imshow(maps[k], cmap=MAP_CMAP, vmin=vmin, vmax=vmax, origin="lower", extent=(0, 25, 0, 25))
            om, s8 = sim_params[s, :2]
            ax.set_title(rf"$\Omega_m$={om:.3f}  $\sigma_8$={s8:.3f}", fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
            k += 1
        axes[r, 0].set_ylabel(["increasing " + LABELS["omega_m"], "increasing " + LABELS["sigma_8"]][r])
    cb = fig.colorbar(im, ax=axes, shrink=0.8, pad=0.01)
    cb.set_label(units)
    fig.suptitle("Maps across the parameter range (25 Mpc/h box, 5 Mpc/h slabs)")
    return fig


def data_power_spectra(path, maps_per_sim=15, convention="paper", block=300):
    """P(k) of every simulation (mean over its maps), coloured by Omega_m and by sigma_8.

    path:         prepared HDF5 file (log10 maps at the native resolution).
    maps_per_sim: maps of each simulation averaged (1..15).
    convention:   power-spectrum binning, see :func:`cosmodiff.powerspec.power_spectrum`.
    block:        maps read at a time (memory).
    """
    _style()
    f, params, offsets = _read_prepared(path)
    with f:
        n_sims = len(params) // 15
        idx = (np.arange(n_sims)[:, None] * 15 + np.arange(maps_per_sim)[None, :]).ravel()
        pks = []
        for a in range(0, len(idx), block):
            maps = 10.0 ** _read_maps(f, offsets, idx[a : a + block]).astype(np.float64)
            k, p = power_spectrum(maps, box_size=float(f.attrs["box_size"]), convention=convention)
            pks.append(p)
    pk = np.concatenate(pks).reshape(n_sims, maps_per_sim, -1).mean(axis=1)
    sim_params = params[::15]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.4), sharey=True, constrained_layout=True)
    for ax, j, name, cmap in ((axes[0], 0, "omega_m", "viridis"), (axes[1], 1, "sigma_8", "plasma")):
        norm = matplotlib.colors.Normalize(*np.percentile(sim_params[:, j], [0, 100]))
        colours = matplotlib.colormaps[cmap](norm(sim_params[:, j]))
        for s in np.argsort(sim_params[:, j]):
            ax.loglog(k, pk[s], color=colours[s], lw=0.8, alpha=0.8)
        ax.set_xlabel(r"$k$ [$h$/Mpc]")
        cb = fig.colorbar(matplotlib.cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, pad=0.01)
        cb.set_label(LABELS[name])
        ax.set_title(f"coloured by {LABELS[name]}")
    axes[0].set_ylabel(r"$P(k)$ of $\Sigma/\bar\Sigma - 1$ [(Mpc/$h$)$^2$]")
    fig.suptitle(f"Power spectra of {n_sims} simulations (mean of {maps_per_sim} maps each)")
    return fig


def loss_curve(metrics_path, title="training"):
    """Training loss (and learning rate) against iteration from a metrics .jsonl file.

    The loss reaches its floor long before samples are good: judge progress by the
    validation chi-squared, not by this curve.
    """
    import json

    import pandas as pd

    _style()
    rows = [json.loads(line) for line in Path(metrics_path).read_text().splitlines() if line.strip()]
    df = pd.DataFrame(rows)
    fig, ax = plt.subplots(figsize=(6.5, 4), constrained_layout=True)
    ax.plot(df["iteration"], df["loss"], color="C0", lw=1, label="loss (mean over log interval)")
    if len(df) >= 10:
        ax.plot(df["iteration"], df["loss"].rolling(10, min_periods=1).mean(), color="C3", lw=1.5, label="rolling mean (10)")
    ax.set_yscale("log")
    ax.set_xlabel("iteration")
    ax.set_ylabel("training loss")
    ax2 = ax.twinx()
    ax2.plot(df["iteration"], df["lr"], color="0.5", ls="--", lw=1)
    ax2.set_ylabel("learning rate", color="0.5")
    ax.legend(loc="upper right", fontsize=8)
    speed = df["images_per_s"].median() if "images_per_s" in df else float("nan")
    ax.set_title(f"{title}: {int(df['iteration'].max())} iterations, median {speed:.1f} images/s")
    return fig
