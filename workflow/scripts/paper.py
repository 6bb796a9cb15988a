"""The paper from a run's results (rule `paper`): generated includes and the PDF.

Writes <outdir>/generated/ (numbers.tex: every number and switch of the text; provenance.tex:
the line under each figure and the commit; one .tex per table), copies paper/main.tex beside
them and, unless the config says paper.pdf: false, builds main.pdf with latexmk or pdflatex.
Without a TeX engine it fails with a message saying what to install.
"""

import argparse
import json
import re
import shutil
from pathlib import Path

import _bootstrap
import h5py
import pandas as pd


def _iteration(path):
    return int(re.search(r"(\d+)\D*$", Path(path).stem).group(1))


def _data_counts(path):
    """split -> (maps, simulations), and the normalisation (min, max) of a prepared file."""
    with h5py.File(path, "r") as f:
        counts = {s: (len(f[s]["sim"]), len(set(f[s]["sim"][:].tolist()))) for s in ("train", "val", "test")}
        return counts, (float(f.attrs["norm_min"]), float(f.attrs["norm_max"]))


def _n_parameters(checkpoint):
    from cosmodiff.checkpoint import load_checkpoint
    from cosmodiff.unet import UNet, count_parameters

    return count_parameters(UNet.from_config(load_checkpoint(checkpoint)["model_config"]))


def read_results(args):
    """The run's results as cosmodiff.manuscript.write_sources takes them."""
    selections = {s: json.loads(p.read_text()) for s, p in zip(("pretrain", "finetune"), args.selections)}
    tables = {_iteration(p): p for p in args.validation}
    counts, norm = _data_counts(args.data)
    with h5py.File(args.samples, "r") as f:
        sampling_attrs = dict(f.attrs)
    return {
        "counts": counts, "norm": norm, "selections": selections,
        "summaries": {s: pd.read_csv(p) for s, p in zip(("pretrain", "finetune"), args.summaries)},
        "table": pd.read_csv(tables[selections["finetune"]["iteration"]]),
        "statistics": pd.read_csv(args.statistics), "sampling_attrs": sampling_attrs,
        "sampler_cost": pd.read_csv(args.sampler_cost),
        "inference": pd.read_csv(args.inference_summary).sort_values("field"),
        "coverage": json.loads(args.coverage.read_text()),
        "oracle": pd.read_csv(args.oracle) if args.oracle else None,
        "targets": pd.read_csv(args.targets) if args.targets else None,
        "comparison": pd.read_csv(args.comparison) if args.comparison else None,
        "ood": pd.read_csv(args.ood_summary) if args.ood_summary else None,
        "npe_sbc": json.loads(args.npe_sbc.read_text()) if args.npe_sbc else None,
        "n_params": _n_parameters(selections["finetune"]["checkpoint"]),
    }


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--main", required=True, type=Path, help="paper/main.tex")
    ap.add_argument("--data", required=True, type=Path, help="prepared .h5 at the native resolution")
    ap.add_argument("--selections", required=True, nargs=2, type=Path, help="selected.json of pretrain, finetune")
    ap.add_argument("--summaries", required=True, nargs=2, type=Path, help="summary.csv of pretrain, finetune")
    ap.add_argument("--validation", required=True, nargs="+", type=Path, help="the fine-tuned checkpoints' tables")
    ap.add_argument("--statistics", required=True, type=Path, help="plot_emulation's per-point table")
    ap.add_argument("--samples", required=True, type=Path, help="sample's .h5 (sampler attributes)")
    ap.add_argument("--sampler-cost", required=True, type=Path, help="sampler_cost's table .csv")
    ap.add_argument("--inference-summary", required=True, type=Path, help="calibration's summary.csv")
    ap.add_argument("--coverage", required=True, type=Path, help="calibration's coverage.json")
    ap.add_argument("--oracle", type=Path, default=None, help="oracle.csv, where the rule runs")
    ap.add_argument("--targets", type=Path, default=None, help="targets.csv, where likelihood_summary runs")
    ap.add_argument("--comparison", type=Path, default=None, help="rule comparison's table, where it runs")
    ap.add_argument("--ood-summary", type=Path, default=None, help="rule comparison's out-of-distribution summary")
    ap.add_argument("--npe-sbc", type=Path, default=None, help="rule npe's SBC .json")
    ap.add_argument("--config", required=True, help="the run's config as JSON")
    ap.add_argument("--flags", required=True, help="JSON: exact, oracle, diagnostic, summary, baselines (the rules' switches)")
    ap.add_argument("--figures", required=True, help="JSON: cosmodiff.manuscript.figure_list")
    ap.add_argument("--git", required=True, help="JSON: cosmodiff.manuscript.git_state of the workflow")
    ap.add_argument("--pdf", type=int, choices=[0, 1], required=True, help="1: build main.pdf (config paper.pdf)")
    ap.add_argument("--outdir", required=True, type=Path)
    ap.add_argument("--build-log", required=True, type=Path)
    args = ap.parse_args(argv)
    log = _bootstrap.setup_logging()
    from cosmodiff import manuscript

    switches = manuscript.write_sources(args.outdir, json.loads(args.config), json.loads(args.flags), json.loads(args.figures),
                                        json.loads(args.git), read_results(args))
    log.info("wrote %s, switches %s", args.outdir / "generated", switches)
    shutil.copyfile(args.main, args.outdir / "main.tex")
    if not args.pdf:
        args.build_log.write_text("paper.pdf: false in the config: wrote the TeX sources, no PDF\n")
        return 0
    try:
        out = manuscript.build_pdf(args.outdir)
    except (manuscript.TexMissing, RuntimeError) as err:
        args.build_log.write_text(f"{err}\n")
        log.error("%s", err)
        return 1
    args.build_log.write_text(out)
    log.info("built %s", args.outdir / "main.pdf")
    return 0


if __name__ == "__main__":
    _bootstrap.run(main)
