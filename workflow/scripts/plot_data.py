"""Figures of the data stage: map gallery and power spectra (rule `plot_data`)."""

import argparse
from pathlib import Path

import _bootstrap

from cosmodiff import plots


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", required=True, type=Path, help="prepared .h5 at the native resolution")
    ap.add_argument("--columns", type=int, default=4, help="maps per row of the gallery")
    ap.add_argument("--maps-per-sim", type=int, default=15, help="maps averaged per simulation for P(k)")
    ap.add_argument("--gallery", required=True, type=Path, help="output .png (a .pdf is written beside it)")
    ap.add_argument("--power-spectra", required=True, type=Path, help="output .png (a .pdf beside it)")
    args = ap.parse_args(argv)
    log = _bootstrap.setup_logging()
    plots.save(plots.data_gallery(args.data, columns=args.columns), args.gallery)
    plots.save(plots.data_power_spectra(args.data, maps_per_sim=args.maps_per_sim), args.power_spectra)
    log.info("wrote %s and %s", args.gallery, args.power_spectra)
    return 0


if __name__ == "__main__":
    _bootstrap.run(main)
