"""The baselines comparison table and figures (rule `comparison`): exact posterior, diffusion
grid scan, cheap scan, NUTS and NPE on the same test fields, and the out-of-distribution sets."""

import argparse
import json
from pathlib import Path

import _bootstrap
import pandas as pd

from cosmodiff import plots
from cosmodiff.inference.calibration import METHODS, chain_agreement, comparison_table, ood_table
from cosmodiff.files import atomic_output
from cosmodiff.inference.grid import GridPosterior, splined


def _splined(paths, truths):
    """Summaries of grid posteriors (.h5) with their fine grid splined, so that the exact
    posterior and the grid scan carry no trapezoid error (the cheap scan splines its own)."""
    rows = []
    for p in paths:
        post, attrs = GridPosterior.from_hdf5(p)
        field = int(attrs["field"])
        rows.append({"field": field, **splined(post).summary(truth=truths[field])})
    return pd.DataFrame(rows)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--grid", required=True, type=Path, help="rule calibration's summary.csv (costs and truths)")
    ap.add_argument("--grid-posteriors", required=True, nargs="+", type=Path, help="rule posterior's field_<i>.h5")
    ap.add_argument("--exact", required=True, nargs="+", type=Path, help="field_<i>_exact.h5 of the fields")
    ap.add_argument("--local", required=True, nargs="+", type=Path, help="rule posterior_cheap's .json")
    ap.add_argument("--mcmc", default=[], nargs="*", type=Path, help="rule posterior_mcmc's .json")
    ap.add_argument("--npe", required=True, type=Path, help="rule npe's table .csv")
    ap.add_argument("--npe-calibration", required=True, type=Path, help="rule npe's SBC .json")
    ap.add_argument("--ood", required=True, type=Path, help="rule out_of_distribution's .csv")
    ap.add_argument("--threshold", required=True, type=float, help="the model check's |z| threshold")
    ap.add_argument("--table", required=True, type=Path)
    ap.add_argument("--ood-table", required=True, type=Path)
    ap.add_argument("--outdir", required=True, type=Path, help="figures folder")
    args = ap.parse_args(argv)
    log = _bootstrap.setup_logging()
    grid = pd.read_csv(args.grid)
    truths = {int(r.field): (r.omega_m_truth, r.sigma_8_truth) for r in grid.itertuples()}
    costs = grid.set_index("field")
    exact = _splined(args.exact, truths)
    exact["seconds"] = exact["field"].map(costs["exact_seconds"])
    scan = _splined(args.grid_posteriors, truths)
    scan["evaluations"], scan["seconds"] = scan["field"].map(costs["evaluations"]), scan["field"].map(costs["seconds"])
    methods = {"exact": exact.drop(columns="evaluations"), "grid": scan,
               "local": pd.DataFrame([json.loads(p.read_text()) for p in args.local])}
    if args.mcmc:
        methods["mcmc"] = pd.DataFrame([json.loads(p.read_text()) for p in args.mcmc])
    methods["npe"] = pd.read_csv(args.npe)
    table = comparison_table(methods, exact)
    if "mcmc" in methods:  # NUTS's cost per effective sample (of the worse parameter), its gradients,
        # and its agreement with the grid posterior of the same U
        for col in ("evaluations_per_ess", "gradient_evaluations"):
            table.loc[METHODS["mcmc"], col] = float(methods["mcmc"][col].median())
        for col, value in chain_agreement(methods["mcmc"]).items():
            table.loc[METHODS["mcmc"], col] = value
    sbc = json.loads(args.npe_calibration.read_text())
    with atomic_output(args.table) as tmp:
        table.to_csv(tmp, index_label="method")
    ood = pd.read_csv(args.ood)
    ood_summary = ood_table(ood)
    with atomic_output(args.ood_table) as tmp:
        ood_summary.to_csv(tmp, index=False)
    plots.save(plots.comparison_figure(methods, exact), args.outdir / "baselines_comparison.png")
    plots.save(plots.ood_figure(ood, args.threshold), args.outdir / "out_of_distribution.png")
    with pd.option_context("display.width", 250, "display.max_columns", 40):
        log.info("comparison:\n%s\nNPE's SBC: %s\nout of distribution:\n%s", table.round(3), json.dumps(sbc),
                 ood_summary.round(3))
    return 0


if __name__ == "__main__":
    _bootstrap.run(main)
