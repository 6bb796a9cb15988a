"""Chi-squared table of one checkpoint at the validation points (rule `validate_checkpoint`)."""

import argparse
import json
import time
from pathlib import Path

import _bootstrap

from cosmodiff.emulator import Emulator
from cosmodiff.validation import choose_points, validate


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--checkpoint", required=True, type=Path)
    ap.add_argument("--data", required=True, type=Path, help="prepared .h5 at the checkpoint's resolution")
    _bootstrap.add_sampler_args(ap)
    ap.add_argument("--fiducial", default="null", help="JSON: null or [Omega_m, sigma_8] whose nearest simulation is a point")
    ap.add_argument("--out", required=True, type=Path, help="table .csv")
    args = ap.parse_args(argv)
    log = _bootstrap.setup(args.threads)
    t0 = time.perf_counter()
    emu = Emulator.from_checkpoint(args.checkpoint, weights=args.weights, precision=args.precision)
    sims = choose_points(args.data, args.n_points, args.seed, fiducial=json.loads(args.fiducial))
    table = validate(emu, args.data, sims, args.n_samples, args.sampler, args.steps, args.seed, args.batch_size, clip=bool(args.clip), progress=True,
                     spacing=args.spacing)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out, index=False)
    log.info("%s: mean chi2 %.3f (simulations %.3f), of the log field %.3f (%.3f), mean |density z| %.2f, %.1f s\n%s",
             args.checkpoint, table.chi2_samples.mean(), table.chi2_sims.mean(), table.chi2_log_samples.mean(),
             table.chi2_log_sims.mean(), table.density_z.abs().mean(), time.perf_counter() - t0, table.to_string())
    return 0


if __name__ == "__main__":
    _bootstrap.run(main)
