"""Benchmark: emulator fidelity against cost - reduced chi-squared vs network evaluations.

    python benchmarks/sampler_cost.py --checkpoint results/demo/models/pretrain/ckpt_0000400.pt \
        --data results/demo/data/prepared_64.h5 [--points 4] [--samples 8] [--ddim 10 25 50 100 200] \
        [--figure results/demo/figures/sampler_cost.png]

For the same validation points, seeds and checkpoint, the ancestral sampler (T = 1000
evaluations per map, as the authors) and DDIM at several step counts generate maps; the table
gives evaluations per map, seconds per map, and the mean reduced chi-squared against the
simulations (with the simulations' own leave-one-out value as the reference). The goal: the
ancestral sampler's fidelity at 20 times fewer evaluations or better.
"""

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "workflow"))

import pandas as pd  # noqa: E402

from cosmodiff import plots  # noqa: E402
from cosmodiff.emulator import Emulator  # noqa: E402
from cosmodiff.validation import choose_points, validate  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", required=True, type=Path)
    ap.add_argument("--data", required=True, type=Path, help="prepared .h5 at the checkpoint's resolution")
    ap.add_argument("--points", type=int, default=4)
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--ddim", type=int, nargs="+", default=[10, 25, 50, 100, 200])
    ap.add_argument("--no-ancestral", action="store_true", help="skip the 1000-step sampler")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--figure", type=Path, default=None, help="write the figure here (.png + .pdf)")
    args = ap.parse_args()
    emu = Emulator.from_checkpoint(args.checkpoint)
    sims = choose_points(args.data, args.points, args.seed)
    settings = [("ddim", s) for s in args.ddim] + ([] if args.no_ancestral else [("ancestral", emu.diffusion.T)])
    rows = []
    print(f"{'sampler':<10}{'evals/map':>10}{'s/map':>9}{'chi2 samples':>14}{'chi2 sims':>11}{'|density z|':>13}")
    for sampler, steps in settings:
        t0 = time.perf_counter()
        table = validate(emu, args.data, sims, args.samples, sampler, steps, args.seed)
        sec = (time.perf_counter() - t0) / (len(sims) * args.samples)
        row = {"sampler": sampler, "evaluations": emu.evaluations(sampler, steps), "seconds_per_map": sec,
               "chi2_samples": table.chi2_samples.mean(), "chi2_sims": table.chi2_sims.mean(),
               "abs_density_z": table.density_z.abs().mean()}
        rows.append(row)
        print(f"{sampler:<10}{row['evaluations']:>10}{sec:>9.3f}{row['chi2_samples']:>14.3f}{row['chi2_sims']:>11.3f}{row['abs_density_z']:>13.2f}", flush=True)
    df = pd.DataFrame(rows)
    if args.figure:
        plots.save(plots.sampler_cost(df, title=f"{args.checkpoint.parent.name} {args.checkpoint.stem}"), args.figure)
        df.to_csv(args.figure.with_suffix(".csv"), index=False)


if __name__ == "__main__":
    main()
