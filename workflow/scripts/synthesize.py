"""Write the embedded synthetic CMD-like data set in the CMD layout (rule `synthesize`)."""

import argparse
import json
import time
from pathlib import Path

import _bootstrap

from cosmodiff.synthetic import synthesize_cmd


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--settings", required=True, help="JSON of config data.synthetic")
    ap.add_argument("--resolution", type=int, required=True, help="pixels per side")
    ap.add_argument("--out-dir", required=True, type=Path, help="folder for the maps and the table")
    args = ap.parse_args(argv)
    log = _bootstrap.setup_logging()
    s = json.loads(args.settings)
    options = s["nbody"] if s["generator"] == "nbody" else {}
    t0 = time.perf_counter()
    settings = synthesize_cmd(
        args.out_dir,
        generator=s["generator"],
        n_sims=s["n_sims"],
        seed=s["seed"],
        resolution=args.resolution,
        omega_m_range=s["omega_m_range"],
        sigma_8_range=s["sigma_8_range"],
        options=options,
    )
    dt = time.perf_counter() - t0
    n_maps = 15 * s["n_sims"]
    log.info("wrote %d maps in %.1f s (%.1f maps/s): %s", n_maps, dt, n_maps / dt, settings)
    return 0


if __name__ == "__main__":
    _bootstrap.run(main)
