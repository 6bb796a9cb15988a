"""Figures of the emulation section (rule `plot_emulation`): maps side by side, P(k) with
z-scores, pixel PDFs, the response to each parameter, peak counts; and a tidy table."""

import argparse
from pathlib import Path

import _bootstrap
import numpy as np
import pandas as pd

from cosmodiff import plots
from cosmodiff.emulator import read_samples
from cosmodiff.validation import point_statistics, simulation_maps


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--samples", required=True, type=Path)
    ap.add_argument("--data", required=True, type=Path, help="prepared .h5 at the native resolution")
    ap.add_argument("--outdir", required=True, type=Path, help="figure folder")
    ap.add_argument("--table", required=True, type=Path, help="per-point statistics .csv")
    args = ap.parse_args(argv)
    log = _bootstrap.setup_logging()
    log_maps, params, attrs = read_samples(args.samples, log10=True)
    sims = [int(s) for s in np.atleast_1d(__import__("json").loads(attrs["sims"]))]
    gen_log, sim_log, pts, rows = [], [], [], []
    for i, sim in enumerate(sims):
        if sim < 0:
            continue  # extra points have no simulation to compare with
        s_log, _ = simulation_maps(args.data, sim, "test")
        g_log = log_maps[i].astype(np.float64)
        gen_log.append(g_log)
        sim_log.append(s_log)
        pts.append(params[i])
        rows.append({"sim": sim, "omega_m": params[i][0], "sigma_8": params[i][1], **point_statistics(g_log, s_log)})
    table = pd.DataFrame(rows)
    args.table.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.table, index=False)
    out = args.outdir
    plots.save(plots.emulation_maps(gen_log, sim_log, pts), out / "emulation_maps.png")
    plots.save(plots.emulation_power(gen_log, sim_log, pts, chi2=table[["chi2_samples", "chi2_sims", "chi2_log_samples", "chi2_log_sims"]].to_numpy()), out / "emulation_power.png")
    plots.save(plots.emulation_pdf(gen_log, sim_log, pts), out / "emulation_pdf.png")
    plots.save(plots.emulation_peaks(gen_log, sim_log, pts), out / "emulation_peaks.png")
    plots.save(plots.emulation_response(gen_log, sim_log, pts), out / "emulation_response.png")
    log.info("sampler %s, %s evaluations per map\n%s", attrs["sampler"], attrs["evaluations_per_map"], table.to_string())
    return 0


if __name__ == "__main__":
    _bootstrap.run(main)
