"""Fidelity against cost of the samplers on one stage's selected checkpoint (rule
`sampler_cost`; config sampler_cost): the validation statistics of each sampler setting at the
same points and seeds, with network evaluations and seconds per map."""

import argparse
import json
from pathlib import Path

import _bootstrap

from cosmodiff import plots
from cosmodiff.emulator import Emulator
from cosmodiff.files import atomic_output
from cosmodiff.sampling import SamplerSettings
from cosmodiff.validation import COST_COLUMNS, choose_points, sampler_costs


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--selection", required=True, type=Path, help="select_checkpoint's .json of the stage")
    ap.add_argument("--data", required=True, type=Path, help="prepared .h5 at the checkpoint's resolution")
    ap.add_argument("--settings", required=True, help="JSON of config validation with sampler_cost's points and maps (SamplerSettings)")
    ap.add_argument("--samplers", required=True, help="JSON list of [sampler, steps, spacing] (config sampler_cost.samplers)")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--table", required=True, type=Path, help="output .csv")
    ap.add_argument("--figure", required=True, type=Path, help="output .png (and .pdf beside it)")
    args = ap.parse_args(argv)
    log = _bootstrap.setup(args.threads)
    settings = SamplerSettings.from_json(args.settings)
    samplers = [tuple(s) for s in json.loads(args.samplers)]
    checkpoint = Path(json.loads(args.selection.read_text())["checkpoint"])
    emu = Emulator.from_checkpoint(checkpoint, **settings.emulator_kwargs())
    sims = choose_points(args.data, settings.n_points, settings.seed, fiducial=settings.fiducial)
    df = sampler_costs(emu, args.data, sims, settings, samplers, progress=True)
    with atomic_output(args.table) as tmp:
        df.to_csv(tmp, index=False)
    plots.save(plots.sampler_cost(df, title=f"({checkpoint.parent.name}, {checkpoint.stem})"), args.figure)
    log.info("%s\n%s", checkpoint, df[COST_COLUMNS].to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    return 0


if __name__ == "__main__":
    _bootstrap.run(main)
