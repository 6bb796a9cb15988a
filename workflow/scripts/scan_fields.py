"""Posteriors of the first test fields from one checkpoint's bound, or from the exact
denoiser's, each compared with the field's exact posterior (rules `convergence_scan` and
`oracle_scan`): one CSV row per field."""

import argparse
import json
import sys
from pathlib import Path

import _bootstrap


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--checkpoint", required=True, type=Path, help="a checkpoint .pt, or select_checkpoint's .json")
    ap.add_argument("--oracle", default="", help="JSON {native_resolution, method}: scan the exact denoiser instead of the network")
    ap.add_argument("--data", required=True, type=Path, help="prepared .h5 at the stage's resolution")
    ap.add_argument("--exact", required=True, nargs="+", type=Path, help="field_<i>_exact.h5 of the fields, in order")
    ap.add_argument("--settings", required=True, help="JSON of config inference")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--out", required=True, type=Path, help="output .csv, a row per field")
    args = ap.parse_args(argv)
    log = _bootstrap.setup(args.threads)
    import pandas as pd

    from cosmodiff.diagnostics import posterior_metrics, scan_against_exact
    from cosmodiff.emulator import Emulator
    from cosmodiff.inference import InferenceSettings
    from cosmodiff.inference.oracle import WienerOracle

    checkpoint = args.checkpoint
    if checkpoint.suffix == ".json":
        checkpoint = Path(json.loads(checkpoint.read_text())["checkpoint"])
    emu = Emulator.from_checkpoint(checkpoint)
    model = emu.model
    if args.oracle:
        ex = json.loads(args.oracle)
        model = WienerOracle(emu.diffusion, emu.normalisation, native_resolution=ex["native_resolution"], method=ex["method"])
    settings = InferenceSettings.from_dict(json.loads(args.settings))
    rows = scan_against_exact(model, emu.diffusion, emu.normalisation, args.data, args.exact, settings)
    df = pd.DataFrame(rows).assign(source="oracle" if args.oracle else str(checkpoint))
    df.to_csv(args.out, index=False)
    log.info("%s over %d fields: %s", "exact denoiser" if args.oracle else checkpoint, len(df),
             json.dumps(posterior_metrics(rows), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
