"""Pick the checkpoint of a stage with the lowest mean of a validation statistic (rule
`select_checkpoint`; config validation.select_by)."""

import argparse
import json
import re
from pathlib import Path

import _bootstrap
import pandas as pd

from cosmodiff import plots
from cosmodiff.validation import SELECT_BY, select


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--stage", required=True)
    ap.add_argument("--checkpoints", required=True, nargs="+", type=Path)
    ap.add_argument("--tables", required=True, nargs="+", type=Path, help="one .csv per checkpoint, same order")
    ap.add_argument("--select-by", default="chi2", choices=sorted(SELECT_BY), help="statistic whose lowest mean wins")
    ap.add_argument("--out", required=True, type=Path, help="choice .json")
    ap.add_argument("--summary", required=True, type=Path, help="summary .csv")
    ap.add_argument("--figure", required=True, type=Path, help=".png (+ .pdf)")
    args = ap.parse_args(argv)
    log = _bootstrap.setup_logging()
    if len(args.checkpoints) != len(args.tables):
        ap.error("give one table per checkpoint")
    tables = {
        str(c): (int(re.search(r"(\d+)\.pt$", c.name).group(1)), pd.read_csv(t)) for c, t in zip(args.checkpoints, args.tables)
    }
    choice, summary = select(tables, args.select_by)
    choice["stage"] = args.stage
    args.out.write_text(json.dumps(choice, indent=2) + "\n")
    summary.to_csv(args.summary, index=False)
    plots.save(plots.chi2_vs_iteration(summary, tables, title=args.stage, selected=choice["iteration"]), args.figure)
    log.info("selected %s\n%s", choice, summary.to_string())
    return 0


if __name__ == "__main__":
    _bootstrap.run(main)
