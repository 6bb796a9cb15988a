"""benchmarks/gpu_check.py at a tiny size on the CPU (so that it cannot rot before a GPU runs
it), the work it projects for config/paper.yaml, and the SLURM profile's runtimes: those of a
dry run of the paper config through profiles/slurm are the projection's."""

import importlib.util
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from cosmodiff import costs
from cosmodiff.config import load_config

ROOT = Path(__file__).resolve().parents[1]
PAPER = load_config(ROOT / "config" / "paper.yaml")


def load_gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks" / "gpu_check.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_the_paper_work_per_job_is_the_authors_counts():
    work = costs.rule_work(PAPER)
    # the authors' scan: 100 x 100 grid points x timesteps 0..10, one noise draw
    assert work["posterior"] == [("bound", 256, 100 * 100 * 11)]
    # 10 validation points x 50 maps x 1000 ancestral steps, at 64^2 and at 256^2
    assert work["validate_checkpoint"] == [("eval", 64, 500_000), ("eval", 256, 500_000)]
    assert work["sample"] == [("eval", 256, 13 * 50 * 1000)]
    # not the authors': 4 points x 16 maps of ancestral (1000) + DDIM 50, 100 + DPM-Solver 25, 50 at 256^2
    assert work["sampler_cost"] == [("eval", 256, 4 * 16 * 1225)]
    assert work["pretrain"] == [("train", 64, 60_000)] and work["finetune"] == [("train", 256, 300_000)]
    full = {**PAPER["inference"], "estimator": "full", "n_noise": None}
    assert costs.evaluations_per_theta(full) == 16 + 3 * 8 + 6 * 4 + 10 * 2 + 80  # FULL_DRAWS below t_exact, 1 above


def test_projection_is_work_over_rate():
    thr = costs.Throughput(train_its={64: 10.0, 256: 2.0}, evals={64: 1000.0, 256: 100.0}, bound_evals={64: 1e3, 256: 200.0})
    sec = costs.project(PAPER, thr)
    assert sec["finetune"] == 300_000 / 2.0 and sec["pretrain"] == 60_000 / 10.0
    assert sec["validate_checkpoint"] == 500_000 / 100.0  # the slower (256^2) of its two kinds of job
    assert sec["posterior"] == 110_000 / 200.0
    assert costs.slurm_minutes(3600) == 90 and costs.slurm_minutes(1) == 30 and costs.slurm_minutes(1e9) == costs.MAX_RUNTIME


def profile_runtimes():
    return {r: v["runtime"] for r, v in yaml.safe_load((ROOT / "profiles/slurm/config.yaml").read_text())["set-resources"].items()}


def test_the_profile_runtimes_are_the_projection_of_the_paper_config():
    assumed = costs.project(PAPER, costs.assumed_throughput(PAPER))
    print("\nassumed projection of config/paper.yaml (h): " + ", ".join(f"{r} {s / 3600:.2f}" for r, s in assumed.items()))
    runtimes = profile_runtimes()
    assert {r: runtimes[r] for r in costs.GPU_RULES} == {r: costs.slurm_minutes(s) for r, s in assumed.items()}


@pytest.mark.workflow
def test_the_paper_dry_run_through_the_profile_requests_the_projection(tmp_path):
    pytest.importorskip("snakemake_executor_plugin_slurm")
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "--directory", str(tmp_path), "-n",
           "--profile", "profiles/slurm"]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-4000:]
    requested = {}
    for block in re.split(r"\n(?=rule \w+:)", out.stdout):
        m, res = re.match(r"rule (\w+):", block), re.search(r"^\s+resources: (.*)$", block, re.MULTILINE)
        if m and res and m.group(1) in costs.GPU_RULES:
            requested.setdefault(m.group(1), set()).add(int(dict(kv.split("=", 1) for kv in res.group(1).split(", "))["runtime"]))
    assumed = costs.project(PAPER, costs.assumed_throughput(PAPER))
    assert requested == {r: {costs.slurm_minutes(s)} for r, s in assumed.items()}


def test_gpu_check_runs_at_a_tiny_size_on_the_cpu(tmp_path, capsys):
    out = tmp_path / "check.csv"
    assert load_gpu_check().main(["--tiny", "--steps", "1", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    table = pd.read_csv(out)
    train = table[table.what == "train"]
    assert set(train.precision) == {"bf16", "fp32"} and set(train.layout) == {"contiguous", "channels_last"}
    assert (train.its_per_s > 0).all() and (train.tflop_per_it > 0).all()
    for what in ("sample_ancestral", "sample_dpm2m"):
        rows = table[table.what == what]
        assert len(rows) == 2 and (rows.samples_per_s > 0).all()  # pretraining and native resolutions
    assert (table[table.what == "bound"].evals_per_s > 0).all()
    proj = table[table.what == "projection"].set_index("rule")
    assert list(proj.index) == list(costs.GPU_RULES)
    assert all(math.isfinite(v) and v > 0 for v in proj.measured_h)
    assert (proj.profile_runtime_min == pd.Series(profile_runtimes())[proj.index]).all()
    assert "projection" in printed and "parameters" in printed
    print(printed)
