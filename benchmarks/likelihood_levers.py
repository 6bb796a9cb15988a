"""Benchmark: what the levers that need no retraining do to the network's likelihood.

    python benchmarks/likelihood_levers.py --run results/bench --config config/bench.yaml \
        [--fields 10] [--csv results/bench/inference/levers.csv]

Run after `make bench` (it reads the run's selected checkpoint, prepared data and the exact
posteriors of its first test fields), alone on the machine. On the same fields, noise and
grids as the `posterior` rule, it prints the figures of merit of cosmodiff.diagnostics
(median and largest |shift| of the posterior mean in exact sigmas, median width ratio,
68/95% coverage, mean |z|) for:

  network, EMA weights     the workflow's choice (the selected checkpoint's EMA);
  network, raw weights     the same checkpoint's raw weights: what EMA buys;
  oracle, configured norm  the exact denoiser at the configured prepare.norm_range: the
                           estimator's own error (no network);
  oracle, training range   the exact denoiser at the authors' normalisation (the training
                           split's log10 range to [-1, 1]): what the normalisation buys,
                           before any network is trained.

The levers that need a new training run (conditioning, loss, timestep sampler, length) are
compared through the convergence figure of a run per setting (README).
"""

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "workflow"))

import h5py  # noqa: E402
import pandas as pd  # noqa: E402
import yaml  # noqa: E402

from cosmodiff.diagnostics import PARAMS, TARGETS, posterior_metrics, scan_against_exact  # noqa: E402
from cosmodiff.emulator import Emulator  # noqa: E402
from cosmodiff.inference import InferenceSettings  # noqa: E402
from cosmodiff.inference.oracle import WienerOracle  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True, type=Path, help="results/<run> of a finished lognormal run")
    ap.add_argument("--config", required=True, type=Path, help="that run's config")
    ap.add_argument("--fields", type=int, default=10, help="the first test fields (their exact posteriors must exist)")
    ap.add_argument("--csv", type=Path, help="also write the table here")
    args = ap.parse_args(argv)
    cfg = yaml.safe_load(args.config.read_text())
    s = InferenceSettings.from_dict(cfg["inference"])
    stage = s.stage
    res = cfg["prepare"]["low_resolution"] if stage == "pretrain" else cfg["data"]["resolution"]
    data = args.run / f"data/prepared_{res}.h5"
    exact = [args.run / f"inference/field_{i}_exact.h5" for i in range(args.fields)]
    missing = [str(p) for p in exact if not p.exists()]
    if missing:
        sys.exit(f"missing exact posteriors {missing[:3]}...: run the workflow first (make bench) or lower --fields")
    checkpoint = json.loads((args.run / f"validation/{stage}/selected.json").read_text())["checkpoint"]
    with h5py.File(data) as f:
        train = f["train"]["maps"][:]
        native, method = int(f.attrs["native_resolution"]), str(f.attrs["downsample"])
    training_range = (float(train.min()), float(train.max()))
    method = cfg["prepare"]["downsample"] if method == "none" else method
    cases = {}
    for label, weights in (("network, EMA weights", "ema"), ("network, raw weights", "raw")):
        emu = Emulator.from_checkpoint(checkpoint, weights=weights)
        cases[label] = (emu.model, emu.diffusion, emu.normalisation)
    for label, norm in (("oracle, configured norm", emu.normalisation), ("oracle, training range", training_range)):
        cases[f"{label} {tuple(round(v, 2) for v in norm)}"] = (
            WienerOracle(emu.diffusion, norm, native_resolution=native, method=method), emu.diffusion, norm)
    rows = []
    for label, (model, diffusion, norm) in cases.items():
        print(f"{label} ...", flush=True)
        m = posterior_metrics(scan_against_exact(model, diffusion, norm, data, exact, s))
        for p in PARAMS:
            rows.append({"case": label, "param": p, **{name: m[f"{p}_{name}"] for name, _, _ in TARGETS}})
    df = pd.DataFrame(rows)
    print(f"\n{args.fields} test fields of {args.run}, checkpoint {checkpoint}:")
    print(df.round(3).to_string(index=False))
    if args.csv:
        df.to_csv(args.csv, index=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
