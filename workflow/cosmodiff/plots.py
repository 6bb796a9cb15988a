"""Every figure of the workflow, one function each: data in, matplotlib figure out.

:func:`save` writes a figure as PNG and as PDF beside it. Figures use a non-interactive
backend, so they render on machines without a screen.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402

from .inference.calibration import METHODS  # noqa: E402
from .inference.grid import PARAMS  # noqa: E402
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


def data_figures(path, section):
    """(gallery, power spectra) figures of a prepared file with the config section
    ``figures`` (gallery_columns, pk_maps_per_sim)."""
    return data_gallery(path, columns=section["gallery_columns"]), data_power_spectra(path, maps_per_sim=section["pk_maps_per_sim"])


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


#: The two validation spectra: (column prefix in the validation tables, panel title).
_CHI2_PANELS = (("chi2", r"$P(k)$ of $\Sigma/\bar\Sigma - 1$ (paper)"), ("chi2_log", r"$P(k)$ of $\log_{10}\Sigma$"))


def chi2_vs_iteration(summary, tables, title="checkpoints", selected=None):
    """Mean reduced chi-squared of samples per checkpoint, for P(k) of field / mean - 1 (the
    paper's) and of the log10 field, with the simulations' leave-one-out reference as a band
    (range over validation points) and the selected checkpoint marked.

    summary:  DataFrame of :func:`cosmodiff.validation.select`.
    tables:   mapping checkpoint -> (iteration, per-point DataFrame).
    selected: iteration of the selected checkpoint (default: the lowest paper chi-squared).
    """
    _style()
    if selected is None:
        selected = int(summary.loc[summary["chi2_samples"].idxmin(), "iteration"])
    best = summary.loc[summary["iteration"] == selected].iloc[0]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), constrained_layout=True, sharex=True)
    for ax, (name, label) in zip(axes, _CHI2_PANELS):
        col = f"{name}_samples"
        for _, (it, df) in tables.items():
            ax.scatter(np.full(len(df), it), df[col], s=10, color="C0", alpha=0.4, lw=0)
        ax.plot(summary["iteration"], summary[col], "o-", color="C0", label="samples (mean over points)")
        ref = next(iter(tables.values()))[1][f"{name}_sims"]
        ax.axhspan(ref.min(), ref.max(), color="0.8", alpha=0.6, label="simulations, leave-one-out (range)")
        ax.axhline(ref.mean(), color="0.4", lw=1)
        ax.scatter([best["iteration"]], [best[col]], s=120, facecolor="none", edgecolor="C3", lw=2, label="selected", zorder=5)
        ax.set_yscale("log")
        ax.set_xlabel("iteration")
        ax.set_ylabel(r"reduced $\chi^2$")
        ax.set_title(label, fontsize=10)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"{title}: validation chi-squared per checkpoint (selected: iteration {selected})")
    return fig


def _pk(log_maps):
    from .validation import log_power

    return log_power(log_maps)


def emulation_maps(gen_log, sim_log, params, n_show=3):
    """Generated next to simulated maps at several parameter points (rows), shared colours.

    gen_log, sim_log: lists of (n, N, N) log10 maps per point; params: (n_points, 2).
    """
    _style()
    rows = len(gen_log)
    fig, axes = plt.subplots(rows, 2 * n_show, figsize=(2.1 * 2 * n_show, 2.2 * rows + 0.6), constrained_layout=True, squeeze=False)
    vmin, vmax = np.percentile(np.concatenate([np.ravel(s) for s in sim_log]), [0.5, 99.9])
    for r in range(rows):
        for c in range(n_show):
            for j, (src, name) in enumerate(((sim_log, "simulated"), (gen_log, "generated"))):
                ax = axes[r, 2 * c + j]
                im = ax.imshow(src[r][c % len(src[r])], cmap=MAP_CMAP, vmin=vmin, vmax=vmax, origin="lower")
                ax.set_xticks([])
                ax.set_yticks([])
                if r == 0:
                    ax.set_title(name, fontsize=9, color="k" if j == 0 else "C3")
        axes[r, 0].set_ylabel(rf"$\Omega_m$={params[r][0]:.3f}" + "\n" + rf"$\sigma_8$={params[r][1]:.3f}", fontsize=9)
    fig.colorbar(im, ax=axes, shrink=0.7, pad=0.01).set_label("log10 surface density")
    fig.suptitle("Simulated (black titles) and generated (red titles) maps")
    return fig


def emulation_power(gen_log, sim_log, params, chi2=None):
    """P(k) of generated and simulated maps per point (mean and map-to-map scatter), of
    Sigma / mean - 1 (the paper's, top) and of the log10 field minus its mean (bottom).

    gen_log, sim_log: lists of (n, N, N) log10 maps per point; params: (n_points, 2);
    chi2: optional per-point rows (chi2 of samples, chi2 of simulations, and optionally the
    same two for the log field) for the titles.
    Under each spectrum, z(k) = (<P_gen> - <P_sim>) / sigma_sim(k): the offset of the
    generated mean in units of the simulations' map-to-map scatter.
    """
    from .validation import log_field_power

    _style()
    n = len(gen_log)
    fig, axes = plt.subplots(4, n, figsize=(3.4 * n, 9.6), sharex=True, constrained_layout=True, squeeze=False,
                             gridspec_kw={"height_ratios": [2.2, 1, 2.2, 1]})
    spectra = ((_pk, r"$P(k)$ of $\Sigma/\bar\Sigma - 1$ [(Mpc/$h$)$^2$]"),
               (log_field_power, r"$P(k)$ of $\log_{10}\Sigma$ [dex$^2$ (Mpc/$h$)$^2$]"))
    for i in range(n):
        for row, (spectrum, ylabel) in enumerate(spectra):
            k, ps = spectrum(sim_log[i])
            _, pg = spectrum(gen_log[i])
            ax, az = axes[2 * row, i], axes[2 * row + 1, i]
            for p, colour, label in ((ps, "k", "simulated"), (pg, "C3", "generated")):
                lo, hi = np.percentile(p, [16, 84], axis=0)  # mean - std crosses zero for skewed P
                ax.fill_between(k, lo, hi, color=colour, alpha=0.2, lw=0)
                ax.loglog(k, p.mean(0), color=colour, lw=1.5, label=f"{label} ({len(p)})")
            z = (pg.mean(0) - ps.mean(0)) / ps.std(0, ddof=1)
            az.axhspan(-1, 1, color="0.85")
            az.plot(k, z, color="C3", lw=1)
            az.axhline(0, color="k", lw=0.8)
            az.set_xscale("log")
            if chi2 is not None and len(chi2[i]) >= 2 * row + 2:
                ax.text(0.03, 0.04, rf"$\chi^2_{{red}}$ gen {chi2[i][2 * row]:.3g}, sims {chi2[i][2 * row + 1]:.3g}",
                        transform=ax.transAxes, fontsize=8)
            if i == 0:
                ax.set_ylabel(ylabel, fontsize=8)
                az.set_ylabel(r"$z(k)$ [$\sigma_{sim}$]", fontsize=8)
        axes[-1, i].set_xlabel(r"$k$ [$h$/Mpc]")
        axes[-1, i].xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        axes[0, i].set_title(rf"$\Omega_m$={params[i][0]:.3f} $\sigma_8$={params[i][1]:.3f}", fontsize=9)
    axes[0, 0].legend(fontsize=8)
    return fig


def emulation_pdf(gen_log, sim_log, params):
    """Pixel histograms of log10 surface density, generated vs simulated, per point."""
    from .stats import pdf_distance

    _style()
    n = len(gen_log)
    fig, axes = plt.subplots(1, n, figsize=(3.4 * n, 3.4), sharey=True, constrained_layout=True, squeeze=False)
    for i in range(n):
        ax = axes[0, i]
        lo, hi = np.percentile(np.ravel(sim_log[i]), [0.01, 99.99])
        bins = np.linspace(lo - 0.3, hi + 0.3, 60)
        ax.hist(np.ravel(sim_log[i]), bins, density=True, histtype="stepfilled", color="0.6", alpha=0.6, label="simulated")
        ax.hist(np.ravel(gen_log[i]), bins, density=True, histtype="step", color="C3", lw=1.5, label="generated")
        w1, ks = pdf_distance(gen_log[i], sim_log[i])
        ax.set_yscale("log")
        ax.set_xlabel("log10 surface density")
        ax.set_title(rf"$\Omega_m$={params[i][0]:.2f} $\sigma_8$={params[i][1]:.2f}" + f"\nW1 {w1:.3f} dex, KS {ks:.3f}", fontsize=9)
    axes[0, 0].set_ylabel("pixel PDF")
    axes[0, 0].legend(fontsize=8)
    return fig


def emulation_response(gen_log, sim_log, params):
    """Response of ln P(k) to each parameter, generated vs simulated.

    A linear regression of ln P(k) on (Omega_m, sigma_8) across the points, bin by bin, once
    for the simulated and once for the generated maps: d ln P / d Omega_m and d ln P / d
    sigma_8 with their standard errors. Needs at least 3 points.
    """
    _style()
    k, _ = _pk(sim_log[0][:1])

    def regress(sets):
        X, Y = [], []
        for (om, s8), maps in zip(params, sets):
            _, p = _pk(maps)
            for row in np.log(p):
                X.append([1.0, om, s8])
                Y.append(row)
        X, Y = np.array(X), np.array(Y)
        beta, *_ = np.linalg.lstsq(X, Y, rcond=None)
        resid = Y - X @ beta
        cov = np.linalg.inv(X.T @ X)
        s2 = (resid**2).sum(0) / max(len(X) - 3, 1)
        se = np.sqrt(np.outer(np.diag(cov), s2))
        return beta, se

    bs, ss = regress(sim_log)
    bg, sg = regress(gen_log)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), constrained_layout=True)
    for ax, j, name in ((axes[0], 1, "omega_m"), (axes[1], 2, "sigma_8")):
        for b, s, colour, label in ((bs, ss, "k", "simulated"), (bg, sg, "C3", "generated")):
            ax.fill_between(k, b[j] - s[j], b[j] + s[j], color=colour, alpha=0.2, lw=0)
            ax.plot(k, b[j], color=colour, lw=1.5, label=label)
        ax.set_xscale("log")
        ax.axhline(0, color="0.5", lw=0.8)
        ax.set_xlabel(r"$k$ [$h$/Mpc]")
        ax.set_ylabel(rf"$\partial \ln P / \partial${LABELS[name]}")
        ax.set_title(f"response to {LABELS[name]} ({len(params)} points, linear fit)")
    axes[0].legend(fontsize=8)
    return fig


def emulation_peaks(gen_log, sim_log, params, n_thresholds=12):
    """Peak counts of the log-density maps above thresholds, generated vs simulated: a
    statistic past the power spectrum that the paper did not show."""
    from .stats import peak_counts

    _style()
    n = len(gen_log)
    fig, axes = plt.subplots(1, n, figsize=(3.4 * n, 3.4), sharey=True, constrained_layout=True, squeeze=False)
    for i in range(n):
        lo, hi = np.percentile(np.ravel(sim_log[i]), [50, 99.9])
        th = np.linspace(lo, hi, n_thresholds)
        ax = axes[0, i]
        for maps, colour, label in ((sim_log[i], "k", "simulated"), (gen_log[i], "C3", "generated")):
            c = peak_counts(maps, th).astype(float)
            m, s = c.mean(0), c.std(0, ddof=1) if len(c) > 1 else np.zeros(len(th))
            ax.fill_between(th, m - s, m + s, color=colour, alpha=0.2, lw=0)
            ax.plot(th, m, color=colour, lw=1.5, label=label)
        ax.set_yscale("symlog", linthresh=1)
        ax.set_xlabel("threshold (log10 surface density)")
        ax.set_title(rf"$\Omega_m$={params[i][0]:.2f} $\sigma_8$={params[i][1]:.2f}", fontsize=9)
    axes[0, 0].set_ylabel("peaks per map above threshold")
    axes[0, 0].legend(fontsize=8)
    return fig


def sampler_cost(df, title=""):
    """Mean reduced chi-squared against network evaluations per map, per sampler, for P(k) of
    field / mean - 1 (the paper's) and of the log10 field; the simulations' leave-one-out
    values as reference lines."""
    _style()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True, sharex=True)
    if "spacing" not in df:
        df = df.assign(spacing="linear")
    for ax, (name, label) in zip(axes, _CHI2_PANELS):
        col = f"{name}_samples"
        for (sampler, grid), d in df.groupby(["sampler", "spacing"], sort=False):
            if sampler != "ancestral":
                d = d.sort_values("evaluations")
                ax.plot(d["evaluations"], d[col], "o-" if sampler == "dpm2m" else "s--", label=f"{sampler}, {grid} grid")
        a = df[df["sampler"] == "ancestral"]
        if len(a):
            ax.scatter(a["evaluations"], a[col], marker="s", s=60, color="C3", label="ancestral (DDPM)", zorder=5)
        ax.axhline(df[f"{name}_sims"].mean(), color="0.4", ls="--", label="simulations (leave-one-out)")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("network evaluations per map")
        ax.set_ylabel(r"mean reduced $\chi^2$")
        ax.set_title(label, fontsize=10)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"Sampler cost vs fidelity {title}".strip())
    return fig


def _caveat(fig, text):
    fig.text(0.5, -0.02, text, ha="center", va="top", fontsize=8, color="0.3", wrap=True)


UNDERTRAINED = ("A network trained for minutes on a CPU gives over-confident posteriors: these figures show the "
                "machinery, not results. Credible network posteriors need the GPU-sized training (config/paper.yaml).")


def _hpd_levels(post):
    """Density levels of a GridPosterior's 95% and 68% highest-density regions, increasing."""
    return sorted(post.levels[m] for m in (0.95, 0.68))


def posterior_contours(posts, truths, exacts=None):
    """68/95% highest-density contours of each field's posterior (red), the exact posterior
    (black, where known) and the truth (star)."""
    _style()
    n = len(posts)
    cols = min(n, 3)
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 3.3 * rows), constrained_layout=True, squeeze=False)
    for i, ax in enumerate(axes.flat):
        if i >= n:
            ax.axis("off")
            continue
        for post, colour, label in [(posts[i], "C3", "diffusion")] + ([(exacts[i], "k", "exact")] if exacts else []):
            ax.contour(post.omega_m, post.sigma_8, post.density.T, levels=_hpd_levels(post) + [post.density.max() * 1.01],
                       colors=colour, linewidths=[1.0, 1.8, 0])
            ax.plot([], [], color=colour, label=label)
        ax.plot(*truths[i], marker="*", ms=12, color="gold", mec="k", label="truth")
        ax.set_xlabel(LABELS["omega_m"])
        ax.set_ylabel(LABELS["sigma_8"])
        ax.set_title(f"field {i}", fontsize=9)
    axes.flat[0].legend(fontsize=7)
    fig.suptitle("Posteriors from the variational bound (68% and 95% regions)")
    _caveat(fig, UNDERTRAINED)
    return fig


def calibration(df, cov):
    """Predicted vs true with 1-sigma error bars per parameter, the z-score distribution, and
    the empirical coverage of the 68% / 95% intervals with binomial errors."""
    _style()
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.9), constrained_layout=True)
    for ax, name in zip(axes[:2], ("omega_m", "sigma_8")):
        t, m, s = df[f"{name}_truth"], df[f"{name}_mean"], df[f"{name}_std"]
        ax.errorbar(t, m, yerr=s, fmt="o", ms=3, color="C3", ecolor="C3", alpha=0.8, label="diffusion")
        if f"exact_{name}_mean" in df:
            ax.errorbar(t, df[f"exact_{name}_mean"], yerr=df[f"exact_{name}_std"], fmt="s", ms=3, color="k",
                        alpha=0.5, label="exact")
        lim = [min(t.min(), m.min()), max(t.max(), m.max())]
        ax.plot(lim, lim, color="0.5", lw=1)
        ax.set_xlabel(f"true {LABELS[name]}")
        ax.set_ylabel(f"posterior mean {LABELS[name]}")
        ax.legend(fontsize=7)
    z = np.concatenate([cov["omega_m_z"], cov["sigma_8_z"]])
    axes[2].hist([np.clip(cov["omega_m_z"], -10, 10), np.clip(cov["sigma_8_z"], -10, 10)], bins=np.linspace(-10, 10, 41),
                 label=[LABELS["omega_m"], LABELS["sigma_8"]], stacked=True, density=True)
    xs = np.linspace(-10, 10, 400)
    axes[2].plot(xs, np.exp(-xs**2 / 2) / np.sqrt(2 * np.pi), color="k", lw=1, label="N(0, 1)")
    axes[2].set_xlabel("z = (mean - truth) / std (clipped at 10)")
    axes[2].set_title(f"mean |z| = {np.abs(z).mean():.2f} (calibrated: 0.80)", fontsize=9)
    axes[2].legend(fontsize=7)
    x = np.arange(2)
    for j, (m, tag) in enumerate(((0.68, 68), (0.95, 95))):
        vals = [cov[f"omega_m_coverage{tag}"], cov[f"sigma_8_coverage{tag}"]]
        axes[3].bar(x + 0.38 * j, vals, width=0.36, yerr=cov[f"se{tag}"], capsize=3, label=f"{tag}% interval")
        axes[3].axhline(m, color=f"C{j}", ls="--", lw=1)
    axes[3].set_xticks(x + 0.19, [LABELS["omega_m"], LABELS["sigma_8"]])
    axes[3].set_ylim(0, 1.05)
    axes[3].set_ylabel("empirical coverage")
    axes[3].legend(fontsize=7)
    fig.suptitle(f"Calibration over {cov['n']} test fields")
    _caveat(fig, UNDERTRAINED)
    return fig


def exact_comparison(df):
    """Per field, the diffusion posterior against the exact one (lognormal data): mean shift
    in units of the exact standard deviation, and width ratio."""
    _style()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), constrained_layout=True)
    for k, name in enumerate(("omega_m", "sigma_8")):
        axes[0].plot(df["field"], df[f"vs_exact_shift_{name}"], "o", color=f"C{k}", label=LABELS[name])
        axes[1].plot(df["field"], df[f"vs_exact_width_{name}"], "o", color=f"C{k}", label=LABELS[name])
    axes[0].axhspan(-0.15, 0.15, color="0.85", label="oracle target")
    axes[0].set_ylabel(r"(mean - exact mean) / exact $\sigma$")
    axes[1].axhspan(0.95, 1.05, color="0.85")
    axes[1].set_yscale("log")
    axes[1].set_ylabel("width / exact width")
    for ax in axes:
        ax.set_xlabel("test field")
        ax.legend(fontsize=7)
    fig.suptitle("Diffusion posterior against the exact lognormal posterior")
    _caveat(fig, UNDERTRAINED)
    return fig


def oracle_check(posts, truths, df, normalisation, max_fields=4):
    """The exact-denoiser check (rule ``oracle``): per field the 68/95% regions of the exact
    posterior (grey), the noise-free bound and each Monte Carlo estimator; below, every
    method's mean shift in exact sigmas and width ratio over the fields, with the targets."""
    _style()
    n = min(len(posts), max_fields)
    methods = list(posts[0])
    colours = {m: c for m, c in zip(methods[1:], ["k", "C3", "C0", "C2", "C4", "C5"])}
    fig = plt.figure(figsize=(3.4 * max(n, 2), 6.6), constrained_layout=True)
    grid = fig.add_gridspec(2, max(n, 2))
    for i in range(n):
        ax = fig.add_subplot(grid[0, i])
        for m, post in posts[i].items():
            if m == "exact":
                ax.contourf(post.omega_m, post.sigma_8, post.density.T, levels=_hpd_levels(post) + [np.inf],
                            colors=["0.82", "0.6"])
                ax.fill([], [], color="0.7", label="exact")
            else:
                ls = "--" if m == "bound" else "-"
                ax.contour(post.omega_m, post.sigma_8, post.density.T, levels=_hpd_levels(post), colors=colours[m],
                           linestyles=ls, linewidths=1.2)
                ax.plot([], [], color=colours[m], ls=ls, label="bound, no noise" if m == "bound" else m)
        ax.plot(*truths[i], marker="*", ms=11, color="gold", mec="k", label="truth")
        ax.set_xlabel(LABELS["omega_m"])
        ax.set_ylabel(LABELS["sigma_8"])
        ax.set_title(f"field {i}", fontsize=9)
        if i == 0:
            fig.legend(*ax.get_legend_handles_labels(), loc="outside lower center", ncol=6, fontsize=8)
    half = max(n, 2) // 2
    others = [m for m in methods if m != "exact"]
    x = np.arange(len(others))
    for j, (what, target, ylabel) in enumerate((
        ("shift", (-0.15, 0.15), r"(mean $-$ exact mean) / exact $\sigma$"),
        ("width", (0.95, 1.05), "width / exact width"),
    )):
        ax = fig.add_subplot(grid[1, j * half:(j + 1) * half] if half else grid[1, j])
        ax.axhspan(*target, color="0.88", zorder=0)
        for k, name in enumerate(("omega_m", "sigma_8")):
            for xi, m in zip(x, others):
                vals = df.loc[df["method"] == m, f"{what}_{name}"].to_numpy()
                ax.plot(np.full(vals.size, xi + (k - 0.5) * 0.18), vals, "o", ms=4, color=f"C{k}",
                        label=LABELS[name] if xi == 0 else None)
        ax.set_xticks(x, ["bound,\nno noise" if m == "bound" else m.replace(", ", ",\n") for m in others], fontsize=8)
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=7)
    evals = df.groupby("method", sort=False)["evaluations"].mean()
    cost = ", ".join(f"{m} {evals[m]:.0f}" for m in others if evals[m] > 0)
    fig.suptitle(f"Exact denoiser in place of the network, normalisation ({normalisation[0]:.2f}, {normalisation[1]:.2f})\n"
                 f"denoiser calls per field: {cost}", fontsize=10)
    return fig


def likelihood_diagnostic(score, excess):
    """Where the network's likelihood goes wrong, against the exact denoiser on the same
    noise: (left) the mean posterior shift, in exact sigmas, caused by each band of t, per
    parameter, with the field-to-field spread; (right) the network's excess bound over the
    oracle per band of t and of |k| (nats, mean over fields)."""
    _style()
    fig, (a0, a1) = plt.subplots(1, 2, figsize=(11, 4), gridspec_kw={"width_ratios": [1, 1.3]})
    bands = list(dict.fromkeys(score["t_band"]))
    x = np.arange(len(bands))
    usable = score[score["exact_curv"] > 0]  # a field whose exact -log p is not convex at its truth has no sigma
    for j, p in enumerate(("omega_m", "sigma_8")):
        g = usable[usable["param"] == p].groupby("t_band", sort=False)["shift_sigma"]
        mean, sd = g.mean().reindex(bands), g.std().reindex(bands).fillna(0)
        n = usable.loc[usable["param"] == p, "field"].nunique()
        a0.bar(x + (j - 0.5) * 0.38, mean, 0.38, yerr=sd, capsize=2, label=f"{LABELS[p]} ({n} fields)")
    a0.axhline(0, color="k", lw=0.6)
    a0.set(xticks=x, xlabel="band of t", ylabel="posterior shift it causes [exact $\\sigma$]",
           title="network - oracle score, by timestep")
    a0.set_xticklabels(bands, rotation=45)
    a0.legend(frameon=False)
    table = excess.groupby(["t_band", "k_band"], sort=False)["excess_nats"].mean().unstack("k_band")
    table = table.reindex(bands)[list(dict.fromkeys(excess["k_band"]))]
    lim = float(np.nanmax(np.abs(table.to_numpy()))) or 1.0
    im = a1.imshow(table.to_numpy().T, origin="lower", aspect="auto", cmap="RdBu_r", vmin=-lim, vmax=lim)
    a1.set(xticks=x, yticks=np.arange(table.shape[1]), xlabel="band of t", ylabel="|k| band [h/Mpc]",
           title="excess bound of the network over the oracle")
    a1.set_xticklabels(bands, rotation=45)
    a1.set_yticklabels(table.columns)
    fig.colorbar(im, ax=a1, label="nats (mean over fields)")
    fig.tight_layout()
    return fig


def likelihood_convergence(conv, targets, oracle=None):
    """The likelihood's figures of merit and the emulation's chi2_log ratio against training
    iterations, one panel each, with the target range shaded and, dashed, the exact denoiser
    at the same estimator settings. ``conv``: one row per checkpoint with ``iteration`` and
    the columns of cosmodiff.diagnostics.posterior_metrics / emulation_metrics; ``targets``:
    cosmodiff.diagnostics.TARGETS; ``oracle``: posterior_metrics of the exact denoiser."""
    _style()
    panels = [(name, desc, rng) for name, desc, rng in targets] + [
        ("worst_chi2_log_ratio", "worst chi2_log samples / simulations", (0.0, 1.3))]
    ncol = 4
    nrow = -(-len(panels) // ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.2 * ncol, 3.0 * nrow), sharex=True, squeeze=False)
    axes = axes.ravel()
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    for ax, (name, desc, (lo, hi)) in zip(axes, panels):
        ax.axhspan(lo, hi, color="tab:green", alpha=0.12, lw=0)
        cols = [f"{p}_{name}" for p in ("omega_m", "sigma_8")] if name != "worst_chi2_log_ratio" else [name]
        for c, color in zip(cols, ("tab:blue", "tab:orange")):
            lab = LABELS.get(c.rsplit("_" + name, 1)[0], "samples")
            ax.plot(conv["iteration"], conv[c], "o-", color=color, label=lab)
            if oracle is not None and c in oracle:
                ax.axhline(oracle[c], color=color, ls="--", lw=0.8)
        ax.set(title=desc, xlabel="iteration")
        ax.title.set_fontsize(9)
        if name == "max_abs_shift":
            ax.set_yscale("log")
    axes[0].legend(frameon=False, fontsize=7)
    fig.tight_layout()
    return fig


def comparison_figure(
    methods,            # As comparison_table.
    exact,              # As comparison_table.
):
    """Per parameter: each method's posterior mean minus the exact one, in exact sigmas,
    against its width over the exact width, one point per field."""
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
    axes[1].set_xscale("symlog", linthresh=2)  # N-body fields land tens of sigmas off
    axes[1].set_xlabel(r"($\sigma_8$ mean - truth) / sigma (linear within +-2)")
    axes[1].legend(fontsize=8)
    for ax in axes:
        ax.set_yticks(range(len(keys)))
        ax.set_yticklabels(labels)
        ax.invert_yaxis()
    axes[1].set_yticklabels([])
    fig.suptitle("Fields the network never saw: flagged by the model check (red), and their posteriors")
    return fig
