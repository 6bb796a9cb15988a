"""The Snakemake workflow: dry runs of every config, the smoke data stage for real, downloads
through the `download` rule from a local HTTP server, local folders, reruns after edits."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml
from conftest import smoke_config

from cosmodiff import camels, synthetic

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.workflow


def snakemake(*args, cwd, check=True, path=None):
    """Run snakemake with this interpreter; ``path``: the whole PATH (default: the venv's bin
    first, then the caller's)."""
    path = path or f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    env = dict(os.environ, PATH=path, MPLBACKEND="Agg")
    cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "--directory", str(cwd), *args]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if check and out.returncode:
        raise AssertionError(f"snakemake failed ({out.returncode}):\n{out.stdout[-3000:]}\n{out.stderr[-6000:]}")
    return out


def write_config(path, **changes):
    """A copy of config/smoke.yaml with nested changes given as dotted keys."""
    path.write_text(yaml.safe_dump(smoke_config(**changes)))
    return path


def planned_jobs(out):
    """Rule -> count from the job-stats table of a dry run."""
    lines = out.stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("job ") and "count" in line)
    jobs = {}
    for line in lines[start + 2 :]:
        parts = line.split()
        if len(parts) != 2 or parts[0] == "total":
            break
        jobs[parts[0]] = int(parts[1])
    return jobs


EMULATE = {"select_checkpoint": 2, "sample": 1, "plot_emulation": 1, "sampler_cost": 1, "pretrain": 1, "finetune": 1,
           "prepare": 1, "plot_data": 1, "paper": 1}


BENCH_MCMC_FIELDS = yaml.safe_load((ROOT / "config/bench.yaml").read_text())["baselines"]["mcmc_fields"]


@pytest.mark.parametrize(
    "name,expected",
    [
        # one validation job per checkpoint: demo 4 + 1, smoke 2 + 2, paper 15 + 75 (every 4,000)
        # ... and one posterior job per field: demo 10, smoke 2, paper 10 (validation fields)
        # ... and the exact-denoiser check where the data are lognormal (demo only)
        ("config", {"synthesize": 1, "validate_checkpoint": 5, "posterior": 10, "calibration": 1, "oracle": 1,
                    "likelihood_diagnostic": 1, **EMULATE}),
        # the bench: 4 + 1 checkpoints, 50 fields, the diagnostic, a convergence scan per
        # pretraining checkpoint, the exact denoiser's scans and the targets table; the
        # baselines: a cheap scan per field, NUTS on baselines.mcmc_fields, NPE, the shifted
        # fields, the table
        ("bench", {"synthesize": 1, "validate_checkpoint": 5, "posterior": 50, "calibration": 1, "oracle": 1,
                   "likelihood_diagnostic": 1, "convergence_scan": 4, "oracle_scan": 1, "likelihood_summary": 1,
                   "posterior_cheap": 50, "posterior_mcmc": BENCH_MCMC_FIELDS, "npe": 1, "out_of_distribution": 1, "comparison": 1,
                   **EMULATE}),
        ("smoke", {"synthesize": 1, "validate_checkpoint": 4, "posterior": 2, "calibration": 1, **EMULATE}),
        ("paper", {"download": 2, "validate_checkpoint": 90, "posterior": 10, "calibration": 1, **EMULATE}),
    ],
)
def test_dry_run_of_every_config(tmp_path, name, expected):
    out = snakemake("-n", "--configfile", str(ROOT / f"config/{name}.yaml"), cwd=tmp_path)
    jobs = planned_jobs(out)
    assert {k: v for k, v in jobs.items() if k != "all"} == expected


VARIANTS = sorted(p.name for p in (ROOT / "config").glob("paper+*.yaml"))


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_variant_of_the_paper_config_dry_runs_as_an_overlay(tmp_path, variant):
    """`--configfile config/paper.yaml config/paper+X.yaml`: Snakemake updates the first file
    with the second key by key; the plan is that of the merged config, in its own run folder."""
    from cosmodiff.config import load_config
    from cosmodiff.layout import checkpoint_iterations

    paper, merged = load_config(ROOT / "config/paper.yaml"), load_config(ROOT / "config/paper.yaml", ROOT / "config" / variant)
    assert merged["run"] != paper["run"] and merged != {**paper, "run": merged["run"]}
    out = snakemake("-n", "--configfile", str(ROOT / "config/paper.yaml"), str(ROOT / "config" / variant), cwd=tmp_path)
    assert f"results/{merged['run']}/" in out.stdout and "results/paper/" not in out.stdout
    jobs = planned_jobs(out)
    n_ckpt = sum(len(checkpoint_iterations(merged[s]["iterations"], merged[s]["checkpoint_every"])) for s in ("pretrain", "finetune"))
    assert (jobs["posterior"], jobs["validate_checkpoint"]) == (merged["inference"]["n_fields"], n_ckpt)


@pytest.mark.parametrize(
    "overlays,option",
    [
        ([], "--init results/paper/models/pretrain/ckpt_0060000.pt"),  # the authors': the last 64^2 checkpoint
        (["config/paper+ours.yaml"], "--init-selection results/paper-ours/validation/pretrain/selected.json"),
    ],
)
def test_finetune_starts_from_the_checkpoint_finetune_init_names(tmp_path, overlays, option):
    from cosmodiff.config import load_config

    run = load_config(ROOT / "config/paper.yaml", *[ROOT / o for o in overlays])["run"]
    # the target first: --configfile takes every word after it
    out = snakemake(f"results/{run}/models/finetune/metrics.jsonl", "-n", "-p", "--configfile",
                    str(ROOT / "config/paper.yaml"), *[str(ROOT / o) for o in overlays], cwd=tmp_path)
    command = next(line for line in out.stdout.splitlines() if "--stage finetune" in line)
    assert option in command


def test_bad_config_stops_the_run_with_the_key_named(tmp_path):
    cfg = write_config(tmp_path / "bad.yaml", **{"data.resolution": 100})
    out = snakemake("-n", "--configfile", str(cfg), cwd=tmp_path, check=False)
    assert out.returncode != 0
    assert "config key 'data.resolution': 100 is not allowed; expected a power of two" in out.stdout + out.stderr


def has_tex():
    """A TeX engine and poppler-utils (the PDF's checks). Without them the smoke run builds the
    paper's sources only (paper.pdf: false) and the PDF tests are skipped, unless
    COSMODIFF_REQUIRE_TEX=1 makes that a failure (CI, where `make test` installs TeX)."""
    from cosmodiff.manuscript import tex_engine

    found = bool(tex_engine() and shutil.which("pdftotext") and shutil.which("pdfimages"))
    if not found and os.environ.get("COSMODIFF_REQUIRE_TEX") == "1":
        raise AssertionError("COSMODIFF_REQUIRE_TEX=1 but latexmk/pdflatex or poppler-utils is missing")
    return found


needs_tex = pytest.mark.skipif(not has_tex(), reason="no TeX engine or poppler-utils: install latexmk "
                               "texlive-latex-recommended texlive-fonts-recommended poppler-utils (`make test` does, as root)")


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    """The whole smoke config for real (particle-mesh maps, 64^2 and 16^2), paper included."""
    wd = tmp_path_factory.mktemp("smoke")
    cfg = ROOT / "config/smoke.yaml" if has_tex() else write_config(wd / "smoke_notex.yaml", **{"paper.pdf": False})
    snakemake("--cores", "2", "--configfile", str(cfg), cwd=wd)
    return wd


def test_smoke_data_stage_outputs(smoke_run):
    run = smoke_run / "results/smoke"
    for f in ["figures/data_gallery.png", "figures/data_gallery.pdf", "figures/data_power_spectra.png", "figures/data_power_spectra.pdf"]:
        assert (run / f).stat().st_size > 1000, f
    for log in ["synthesize", "prepare", "plot_data"]:
        assert (run / f"logs/{log}.log").exists()
    with h5py.File(run / "data/prepared_64.h5") as f:
        assert f["train"]["maps"].shape == (90, 64, 64)
        assert f["val"]["maps"].shape == (45, 64, 64) and f["test"]["maps"].shape == (45, 64, 64)
        # mass identity survives the whole chain: mean of a simulation's 15 maps (log floor
        # aside, which the particle-mesh maps at this size barely touch)
        maps = 10.0 ** f["train"]["maps"][:15].astype(np.float64)
        om = f["train"]["params"][0, 0]
        assert maps.mean() == pytest.approx(1.3877e12 * (om - 0.049), rel=0.01)
        assert '"generator": "nbody"' in f.attrs["source"]
    with h5py.File(run / "data/prepared_16.h5") as f:
        assert f["test"]["maps"].shape == (45, 16, 16)


def test_smoke_training_stages(smoke_run):
    from cosmodiff.checkpoint import load_checkpoint

    models = smoke_run / "results/smoke/models"
    assert sorted(p.name for p in (models / "pretrain").glob("*.pt")) == ["ckpt_0000003.pt", "ckpt_0000006.pt"]
    assert sorted(p.name for p in (models / "finetune").glob("*.pt")) == ["ckpt_0000002.pt", "ckpt_0000004.pt"]
    pre = load_checkpoint(models / "pretrain/ckpt_0000006.pt")
    ft = load_checkpoint(models / "finetune/ckpt_0000004.pt")
    assert (pre["resolution"], ft["resolution"]) == (16, 64)
    # both stages share the native resolution's normalisation
    with h5py.File(smoke_run / "results/smoke/data/prepared_64.h5") as f:
        assert pre["normalisation"] == ft["normalisation"] == [f.attrs["norm_min"], f.attrs["norm_max"]]
    assert len((models / "finetune/metrics.jsonl").read_text().splitlines()) == 4
    assert (smoke_run / "results/smoke/figures/loss_finetune.png").exists()
    # the resumable state lives outside the declared outputs
    assert (smoke_run / "results/smoke/state/pretrain/state.pt").exists()


def test_smoke_emulation_and_paper(smoke_run):
    run = smoke_run / "results/smoke"
    for stage, n in (("pretrain", 2), ("finetune", 2)):
        assert len(list((run / f"validation/{stage}").glob("ckpt_*.csv"))) == n
        choice = json.loads((run / f"validation/{stage}/selected.json").read_text())
        assert choice["stage"] == stage and Path(choice["checkpoint"]).name.startswith("ckpt_")
    for name in ("maps", "power", "pdf", "peaks", "response"):
        assert (run / f"figures/emulation_{name}.png").stat().st_size > 1000
    numbers = (run / "paper/generated/numbers.tex").read_text()
    assert "\\csname cd@val_chi2_samples\\endcsname" in numbers and "\\csname cd@run\\endcsname{smoke}" in numbers
    assert "\\newif\\ifnbody\\nbodytrue" in numbers and "\\newif\\ifexact\\exactfalse" in numbers
    for table in ("chi2", "checkpoints", "inference", "coverage"):
        assert "\\midrule" in (run / f"paper/generated/{table}_table.tex").read_text(), table
    assert not (run / "paper/generated/oracle_table.tex").exists()  # particle-mesh data: no oracle rule


def test_smoke_inference(smoke_run):
    import pandas as pd

    run = smoke_run / "results/smoke"
    df = pd.read_csv(run / "inference/summary.csv")
    assert df["field"].tolist() == [0, 1] and (df["evaluations"] > 0).all()
    assert {"omega_m_mean", "omega_m_std", "omega_m_lo68", "sigma_8_hi95", "omega_m_z"} <= set(df.columns)
    cov = json.loads((run / "inference/coverage.json").read_text())
    assert cov["n"] == 2 and 0 <= cov["omega_m_coverage68"] <= 1
    assert (run / "figures/inference_calibration.png").stat().st_size > 1000


def test_report_has_every_figure(smoke_run):
    import zipfile

    snakemake("--report", "report.zip", "--configfile", str(ROOT / "config/smoke.yaml"), cwd=smoke_run)
    names = zipfile.ZipFile(smoke_run / "report.zip").namelist()
    for fig in ("data_gallery", "data_power_spectra", "loss_pretrain", "chi2_finetune", "emulation_power"):
        assert any(n.endswith(f"{fig}.png") for n in names), fig


def test_rerun_after_a_config_edit_touches_only_what_changed(smoke_run, tmp_path):
    out = snakemake("-n", "--configfile", str(ROOT / "config/smoke.yaml"), cwd=smoke_run)
    assert "Nothing to be done" in out.stdout + out.stderr
    cfg = write_config(tmp_path / "edit.yaml", **{"prepare.downsample": "area"})
    jobs = planned_jobs(snakemake("-n", "--configfile", str(cfg), cwd=smoke_run))
    assert "synthesize" not in jobs and jobs["prepare"] == 1 and jobs["plot_data"] == 1
    assert jobs["pretrain"] == jobs["finetune"] == 1  # new data: retrain
    cfg = write_config(tmp_path / "edit2.yaml", **{"figures.gallery_columns": 4})
    jobs = planned_jobs(snakemake("-n", "--configfile", str(cfg), cwd=smoke_run))
    assert "prepare" not in jobs and "pretrain" not in jobs and jobs["plot_data"] == 1
    cfg = write_config(tmp_path / "edit3.yaml", **{"finetune.lr": 5.0e-5})
    jobs = planned_jobs(snakemake("-n", "--configfile", str(cfg), cwd=smoke_run))
    assert "pretrain" not in jobs and jobs["finetune"] == 1 and "prepare" not in jobs
    # a sampling setting reruns exactly sampling and what depends on it, not training
    cfg = write_config(tmp_path / "edit4.yaml", **{"sampling.steps": 4})
    jobs = planned_jobs(snakemake("-n", "--configfile", str(cfg), cwd=smoke_run))
    assert set(jobs) - {"all"} == {"sample", "plot_emulation", "paper"}, jobs
    # the selection criterion reruns the selections and what follows them, not the pretraining
    # or its validation jobs (only the fine-tuned checkpoints, which are new, are validated)
    cfg = write_config(tmp_path / "edit6.yaml", **{"validation.select_by": "chi2"})
    jobs = planned_jobs(snakemake("-n", "--configfile", str(cfg), cwd=smoke_run))
    assert "pretrain" not in jobs and jobs["select_checkpoint"] == 2 and jobs["finetune"] == 1, jobs
    assert jobs["validate_checkpoint"] == 2, jobs
    # the validation sampler's grid reruns every validation job, not the training
    cfg = write_config(tmp_path / "edit7.yaml", **{"validation.spacing": "edm"})
    jobs = planned_jobs(snakemake("-n", "--configfile", str(cfg), cwd=smoke_run))
    assert "pretrain" not in jobs and jobs["validate_checkpoint"] == 4, jobs
    # the sampler-cost list reruns that table and the paper, nothing else
    cfg = write_config(tmp_path / "edit8.yaml", **{"sampler_cost.samplers": [["ddim", 4, "linear"]]})
    jobs = planned_jobs(snakemake("-n", "--configfile", str(cfg), cwd=smoke_run))
    assert {k: v for k, v in jobs.items() if k != "all"} == {"sampler_cost": 1, "paper": 1}, jobs
    # one more inference field runs that field and the calibration, not the existing fields
    cfg = write_config(tmp_path / "edit5.yaml", **{"inference.n_fields": 3})
    jobs = planned_jobs(snakemake("-n", "--configfile", str(cfg), cwd=smoke_run))
    assert {k: v for k, v in jobs.items() if k != "all"} == {"posterior": 1, "calibration": 1, "paper": 1}, jobs


def pdf_text(pdf):
    """The PDF's text, whitespace collapsed (table rows keep their cell order)."""
    out = subprocess.run(["pdftotext", "-layout", str(pdf), "-"], capture_output=True, text=True, check=True).stdout
    # pdftotext may read the Omega glyph as the Ohm sign (U+2126): one letter for the tests
    return " ".join(out.replace("\u2126", "\u03a9").split())


def pdf_images(pdf):
    """Raster images in a PDF (`pdfimages -list`; an alpha channel is listed apart as an smask)."""
    out = subprocess.run(["pdfimages", "-list", str(pdf)], capture_output=True, text=True, check=True).stdout
    return sum(line.split()[2] == "image" for line in out.splitlines()[2:])


def as_text(value):
    """How cosmodiff.manuscript.fmt prints a number, as pdftotext reads it back."""
    from cosmodiff.manuscript import fmt

    return fmt(value).replace("{,}", ",").strip("$").split("\\times")[0]


NO_OPTIONAL_RULES = {"exact": False, "oracle": False, "diagnostic": False, "summary": False}


@needs_tex
def test_smoke_paper_has_every_figure_the_generated_numbers_and_the_commit(smoke_run):
    """The smoke run's PDF: 6-10 pages, one image per figure of cosmodiff.manuscript.figure_list
    (13 on particle-mesh data), each with its provenance line; the chi-squared and coverage
    numbers of the run's result files; the workflow's commit on the title page."""
    import pandas as pd

    from cosmodiff import manuscript as ms

    run = smoke_run / "results/smoke"
    pdf = run / "paper/main.pdf"
    info = subprocess.run(["pdfinfo", str(pdf)], capture_output=True, text=True, check=True).stdout
    pages = int(next(line.split()[1] for line in info.splitlines() if line.startswith("Pages:")))
    assert 6 <= pages <= 10, pages
    figures = ms.figure_list(yaml.safe_load((ROOT / "config/smoke.yaml").read_text()), **NO_OPTIONAL_RULES)
    assert pdf_images(pdf) == len(figures) == 14
    text = pdf_text(pdf)
    for f in figures:
        assert f"made by rule {f['rule']}" in text and f["hash"] in text, f
    # the chi-squared table's mean row: the selected fine-tuned checkpoint's validation table
    sel = json.loads((run / "validation/finetune/selected.json").read_text())
    table = pd.read_csv(run / "validation/finetune" / Path(sel["checkpoint"]).with_suffix(".csv").name)
    means = " ".join(as_text(table[c].mean()) for c in ("chi2_samples", "chi2_sims", "chi2_log_samples", "chi2_log_sims"))
    assert f"mean {means}" in text, means
    # the coverage table: fraction of truths in the 68% and 95% intervals, mean z
    cov = json.loads((run / "inference/coverage.json").read_text())
    for p, sym in (("omega_m", "Ωm"), ("sigma_8", "σ8")):
        row = f"{sym} {as_text(cov[p + '_coverage68'])} {as_text(cov[p + '_coverage95'])} {cov[p + '_mean_z']:+.2f}"
        assert row in text, row
    git = ms.git_state(ROOT)
    if git["commit"]:
        assert git["commit"] in text and ("dirty" in text) == git["dirty"]
    assert "particle-mesh" in text and "No exact likelihood exists" in text  # the text follows the data


@needs_tex
def test_a_config_edit_rebuilds_the_paper_with_the_new_hash(smoke_run, tmp_path):
    """A figure setting reruns its rule and the paper, nothing else; the PDF then carries the
    figures' new config hash, and the untouched figures keep theirs."""
    from cosmodiff import manuscript as ms

    wd = tmp_path / "run"
    shutil.copytree(smoke_run, wd, symlinks=True)  # keeps mtimes and .snakemake's records
    pdf = wd / "results/smoke/paper/main.pdf"
    before = pdf.stat().st_mtime_ns
    cfg = write_config(tmp_path / "edit.yaml", **{"figures.gallery_columns": 4})
    jobs = planned_jobs(snakemake("-n", "--configfile", str(cfg), cwd=wd))
    assert set(jobs) - {"all"} == {"plot_data", "paper"}, jobs
    snakemake("--cores", "2", "--configfile", str(cfg), cwd=wd)
    assert pdf.stat().st_mtime_ns > before
    old = {f["name"]: f["hash"] for f in ms.figure_list(yaml.safe_load((ROOT / "config/smoke.yaml").read_text()), **NO_OPTIONAL_RULES)}
    new = {f["name"]: f["hash"] for f in ms.figure_list(yaml.safe_load(cfg.read_text()), **NO_OPTIONAL_RULES)}
    assert {n for n in old if old[n] != new[n]} == {"data_gallery", "data_power_spectra"}
    text = pdf_text(pdf)
    assert new["data_gallery"] in text and old["data_gallery"] not in text
    assert old["emulation_maps"] in text and old["inference_posteriors"] in text
    out = snakemake("-n", "--configfile", str(cfg), cwd=wd)
    assert "Nothing to be done" in out.stdout + out.stderr


def _path_without(tmp_path, names):
    """A PATH of one folder linking every program of this PATH but ``names``."""
    farm = tmp_path / "bin"
    farm.mkdir()
    for d in os.environ["PATH"].split(os.pathsep):
        if not os.path.isdir(d):
            continue
        for exe in Path(d).iterdir():
            if exe.name not in names and not (farm / exe.name).exists():
                (farm / exe.name).symlink_to(exe)
    return str(farm)


@needs_tex
def test_without_tex_the_paper_fails_saying_what_to_install_unless_the_pdf_is_off(smoke_run, tmp_path):
    wd = tmp_path / "run"
    shutil.copytree(smoke_run, wd, symlinks=True)
    path = _path_without(tmp_path, {"latexmk", "pdflatex"})
    out = snakemake("--cores", "1", "-R", "paper", "--configfile", str(ROOT / "config/smoke.yaml"), cwd=wd, check=False, path=path)
    assert out.returncode != 0
    assert "apt-get install latexmk texlive-latex-recommended" in out.stderr, out.stderr[-3000:]
    cfg = write_config(tmp_path / "nopdf.yaml", **{"paper.pdf": False})  # asked for explicitly: the sources only
    snakemake("--cores", "1", "--configfile", str(cfg), cwd=wd, path=path)
    assert "no PDF" in (wd / "results/smoke/paper/build.log").read_text()


def test_rules_run_with_the_interpreter_of_snakemake_not_the_first_python_on_path(tmp_path):
    """`.venv/bin/snakemake` with no venv activated: a `python` (or `torchrun`) first on PATH that
    is not Snakemake's must not be the one the rules call."""
    fake = tmp_path / "fake"
    fake.mkdir()
    for name in ("python", "torchrun"):
        (fake / name).write_text("#!/bin/sh\necho 'not the interpreter running snakemake' >&2\nexit 97\n")
        (fake / name).chmod(0o755)
    path = os.pathsep.join([str(fake), "/usr/local/bin", "/usr/bin", "/bin"])
    out = snakemake("results/smoke/data/raw/synthetic.json", "--cores", "1", "--configfile", str(ROOT / "config/smoke.yaml"),
                    cwd=tmp_path / "wd", path=path)
    assert (tmp_path / "wd/results/smoke/data/raw/synthetic.json").exists(), out.stderr[-2000:]


# One output of each kind of job of the smoke run. Snakemake deletes a job's declared outputs
# before the job starts and every job writes through a temporary name, so a job killed by
# SIGTERM then SIGKILL at any moment leaves exactly this: its outputs missing, the rest there.
KILLED = {
    "prepare": "data/prepared_16.h5",
    "plot_data": "figures/data_gallery.png",
    "pretrain": "models/pretrain/ckpt_0000003.pt",
    "validate_checkpoint": "validation/pretrain/ckpt_0000003.csv",
    "select_checkpoint": "validation/pretrain/summary.csv",
    "finetune": "models/finetune/metrics.jsonl",
    "sample": "samples/samples.h5",
    "plot_emulation": "samples/statistics.csv",
    "sampler_cost": "validation/sampler_cost.csv",
    "posterior": "inference/field_1.h5",
    "calibration": "inference/coverage.json",
    "paper": "paper/main.tex",
}


@pytest.mark.parametrize("rule", KILLED)
def test_plain_rerun_plans_a_killed_job(smoke_run, tmp_path, rule):
    """Issue 15, case 3: every target rule lists the outputs it stands for, so the plain
    command rebuilds whatever a killed job left missing (samples.h5 used to stay missing:
    "Nothing to be done")."""
    lost = smoke_run / "results/smoke" / KILLED[rule]
    kept = tmp_path / lost.name
    lost.rename(kept)
    try:
        out = snakemake("-n", "--configfile", str(ROOT / "config/smoke.yaml"), cwd=smoke_run)
    finally:
        kept.rename(lost)
    assert "Nothing to be done" not in out.stdout + out.stderr
    assert planned_jobs(out).get(rule, 0) >= 1, out.stdout[-3000:]  # with what depends on it


def test_plain_rerun_rebuilds_the_samples_of_a_killed_sample_job(smoke_run):
    samples = smoke_run / "results/smoke/samples/samples.h5"
    samples.unlink()
    snakemake("--cores", "2", "--configfile", str(ROOT / "config/smoke.yaml"), cwd=smoke_run)
    with h5py.File(samples) as f:
        assert f["maps"].shape[:2] == (4, 3)
    assert "Nothing to be done" in snakemake("-n", "--configfile", str(ROOT / "config/smoke.yaml"), cwd=smoke_run).stdout


def test_a_given_config_is_validated_alone(tmp_path):
    """Issue 15, case 6: a --configfile that lacks a key used to inherit the demo's value."""
    config = yaml.safe_load((ROOT / "config/smoke.yaml").read_text())
    del config["oracle"]
    del config["prepare"]["downsample"]
    (tmp_path / "partial.yaml").write_text(yaml.safe_dump(config))
    out = snakemake("-n", "--configfile", str(tmp_path / "partial.yaml"), cwd=tmp_path, check=False)
    text = out.stdout + out.stderr
    assert out.returncode != 0
    assert "config key 'oracle' is missing" in text and "config key 'prepare.downsample' is missing" in text
    assert "config.yaml is extended" not in text  # the demo config was not read


def test_oracle_rule_checks_the_bound_against_the_exact_posterior(tmp_path):
    """On lognormal data the `oracle` rule needs no training: synthesize, prepare, then the
    exact denoiser in the potential. The noise-free bound reproduces the exact posterior
    (demo, 3 fields at 64^2: shifts <= 0.014 sigma, widths within 1.2%); here 16^2 fields
    from 64^2 maps, one field."""
    import pandas as pd

    cfg = write_config(tmp_path / "oracle.yaml", **{
        "run": "oracle", "data.synthetic.generator": "lognormal", "data.synthetic.n_sims": 12, "prepare.log_floor": 1e4,
        "oracle.n_fields": 1, "oracle.n_grid": 7,
    })
    snakemake("results/oracle/inference/oracle.csv", "--cores", "2", "--configfile", str(cfg), cwd=tmp_path)
    run = tmp_path / "results/oracle"
    assert not (run / "models").exists()  # nothing was trained
    df = pd.read_csv(run / "inference/oracle.csv").set_index("method")
    assert list(df.index) == ["exact", "bound", "full", "full, default", "truncated"]
    bound = df.loc["bound"]
    assert abs(bound["shift_omega_m"]) < 0.15 and abs(bound["shift_sigma_8"]) < 0.15, bound
    assert abs(bound["width_omega_m"] - 1) < 0.05 and abs(bound["width_sigma_8"] - 1) < 0.05, bound
    assert df.loc["exact", "kl"] == 0 and df.loc["full", "evaluations"] < df.loc["full, default", "evaluations"] == 164 * 49
    assert (run / "figures/inference_oracle.png").stat().st_size > 1000
    assert (run / "figures/inference_oracle.pdf").exists()


def test_likelihood_diagnostics_on_a_tiny_lognormal_run(tmp_path):
    """The diagnose target end to end on a smoke-sized lognormal run: a (barely trained)
    network against the exact posterior and the exact denoiser. Checks the tables' shapes
    and the physics that holds whatever the network: the exact denoiser at the network's
    estimator settings stays near the exact posterior; the per-band shifts of a field add up
    to its total."""
    import pandas as pd

    from cosmodiff.diagnostics import T_EDGES, TARGETS

    cfg = write_config(tmp_path / "diag.yaml", **{
        "run": "diag", "data.synthetic.generator": "lognormal", "data.synthetic.n_sims": 12, "prepare.log_floor": 1e4,
        "prepare.norm_range": [8.5, 12.5], "model.conditioning": "scale_shift",
        "diagnostics.n_fields": 1, "diagnostics.convergence_fields": 1, "diagnostics.oracle_fields": 2,
    })
    snakemake("diagnose", "--cores", "2", "--configfile", str(cfg), cwd=tmp_path)
    inf = tmp_path / "results/diag/inference"
    score = pd.read_csv(inf / "diagnostic_score.csv")
    assert len(score) == 2 * (len(T_EDGES) - 1) and set(score["param"]) == {"omega_m", "sigma_8"}
    assert score[["grad_oracle", "exact_grad", "exact_sigma"]].notna().all().all()
    # the oracle's bands add up to (nearly) the exact score: in exact sigmas, within 0.3
    tot = score.groupby("param")[["grad_oracle", "exact_grad", "exact_sigma"]].agg(
        {"grad_oracle": "sum", "exact_grad": "first", "exact_sigma": "first"})
    assert ((tot["grad_oracle"] - tot["exact_grad"]).abs() * tot["exact_sigma"] < 0.3).all(), tot
    excess = pd.read_csv(inf / "diagnostic_excess.csv")
    assert set(excess["k_band"]) >= {"DC"} and (excess["oracle_nats"] >= 0).all()
    targets = pd.read_csv(inf / "targets.csv")
    assert len(targets) == 2 * len(TARGETS) + 2 and targets["network"].notna().all()
    oracle = targets.dropna(subset=["exact_denoiser"])
    assert (oracle["oracle_fields"] == 2).all()
    # the smoke's cheap estimator is noisy (2 fields): only a broken chain, such as a wrong
    # normalisation, puts the exact denoiser tens of sigmas off
    shifts = oracle[oracle["target"].str.startswith("largest |mean shift|")]["exact_denoiser"]
    assert (shifts < 3.0).all(), oracle
    conv = pd.read_csv(inf / "convergence.csv")
    assert list(conv["iteration"]) == [3, 6] and {"omega_m_median_abs_shift", "worst_chi2_log_ratio"} <= set(conv)
    for name in ("likelihood_diagnostic", "likelihood_convergence"):
        assert (tmp_path / f"results/diag/figures/{name}.png").stat().st_size > 1000


def test_baselines_on_a_tiny_lognormal_run(tmp_path):
    """The baselines target end to end on a smoke-sized lognormal run: the cheap scan, NUTS,
    NPE, the out-of-distribution sets and the comparison. Checks what holds whatever the
    (barely trained) network: every method's row, the cheap scan's cost accounting, NPE's SBC
    fields, one row per out-of-distribution field, and the exact posterior's own row."""
    import pandas as pd

    from cosmodiff.inference.calibration import METHODS
    from cosmodiff.inference import InferenceSettings

    cheap = {"scan": "local", "n_coarse": 3, "n_fine": 4, "t_exact": 2, "n_strata": 4, "n_noise": 1,
             "coarse_estimator": {"t_exact": 2, "n_strata": 2, "n_noise": 1}}
    cfg = write_config(tmp_path / "base.yaml", **{
        "run": "base", "data.synthetic.generator": "lognormal", "data.synthetic.n_sims": 12, "prepare.log_floor": 1e4,
        "prepare.norm_range": [8.5, 12.5], "model.conditioning": "scale_shift", "diagnostics.n_fields": 0,
        "baselines.enabled": True, "baselines.cheap": cheap, "baselines.mcmc_fields": 1,
        "baselines.mcmc": {"n_warmup": 5, "n_samples": 10, "n_chains": 1, "seed": 0, "n_coarse": 3},
        "baselines.mcmc_estimator": {"t_exact": 2, "n_strata": 2, "n_noise": 1},
        "baselines.npe": {"density_estimator": "mdn", "max_epochs": 3, "seed": 0, "draws": 200, "sbc_maps": 20},
        "baselines.out_of_distribution": {"n_fields": 1, "noise_levels": [0.1], "outside": [[0.6, 1.1]], "seed": 1,
                                          "check_samples": 2, "check_threshold": 5.0},
    })
    snakemake("baselines", "--cores", "2", "--configfile", str(cfg), cwd=tmp_path)
    base = tmp_path / "results/base/baselines"
    table = pd.read_csv(base / "comparison.csv", index_col="method")
    assert list(table.index) == [METHODS[k] for k in ("exact", "grid", "local", "mcmc", "npe")]
    assert table.loc[METHODS["mcmc"], "n"] == 1 and (table["n"].drop(METHODS["mcmc"]) == 2).all()
    settings = InferenceSettings.from_dict({**smoke_config()["inference"], **cheap})
    assert table.loc[METHODS["local"], "evaluations"] == settings.evaluations_per_field() == 9 * 4 + 16 * 6
    cols = [f"{p}_{m}" for p in ("omega_m", "sigma_8") for m in ("rel_error", "width", "coverage68", "mean_abs_z")]
    assert table[cols].notna().all().all() and table[[c for c in cols if "coverage" in c]].isin([0, 0.5, 1]).all().all()
    sbc = json.loads((base / "npe_sbc.json").read_text())
    assert sbc["n_fields"] == 20 and 0 <= sbc["sigma_8_coverage95"] <= 1 and sbc["train_maps"] > 50
    ood = pd.read_csv(base / "out_of_distribution.csv")
    assert list(ood["set"]) == ["in distribution", "white noise", "N-body", "outside the prior"]
    assert ood[["check_z", "npe_sigma_8_mean", "sigma_8_mean"]].notna().all().all()
    assert ood.loc[ood["set"] == "white noise", "vs_exact_shift_sigma_8"].notna().all()
    summary = pd.read_csv(base / "out_of_distribution_summary.csv")
    assert len(summary) == 4 and summary["flagged"].between(0, 1).all()
    for name in ("baselines_comparison", "out_of_distribution"):
        assert (tmp_path / f"results/base/figures/{name}.png").stat().st_size > 1000


def _serve_cmd(server, tmp_path, n_sims=3, res=32):
    src = tmp_path / "served"
    synthetic.synthesize_cmd(src, "lognormal", n_sims=n_sims, seed=4, resolution=res, progress=False)
    for name in (camels.MAPS_FILENAME, camels.PARAMS_FILENAME):
        server.files[f"/CMD/2D_maps/data/{name}"] = (src / name).read_bytes()
    return src


def test_download_rule_against_a_local_server(server, tmp_path):
    src = _serve_cmd(server, tmp_path)
    maps_bytes = (src / camels.MAPS_FILENAME).read_bytes()
    cfg = write_config(
        tmp_path / "dl.yaml",
        **{
            "data.source": "download",
            "data.resolution": 32,
            "prepare.low_resolution": 8,
            "prepare.split": {"train": 1 / 3, "val": 1 / 3, "test": 1 / 3},
            "data.download.base_url": f"{server.base}/CMD/2D_maps/data",
            "data.download.maps": {"size": len(maps_bytes), "sha256": camels.sha256sum(src / camels.MAPS_FILENAME)},
            "data.download.params": {"size": None, "sha256": camels.sha256sum(src / camels.PARAMS_FILENAME)},
        },
    )
    wd = tmp_path / "wd"
    snakemake("data", "--cores", "2", "--configfile", str(cfg), cwd=wd)
    raw = wd / "results/smoke/data/raw"
    assert (raw / camels.MAPS_FILENAME).read_bytes() == maps_bytes
    with h5py.File(wd / "results/smoke/data/prepared_32.h5") as f:
        np.testing.assert_allclose(
            f["train"]["maps"][0], np.log10(np.maximum(np.load(src / camels.MAPS_FILENAME)[0], 1e9)), rtol=1e-6
        )
        assert camels.sha256sum(src / camels.MAPS_FILENAME) in f.attrs["source"]


def test_download_rule_refuses_a_wrong_checksum(server, tmp_path):
    _serve_cmd(server, tmp_path)
    cfg = write_config(
        tmp_path / "dl.yaml",
        **{
            "data.source": "download",
            "data.resolution": 32,
            "prepare.low_resolution": 8,
            "data.download.base_url": f"{server.base}/CMD/2D_maps/data",
            "data.download.maps": {"size": None, "sha256": "0" * 64},
        },
    )
    wd = tmp_path / "wd"
    out = snakemake("data", "--cores", "1", "--configfile", str(cfg), cwd=wd, check=False)
    assert out.returncode != 0
    raw = wd / "results/smoke/data/raw"
    assert not (raw / camels.MAPS_FILENAME).exists()
    assert not list(raw.glob("*.part")) if raw.exists() else True
    log = (wd / f"results/smoke/logs/download/{camels.MAPS_FILENAME}.log").read_text()
    assert "sha256" in log
    assert not (wd / "results/smoke/data/prepared_32.h5").exists()


def test_local_folder_is_used_in_place(tmp_path):
    src = tmp_path / "cmd"
    synthetic.synthesize_cmd(src, "lognormal", n_sims=3, seed=4, resolution=32, progress=False)
    cfg = write_config(
        tmp_path / "local.yaml",
        **{
            "data.source": "local",
            "data.local_dir": str(src),
            "data.resolution": 32,
            "prepare.low_resolution": 8,
            "prepare.split": {"train": 1 / 3, "val": 1 / 3, "test": 1 / 3},
        },
    )
    wd = tmp_path / "wd"
    out = snakemake("-n", "--configfile", str(cfg), cwd=wd)
    jobs = planned_jobs(out)
    assert "download" not in jobs and "synthesize" not in jobs and jobs["prepare"] == 1


def test_several_gpus_launch_torchrun(tmp_path):
    cfg = write_config(tmp_path / "ddp.yaml", **{"finetune.gpus": 2})
    out = snakemake("-n", "-p", "--configfile", str(cfg), cwd=tmp_path)
    text = out.stdout
    assert "torchrun --standalone --nproc_per_node=2" in text and "--stage finetune" in text
    pretrain_cmd = next(line for line in text.splitlines() if "--stage pretrain" in line)
    assert "python /" in pretrain_cmd and "torchrun" not in pretrain_cmd


def test_lint_and_format_are_clean(tmp_path):
    out = snakemake("--lint", cwd=tmp_path)
    assert "Congratulations, your workflow is in a good condition" in out.stdout + out.stderr
    fmt = subprocess.run([str(Path(sys.executable).parent / "snakefmt"), "--check", "Snakefile", "workflow/rules"],
                         cwd=ROOT, capture_output=True, text=True)
    assert fmt.returncode == 0, fmt.stderr
