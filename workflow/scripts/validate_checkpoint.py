"""Chi-squared table of one checkpoint at the validation points (rule `validate_checkpoint`)."""

import argparse
import time
from pathlib import Path

import _bootstrap

from cosmodiff.emulator import Emulator
from cosmodiff.sampling import SamplerSettings
from cosmodiff.validation import choose_points, validate


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--checkpoint", required=True, type=Path)
    ap.add_argument("--data", required=True, type=Path, help="prepared .h5 at the checkpoint's resolution")
    ap.add_argument("--settings", required=True, help="JSON of config validation, less select_by (SamplerSettings)")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--out", required=True, type=Path, help="table .csv")
    args = ap.parse_args(argv)
    log = _bootstrap.setup(args.threads)
    settings = SamplerSettings.from_json(args.settings)
    t0 = time.perf_counter()
    emu = Emulator.from_checkpoint(args.checkpoint, **settings.emulator_kwargs())
    sims = choose_points(args.data, settings.n_points, settings.seed, fiducial=settings.fiducial)
    table = validate(emu, args.data, sims, settings, progress=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out, index=False)
    log.info("%s: mean chi2 %.3f (simulations %.3f), of the log field %.3f (%.3f), mean |density z| %.2f, %.1f s\n%s",
             args.checkpoint, table.chi2_samples.mean(), table.chi2_sims.mean(), table.chi2_log_samples.mean(),
             table.chi2_log_sims.mean(), table.density_z.abs().mean(), time.perf_counter() - t0, table.to_string())
    return 0


if __name__ == "__main__":
    _bootstrap.run(main)
