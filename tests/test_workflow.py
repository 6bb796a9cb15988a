"""The Snakemake workflow: dry runs of every config, the smoke data stage for real, downloads
through the `download` rule from a local HTTP server, local folders, reruns after edits."""

import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml

from cosmodiff import camels, synthetic

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.workflow


def snakemake(*args, cwd, check=True):
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", MPLBACKEND="Agg")
    cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "--directory", str(cwd), *args]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if check and out.returncode:
        raise AssertionError(f"snakemake failed ({out.returncode}):\n{out.stdout[-3000:]}\n{out.stderr[-6000:]}")
    return out


def write_config(path, **changes):
    """A copy of config/smoke.yaml with nested changes given as dotted keys."""
    config = yaml.safe_load((ROOT / "config/smoke.yaml").read_text())
    for dotted, value in changes.items():
        node = config
        *parents, last = dotted.split(".")
        for p in parents:
            node = node[p]
        node[last] = value
    path.write_text(yaml.safe_dump(config))
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


EMULATE = {"select_checkpoint": 2, "sample": 1, "plot_emulation": 1, "pretrain": 1, "finetune": 1, "prepare": 1,
           "plot_data": 1, "paper": 1}


@pytest.mark.parametrize(
    "name,expected",
    [
        # one validation job per checkpoint: demo 4 + 2, smoke 2 + 2, paper 12 + 20
        # ... and one posterior job per test field: demo 15, smoke 2, paper 150
        # ... and the exact-denoiser check where the data are lognormal (demo only)
        ("config", {"synthesize": 1, "validate_checkpoint": 6, "posterior": 15, "calibration": 1, "oracle": 1,
                    **EMULATE}),
        ("smoke", {"synthesize": 1, "validate_checkpoint": 4, "posterior": 2, "calibration": 1, **EMULATE}),
        ("paper", {"download": 2, "validate_checkpoint": 32, "posterior": 150, "calibration": 1, **EMULATE}),
    ],
)
def test_dry_run_of_every_config(tmp_path, name, expected):
    out = snakemake("-n", "--configfile", str(ROOT / f"config/{name}.yaml"), cwd=tmp_path)
    jobs = planned_jobs(out)
    assert {k: v for k, v in jobs.items() if k != "all"} == expected


def test_bad_config_stops_the_run_with_the_key_named(tmp_path):
    cfg = write_config(tmp_path / "bad.yaml", **{"data.resolution": 100})
    out = snakemake("-n", "--configfile", str(cfg), cwd=tmp_path, check=False)
    assert out.returncode != 0
    assert "config key 'data.resolution': 100 is not allowed; expected a power of two" in out.stdout + out.stderr


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    """The smoke config's data stage, for real (particle-mesh maps, 64^2 and 16^2)."""
    wd = tmp_path_factory.mktemp("smoke")
    snakemake("--cores", "2", "--configfile", str(ROOT / "config/smoke.yaml"), cwd=wd)
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
    from cosmodiff.train import load_checkpoint

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
    import shutil

    run = smoke_run / "results/smoke"
    for stage, n in (("pretrain", 2), ("finetune", 2)):
        assert len(list((run / f"validation/{stage}").glob("ckpt_*.csv"))) == n
        choice = json.loads((run / f"validation/{stage}/selected.json").read_text())
        assert choice["stage"] == stage and Path(choice["checkpoint"]).name.startswith("ckpt_")
    for name in ("maps", "power", "pdf", "peaks", "response"):
        assert (run / f"figures/emulation_{name}.png").stat().st_size > 1000
    numbers = (run / "paper/generated/numbers.tex").read_text()
    assert "\\newcommand{\\ChiSamples}" in numbers and "\\newcommand{\\RunName}{smoke}" in numbers
    assert "\\midrule" in (run / "paper/generated/chi2_table.tex").read_text()
    if not (shutil.which("latexmk") or shutil.which("pdflatex")):
        assert "no TeX engine" in (run / "paper/build.log").read_text()


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
    # one more inference field runs that field and the calibration, not the existing fields
    cfg = write_config(tmp_path / "edit5.yaml", **{"inference.n_fields": 3})
    jobs = planned_jobs(snakemake("-n", "--configfile", str(cfg), cwd=smoke_run))
    assert {k: v for k, v in jobs.items() if k != "all"} == {"posterior": 1, "calibration": 1}, jobs


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
    "posterior": "inference/field_1.h5",
    "calibration": "inference/coverage.json",
    "paper": "paper/generated/numbers.tex",
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
        "run": "oracle", "data.synthetic.generator": "lognormal", "data.synthetic.n_sims": 8, "prepare.log_floor": 1e4,
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
