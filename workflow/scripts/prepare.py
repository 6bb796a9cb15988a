"""Prepare HDF5 training sets from CMD-layout files (rule `prepare`)."""

import argparse
import json
from pathlib import Path

import _bootstrap

from cosmodiff import camels
from cosmodiff.prepare import prepare_dataset


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--maps", required=True, type=Path, help="maps .npy (n_sims*15, N, N)")
    ap.add_argument("--params", required=True, type=Path, help="parameter table (n_sims, 6)")
    ap.add_argument("--resolutions", required=True, type=int, nargs="+", help="output resolutions")
    ap.add_argument("--outputs", required=True, type=Path, nargs="+", help="one .h5 per resolution, same order")
    ap.add_argument("--log-floor", required=True, type=float, help="floor before log10, (Msun/h)/(Mpc/h)^2")
    ap.add_argument("--split", required=True, help='JSON {"train": f, "val": f, "test": f}')
    ap.add_argument("--downsample", default="bicubic", help="bicubic | area")
    ap.add_argument("--source", default="{}", help="JSON provenance of the raw files")
    ap.add_argument("--norm-range", default="null", help="JSON null (training range -> [-1, 1]) or [lo, hi] in log10")
    ap.add_argument("--native-resolution", required=True, type=int, help="pixels per side of the raw maps (data.resolution)")
    ap.add_argument("--max-nonpositive-fraction", required=True, type=float,
                    help="largest fraction of raw pixels that may be <= 0 (prepare.max_nonpositive_fraction)")
    args = ap.parse_args(argv)
    log = _bootstrap.setup_logging()
    if len(args.resolutions) != len(args.outputs):
        ap.error("give one output per resolution")
    source = json.loads(args.source)
    log.info("checksumming the raw files")
    source["files"] = {
        p.name: {"sha256": camels.sha256sum(p), "size": p.stat().st_size} for p in (args.maps, args.params)
    }
    out = prepare_dataset(
        args.maps,
        args.params,
        dict(zip(args.resolutions, args.outputs)),
        json.loads(args.split),
        log_floor=args.log_floor,
        method=args.downsample,
        source=source,
        norm_range=json.loads(args.norm_range),
        native_resolution=args.native_resolution,
        max_nonpositive_fraction=args.max_nonpositive_fraction,
    )
    log.info("wrote %s", out)
    return 0


if __name__ == "__main__":
    _bootstrap.run(main)
