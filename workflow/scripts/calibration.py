"""Calibration over the test fields and the inference figures (rule `calibration`)."""

import argparse
import json
from pathlib import Path

import _bootstrap
import numpy as np
import pandas as pd

from cosmodiff import plots
from cosmodiff.inference.calibration import coverage
from cosmodiff.inference.grid import GridPosterior


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--summaries", required=True, nargs="+", type=Path)
    ap.add_argument("--grids", required=True, nargs="+", type=Path)
    ap.add_argument("--exact", type=int, default=0, help="1: exact posteriors exist beside the grids")
    ap.add_argument("--outdir", required=True, type=Path)
    ap.add_argument("--table", required=True, type=Path)
    ap.add_argument("--coverage", required=True, type=Path)
    args = ap.parse_args(argv)
    log = _bootstrap.setup_logging()
    rows = [json.loads(p.read_text()) for p in args.summaries]
    df = pd.DataFrame(rows).sort_values("field")
    df.to_csv(args.table, index=False)
    truths = df[["omega_m_truth", "sigma_8_truth"]].to_numpy()
    cov = coverage(rows, [[r["omega_m_truth"], r["sigma_8_truth"]] for r in rows])
    cov_out = {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in cov.items()}
    cov_out["evaluations_per_field"] = float(df["evaluations"].mean())
    cov_out["seconds_per_field"] = float(df["seconds"].mean())
    if args.exact:
        for name in ("omega_m", "sigma_8"):
            cov_out[f"vs_exact_mean_abs_shift_{name}"] = float(df[f"vs_exact_shift_{name}"].abs().mean())
            cov_out[f"vs_exact_median_width_{name}"] = float(df[f"vs_exact_width_{name}"].median())
            cov_out[f"exact_mean_abs_z_{name}"] = float(df[f"exact_{name}_z"].abs().mean())
    args.coverage.write_text(json.dumps(cov_out, indent=1) + "\n")
    grids = sorted(args.grids, key=lambda p: int(p.stem.split("_")[1]))[:6]
    posts = [GridPosterior.from_hdf5(p)[0] for p in grids]
    exacts = [GridPosterior.from_hdf5(p.with_name(p.stem + "_exact.h5"))[0] for p in grids] if args.exact else None
    plots.save(plots.posterior_contours(posts, truths[: len(posts)], exacts), args.outdir / "inference_posteriors.png")
    plots.save(plots.calibration(df, cov), args.outdir / "inference_calibration.png")
    if args.exact:
        plots.save(plots.exact_comparison(df), args.outdir / "inference_exact.png")
    log.info("coverage %s", json.dumps(cov_out, indent=1))
    return 0


if __name__ == "__main__":
    _bootstrap.run(main)
