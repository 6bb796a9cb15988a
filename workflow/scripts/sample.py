"""Generate fields at chosen parameter points from the selected checkpoint (rule `sample`)."""

import argparse
import json
import time
from pathlib import Path

import _bootstrap
import numpy as np

from cosmodiff.emulator import Emulator, write_samples
from cosmodiff.validation import choose_points, simulation_maps


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--selection", required=True, type=Path, help="select_checkpoint's .json")
    ap.add_argument("--data", required=True, type=Path, help="prepared .h5 (test split) at the native resolution")
    _bootstrap.add_sampler_args(ap)
    ap.add_argument("--points", default="[]", help="JSON list of extra [Omega_m, sigma_8]")
    ap.add_argument("--out", required=True, type=Path, help="samples .h5")
    args = ap.parse_args(argv)
    log = _bootstrap.setup(args.threads)
    checkpoint = json.loads(args.selection.read_text())["checkpoint"]
    emu = Emulator.from_checkpoint(checkpoint, weights=args.weights, precision=args.precision)
    sims = choose_points(args.data, args.n_points, args.seed, split="test")
    points = [tuple(simulation_maps(args.data, s, "test")[1]) for s in sims] + [tuple(p) for p in json.loads(args.points)]
    t0 = time.perf_counter()
    maps = [emu.sample(om, s8, args.n_samples, args.sampler, args.steps, args.seed + i, args.batch_size, clip=bool(args.clip), progress=True,
                       spacing=args.spacing)
            for i, (om, s8) in enumerate(points)]
    dt = time.perf_counter() - t0
    write_samples(args.out, np.stack(maps), np.array(points), {
        "checkpoint": checkpoint, "sampler": args.sampler, "steps": args.steps, "spacing": args.spacing,
        "evaluations_per_map": emu.evaluations(args.sampler, args.steps), "seed": args.seed, "clip": args.clip,
        "weights": args.weights, "precision": args.precision,
        "sims": [int(s) for s in sims] + [-1] * (len(points) - len(sims)), "seconds": dt,
    })
    log.info("%d points x %d maps in %.1f s (%.2f maps/s) from %s", len(points), args.n_samples, dt,
             len(points) * args.n_samples / dt, checkpoint)
    return 0


if __name__ == "__main__":
    _bootstrap.run(main)
