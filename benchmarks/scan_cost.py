"""Benchmark: the authors' posterior scan against ours, side by side on one trained model.

    python benchmarks/scan_cost.py --checkpoint results/demo/models/pretrain/ckpt_0000200.pt \
        --data results/demo/data/prepared_64.h5 --config config/config.yaml \
        [--fields 0 1] [--authors-grid 100] [--csv results/demo/scan_cost.csv]

For each test field (the same fields as the `posterior` rule) four scans of the same network:

  authors      the paper's scan: the bound summed over t = 0..10, one noise draw (common
               random numbers), on an n x n grid within +-0.1 of the truth, clipped to the
               prior: 11 n^2 evaluations (110,000 for n = 100, the paper's 3-hour job);
  dense, prior the same truncated estimator on an n x n grid over the whole prior (same cost):
               the reference for a cheaper grid that does not need to know the truth;
  authors, c2f the same truncated estimator on our coarse-to-fine grids (config inference):
               the scan strategy alone, the likelihood surface unchanged;
  ours         the workflow's scan (config inference: the full-bound estimator, coarse to fine);
  exact        on lognormal data, the exact posterior on coarse-to-fine grids (no network).

Printed: network evaluations, seconds, posterior means and standard deviations per field,
and the differences (mean shift in units of the reference's sigma, width ratio) of
"authors, c2f" from "dense, prior" (does the cheap grid give the same posterior?), of
"authors" from "dense, prior" (what the window around the truth clips), and of each scan from
the exact posterior. On a CPU use a smaller --authors-grid (the cost is quadratic);
the evaluation count of the paper's grid is printed beside it.
"""

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "workflow"))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402

from cosmodiff.cosmology import PRIOR  # noqa: E402
from cosmodiff.emulator import Emulator  # noqa: E402
from cosmodiff.inference import InferenceSettings  # noqa: E402
from cosmodiff.inference.grid import PARAMS, coarse_to_fine, compare, grid_around, grid_posterior  # noqa: E402
from cosmodiff.inference.potential import Potential, exact_log10_potential  # noqa: E402
from cosmodiff.prepare import inference_field  # noqa: E402

PAPER_GRID = 100


def scans(emu, field, truth, s, authors_grid, index, exact_settings):
    """{name: (GridPosterior, seconds)} of one field (test field ``index``); ``s`` the
    config's InferenceSettings."""
    def potential(estimator):
        settings = replace(s, estimator=estimator, **({"n_noise": 1} if estimator == "truncated" else {}))
        return Potential.from_emulator(emu, field, **settings.potential_options(index), dtype=torch.float32)

    c2f = s.coarse_to_fine_options()
    runs = {
        "authors": lambda: grid_posterior(potential("truncated"), *grid_around(truth, 0.1, authors_grid)),
        "dense, prior": lambda: grid_posterior(
            potential("truncated"), *(np.linspace(*PRIOR[p], authors_grid) for p in PARAMS)
        ),
        "authors, c2f": lambda: coarse_to_fine(potential("truncated"), **c2f),
        "ours": lambda: coarse_to_fine(potential(s.estimator), **c2f),
    }
    if exact_settings:
        runs["exact"] = lambda: coarse_to_fine(exact_log10_potential(field, *exact_settings), **c2f)
    out = {}
    for name, run in runs.items():
        t0 = time.perf_counter()
        post = run()
        out[name] = (post, time.perf_counter() - t0)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", required=True, type=Path, help="checkpoint .pt (or select_checkpoint's .json)")
    ap.add_argument("--data", required=True, type=Path, help="prepared .h5 at the checkpoint's resolution")
    ap.add_argument("--config", required=True, type=Path, help="workflow config whose `inference` settings are 'ours'")
    ap.add_argument("--fields", type=int, nargs="+", default=[0, 1], help="test field indices (as the posterior rule)")
    ap.add_argument("--authors-grid", type=int, default=PAPER_GRID, help="points per axis of the authors' grid (paper: 100)")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--csv", type=Path, default=None, help="write the per-scan table here")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    ckpt = args.checkpoint
    if ckpt.suffix == ".json":
        ckpt = Path(json.loads(ckpt.read_text())["checkpoint"])
    config = yaml.safe_load(args.config.read_text())
    s = InferenceSettings.from_dict(config["inference"])
    lognormal = config["data"]["source"] == "synthetic" and config["data"]["synthetic"]["generator"] == "lognormal"
    exact_settings = (config["data"]["resolution"], config["prepare"]["downsample"]) if lognormal else None
    emu = Emulator.from_checkpoint(ckpt)
    rows, diffs = [], []
    for i in args.fields:
        field, truth, _, _ = inference_field(args.data, i)
        res = scans(emu, field, truth, s, args.authors_grid, i, exact_settings)
        for name, (post, sec) in res.items():
            rows.append({"field": i, "scan": name, "evaluations": post.evaluations if name != "exact" else 0,
                         "seconds": sec, "omega_m_truth": truth[0], "sigma_8_truth": truth[1],
                         **{k: v for k, v in post.summary(truth=truth).items() if k.endswith(("_mean", "_std", "_z"))}})
        pairs = [("authors, c2f", "dense, prior"), ("authors", "dense, prior")]
        pairs += [(n, "exact") for n in ("authors", "authors, c2f", "ours")] if lognormal else []
        for a, b in pairs:
            diffs.append({"field": i, "scan": a, "reference": b, **compare(res[a][0], res[b][0])})
        print(f"field {i} done", flush=True)
    df, dd = pd.DataFrame(rows), pd.DataFrame(diffs)
    pd.set_option("display.width", 200)
    cols = ["field", "scan", "evaluations", "seconds", "omega_m_mean", "omega_m_std", "sigma_8_mean", "sigma_8_std",
            "omega_m_z", "sigma_8_z"]
    print(f"\ncheckpoint {ckpt}; authors' grid {args.authors_grid}^2 here "
          f"({11 * args.authors_grid**2} evaluations; the paper's {PAPER_GRID}^2 costs {11 * PAPER_GRID**2})")
    print(df[cols].round(4).to_string(index=False))
    print("\nshift = (mean - reference mean) / reference sigma; width = sigma / reference sigma")
    print(dd.drop(columns="kl").round(3).to_string(index=False))
    if args.csv:
        df.merge(dd, on=["field", "scan"], how="left").to_csv(args.csv, index=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
