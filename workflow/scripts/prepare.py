"""Prepare HDF5 training sets from CMD-layout files (rule `prepare`)."""

import argparse
import json
from pathlib import Path

import _bootstrap

from cosmodiff import camels
from cosmodiff.prepare import prepare_configured


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--maps", required=True, type=Path, help="maps .npy (n_sims*15, N, N)")
    ap.add_argument("--params", required=True, type=Path, help="parameter table (n_sims, 6)")
    ap.add_argument("--resolutions", required=True, type=int, nargs="+", help="output resolutions")
    ap.add_argument("--outputs", required=True, type=Path, nargs="+", help="one .h5 per resolution, same order")
    ap.add_argument("--settings", required=True, help="JSON of config prepare (cosmodiff.prepare.CONFIG_KEYS)")
    ap.add_argument("--source", default="{}", help="JSON provenance of the raw files")
    ap.add_argument("--native-resolution", required=True, type=int, help="pixels per side of the raw maps (data.resolution)")
    args = ap.parse_args(argv)
    log = _bootstrap.setup_logging()
    if len(args.resolutions) != len(args.outputs):
        ap.error("give one output per resolution")
    source = json.loads(args.source)
    log.info("checksumming the raw files")
    source["files"] = {
        p.name: {"sha256": camels.sha256sum(p), "size": p.stat().st_size} for p in (args.maps, args.params)
    }
    out = prepare_configured(args.maps, args.params, dict(zip(args.resolutions, args.outputs)), json.loads(args.settings),
                             args.native_resolution, source=source)
    log.info("wrote %s", out)
    return 0


if __name__ == "__main__":
    _bootstrap.run(main)
