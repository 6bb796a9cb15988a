"""Figures of the data stage: map gallery and power spectra (rule `plot_data`)."""

import argparse
import json
from pathlib import Path

import _bootstrap

from cosmodiff import plots


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", required=True, type=Path, help="prepared .h5 at the native resolution")
    ap.add_argument("--settings", required=True, help="JSON of config figures (cosmodiff.plots.data_figures)")
    ap.add_argument("--gallery", required=True, type=Path, help="output .png (a .pdf is written beside it)")
    ap.add_argument("--power-spectra", required=True, type=Path, help="output .png (a .pdf beside it)")
    args = ap.parse_args(argv)
    log = _bootstrap.setup_logging()
    gallery, spectra = plots.data_figures(args.data, json.loads(args.settings))
    plots.save(gallery, args.gallery)
    plots.save(spectra, args.power_spectra)
    log.info("wrote %s and %s", args.gallery, args.power_spectra)
    return 0


if __name__ == "__main__":
    _bootstrap.run(main)
