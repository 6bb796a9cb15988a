"""Where the network's likelihood goes wrong (rule `likelihood_diagnostic`): for the first
test fields, the network's bound against the exact denoiser's on the same noise, split by
timestep (contributions to dU/dtheta and the posterior shift they cause) and by scale (the
network's excess denoising error, in nats of the bound)."""

import argparse
import json
from pathlib import Path

import _bootstrap


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--selection", required=True, type=Path, help="select_checkpoint's .json of the inference stage")
    ap.add_argument("--data", required=True, type=Path, help="prepared .h5 at the stage's resolution")
    ap.add_argument("--exact", required=True, help="JSON {native_resolution, method}")
    ap.add_argument("--settings", required=True,
                    help="JSON {n_fields, noise_seed, batch_size} (cosmodiff.diagnostics.diagnose_fields)")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--score", required=True, type=Path, help="output .csv: per field, t band and parameter")
    ap.add_argument("--excess", required=True, type=Path, help="output .csv: per field, t band and k band")
    ap.add_argument("--figure", required=True, type=Path, help="output .png (and .pdf beside it)")
    args = ap.parse_args(argv)
    log = _bootstrap.setup(args.threads)
    from cosmodiff import plots
    from cosmodiff.diagnostics import diagnose_fields
    from cosmodiff.emulator import Emulator

    emu = Emulator.from_checkpoint(json.loads(args.selection.read_text())["checkpoint"])
    score, excess = diagnose_fields(emu, args.data, json.loads(args.exact), **json.loads(args.settings), progress=True)
    score.to_csv(args.score, index=False)
    excess.to_csv(args.excess, index=False)
    plots.save(plots.likelihood_diagnostic(score, excess), args.figure)
    by_band = score.groupby(["param", "t_band"], sort=False)["shift_sigma"].mean().unstack(0)
    log.info("mean posterior shift (exact sigmas) caused by each band of t:\n%s", by_band.round(3).to_string())
    return 0


if __name__ == "__main__":
    _bootstrap.run(main)
