"""Is the network's bound the likelihood? (rule `likelihood_summary`): the targets table of
the selected checkpoint (network and exact denoiser at the same estimator settings, every
test field) and the convergence of every figure of merit over the stage's checkpoints."""

import argparse
import json
import re
import sys
from pathlib import Path

import _bootstrap
import pandas as pd


def _iteration(path):
    return int(re.search(r"(\d+)", Path(path).stem).group(1))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--network", required=True, type=Path, help="calibration's summary.csv (selected checkpoint)")
    ap.add_argument("--oracle", required=True, type=Path, help="oracle_scan's .csv (exact denoiser, same settings)")
    ap.add_argument("--selection", required=True, type=Path, help="select_checkpoint's .json")
    ap.add_argument("--convergence", required=True, nargs="+", type=Path, help="convergence_scan's ckpt_<it>.csv")
    ap.add_argument("--validation", required=True, nargs="+", type=Path, help="validate_checkpoint's ckpt_<it>.csv")
    ap.add_argument("--targets", required=True, type=Path, help="output .csv: a row per target and parameter")
    ap.add_argument("--table", required=True, type=Path, help="output .csv: a row per checkpoint")
    ap.add_argument("--figure", required=True, type=Path, help="output .png (and .pdf beside it)")
    args = ap.parse_args(argv)
    log = _bootstrap.setup_logging()
    from cosmodiff import plots
    from cosmodiff.diagnostics import TARGETS, emulation_metrics, posterior_metrics

    validation = {_iteration(p): pd.read_csv(p) for p in args.validation}
    selected = _iteration(json.loads(args.selection.read_text())["checkpoint"])
    network = posterior_metrics(pd.read_csv(args.network).to_dict("records"))
    oracle = posterior_metrics(pd.read_csv(args.oracle).to_dict("records"))
    emulation = emulation_metrics(validation[selected])
    rows = [
        {"target": desc, "param": p, "low": lo, "high": hi, "network": network[f"{p}_{name}"],
         "network_pass": network[f"{p}_{name}_pass"], "exact_denoiser": oracle[f"{p}_{name}"],
         "fields": network["n"], "oracle_fields": oracle["n"]}
        for name, desc, (lo, hi) in TARGETS for p in ("omega_m", "sigma_8")
    ]
    rows.append({"target": "worst chi2_log samples / simulations", "param": "field", "low": 0.0, "high": 1.3,
                 "network": emulation["worst_chi2_log_ratio"], "network_pass": emulation["worst_chi2_log_ratio"] <= 1.3})
    rows.append({"target": "mean |density z|", "param": "field", "low": 0.0, "high": 1.0,
                 "network": emulation["mean_abs_density_z"], "network_pass": emulation["mean_abs_density_z"] <= 1.0})
    targets = pd.DataFrame(rows).assign(checkpoint=selected)
    targets.to_csv(args.targets, index=False)
    conv = []
    for path in args.convergence:
        it = _iteration(path)
        m = posterior_metrics(pd.read_csv(path).to_dict("records"))
        conv.append({"iteration": it, **m, **emulation_metrics(validation[it])})
    conv = pd.DataFrame(conv).sort_values("iteration")
    conv.to_csv(args.table, index=False)
    plots.save(plots.likelihood_convergence(conv, TARGETS, oracle), args.figure)
    log.info("targets at checkpoint %d (%s):\n%s", selected, "all met" if targets["network_pass"].all() else "NOT all met",
             targets.round(3).to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
