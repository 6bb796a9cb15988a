"""Generate fields at chosen parameter points from the selected checkpoint (rule `sample`)."""

import argparse
import json
import time
from pathlib import Path

import _bootstrap
import numpy as np

from cosmodiff.emulator import Emulator, write_samples
from cosmodiff.sampling import SamplerSettings
from cosmodiff.validation import choose_points, simulation_maps


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--selection", required=True, type=Path, help="select_checkpoint's .json")
    ap.add_argument("--data", required=True, type=Path, help="prepared .h5 (test split) at the native resolution")
    ap.add_argument("--settings", required=True, help="JSON of config sampling (SamplerSettings)")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--out", required=True, type=Path, help="samples .h5")
    args = ap.parse_args(argv)
    log = _bootstrap.setup(args.threads)
    settings = SamplerSettings.from_json(args.settings)
    checkpoint = json.loads(args.selection.read_text())["checkpoint"]
    emu = Emulator.from_checkpoint(checkpoint, **settings.emulator_kwargs())
    sims = choose_points(args.data, settings.n_points, settings.seed, split="test")
    points = [tuple(simulation_maps(args.data, s, "test")[1]) for s in sims] + list(settings.points)
    t0 = time.perf_counter()
    maps = [emu.sample(om, s8, settings.n_samples, settings, seed=settings.seed + i, progress=True)
            for i, (om, s8) in enumerate(points)]
    dt = time.perf_counter() - t0
    write_samples(args.out, np.stack(maps), np.array(points), {
        "checkpoint": checkpoint, **settings.attrs(), "evaluations_per_map": emu.evaluations(settings.sampler, settings.steps),
        "sims": [int(s) for s in sims] + [-1] * (len(points) - len(sims)), "seconds": dt,
    })
    log.info("%d points x %d maps in %.1f s (%.2f maps/s) from %s", len(points), settings.n_samples, dt,
             len(points) * settings.n_samples / dt, checkpoint)
    return 0


if __name__ == "__main__":
    _bootstrap.run(main)
