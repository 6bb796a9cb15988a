"""Benchmark: emulator fidelity against cost - reduced chi-squared vs network evaluations.

    python benchmarks/sampler_cost.py --checkpoint results/demo/models/pretrain/ckpt_0000400.pt \
        --data results/demo/data/prepared_64.h5 [--points 4] [--samples 8] [--ddim 10 25 50] \
        [--dpm 10 25 50] [--spacing quadratic] [--figure results/demo/figures/sampler_cost.png]

For the same validation points, seeds and checkpoint, the ancestral sampler (T = 1000
evaluations per map, as the authors), DDIM and DPM-Solver++(2M) at several step counts on the
timestep grid ``--spacing`` (and DDIM on the linear grid, for comparison) generate maps; the table
gives evaluations per map, seconds per map, and the mean reduced chi-squared against the
simulations, of P(k) of field/mean - 1 (the paper's) and of the log10 field, with the
simulations' own leave-one-out values as references, the mean |density z| and the pixel-PDF
distance. The goal: the ancestral sampler's fidelity at 20 times fewer evaluations or better.
"""

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "workflow"))

from cosmodiff import plots  # noqa: E402
from cosmodiff.emulator import Emulator  # noqa: E402
from cosmodiff.sampling import DDIM_SPACINGS, SamplerSettings  # noqa: E402
from cosmodiff.validation import COST_COLUMNS, choose_points, sampler_costs  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", required=True, type=Path)
    ap.add_argument("--data", required=True, type=Path, help="prepared .h5 at the checkpoint's resolution")
    ap.add_argument("--points", type=int, default=4)
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--ddim", type=int, nargs="*", default=[10, 25, 50])
    ap.add_argument("--dpm", type=int, nargs="*", default=[10, 25, 50], help="DPM-Solver++(2M) steps")
    ap.add_argument("--spacing", default="quadratic", choices=DDIM_SPACINGS)
    ap.add_argument("--linear-ddim", type=int, nargs="*", default=[10, 50], help="DDIM steps on the linear grid")
    ap.add_argument("--no-ancestral", action="store_true", help="skip the 1000-step sampler")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--figure", type=Path, default=None, help="write the figure here (.png + .pdf)")
    args = ap.parse_args()
    emu = Emulator.from_checkpoint(args.checkpoint)
    sims = choose_points(args.data, args.points, args.seed)
    samplers = ([("ddim", n, "linear") for n in args.linear_ddim] + [("ddim", n, args.spacing) for n in args.ddim]
                + [("dpm2m", n, args.spacing) for n in args.dpm] + ([] if args.no_ancestral else [("ancestral", emu.diffusion.T, "linear")]))
    df = sampler_costs(emu, args.data, sims, SamplerSettings(seed=args.seed, n_samples=args.samples), samplers, progress=True)
    print(df[COST_COLUMNS].to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    if args.figure:
        plots.save(plots.sampler_cost(df, title=f"{args.checkpoint.parent.name} {args.checkpoint.stem}"), args.figure)
        df.to_csv(args.figure.with_suffix(".csv"), index=False)


if __name__ == "__main__":
    main()
