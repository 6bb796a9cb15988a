"""Wall time of every workflow rule of a run, from the files of Snakemake's `benchmark:`
directives (results/<run>/benchmarks/<rule>[/<job>].tsv).

    python benchmarks/rule_times.py results/demo

Prints one row per rule: jobs, summed wall time, longest job, peak resident memory. The sum
is CPU-side work, not the elapsed time of the run (jobs may have run side by side).
"""

import argparse
import sys
from pathlib import Path

import pandas as pd


def rule_times(run_dir):
    """DataFrame (rule, jobs, total_s, longest_s, max_rss_mb) of a run's benchmark files."""
    root = Path(run_dir) / "benchmarks"
    if not root.is_dir():
        raise SystemExit(f"no {root}: run the workflow first (every rule writes a benchmark file there)")
    rows = []
    for path in sorted(root.rglob("*.tsv")):
        rule = path.relative_to(root).parts[0].removesuffix(".tsv")
        bench = pd.read_csv(path, sep="\t")
        rss = pd.to_numeric(bench.get("max_rss", pd.Series(dtype=float)), errors="coerce")
        rows.append({"rule": rule, "s": float(bench["s"].iloc[-1]), "rss": rss.max()})
    df = pd.DataFrame(rows)
    if df.empty:
        raise SystemExit(f"{root} holds no benchmark files yet")
    return (
        df.groupby("rule", sort=False)
        .agg(jobs=("s", "size"), total_s=("s", "sum"), longest_s=("s", "max"), max_rss_mb=("rss", "max"))
        .reset_index()
    )


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir", type=Path, help="results/<run>")
    args = ap.parse_args(argv)
    table = rule_times(args.run_dir)
    total = table["total_s"].sum()
    print(table.round(1).to_string(index=False))
    print(f"sum over rules: {total / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
