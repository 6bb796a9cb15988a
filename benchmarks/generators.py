"""Benchmark: maps per second of each synthetic-data generator, side by side in one run.

    python benchmarks/generators.py [--resolution 256] [--sims 3]

Prints one row per generator setting: seconds per simulation (15 maps) and maps per second.
The lognormal row includes the per-cosmology halofit spectrum (pyccl) that the 15 maps of a
simulation share.
"""

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workflow"))

import numpy as np  # noqa: E402

from cosmodiff.synthetic import generate_maps, latin_hypercube, lognormal_spectrum  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--resolution", type=int, default=256, help="pixels per side")
    ap.add_argument("--sims", type=int, default=3, help="simulations per setting (different cosmologies)")
    args = ap.parse_args()
    table = latin_hypercube(args.sims, seed=0)
    settings = [
        ("lognormal", {}),
        ("nbody", {"n_particles": 32, "n_mesh": 32, "n_steps": 5, "a_start": 0.1}),
        ("nbody", {"n_particles": 64, "n_mesh": 128, "n_steps": 10, "a_start": 0.1}),
        ("nbody", {"n_particles": 128, "n_mesh": 128, "n_steps": 10, "a_start": 0.1}),
    ]
    generate_maps("lognormal", 0.3, 0.8, 0, resolution=32)  # imports and pyccl start-up
    print(f"{'generator':<10} {'settings':<56} {'s/sim':>8} {'maps/s':>8}")
    for gen, opts in settings:
        lognormal_spectrum.cache_clear()
        t0 = time.perf_counter()
        for i, (om, s8) in enumerate(table[:, :2]):
            maps = generate_maps(gen, om, s8, np.random.SeedSequence(i), resolution=args.resolution, **opts)
        dt = (time.perf_counter() - t0) / args.sims
        label = ", ".join(f"{k}={v}" for k, v in opts.items()) or "halofit per cosmology"
        print(f"{gen:<10} {label:<56} {dt:8.2f} {len(maps) / dt:8.1f}", flush=True)


if __name__ == "__main__":
    main()
