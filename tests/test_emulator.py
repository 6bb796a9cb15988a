"""Emulator, validation tables, checkpoint selection and the `python -m cosmodiff` command."""

import json
import subprocess
import sys

import h5py
import numpy as np
import pandas as pd
import pytest

from cosmodiff import prepare, synthetic, validation
from cosmodiff.emulator import Emulator, read_samples, write_samples
from cosmodiff.sampling import SamplerSettings
from cosmodiff.train import TrainSettings, train

MODEL = {"base_channels": 8, "channel_mults": [1, 2], "num_res_blocks": 1, "attention": [False, True],
         "mid_attention": True, "groups": 4, "time_dim": 32, "dropout": 0.0}
DIFFUSION = {"schedule": "mudur", "timesteps": 1000, "loss": "huber", "model_variance": "fixedlarge"}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    d = tmp_path_factory.mktemp("emu")
    synthetic.synthesize_cmd(d, "lognormal", n_sims=8, seed=2, resolution=16, progress=False)
    data = d / "p16.h5"
    prepare.prepare_dataset(d / "Maps_Mcdm_IllustrisTNG_LH_z=0.00.npy", d / "params_LH_IllustrisTNG.txt", {16: data},
                            {"train": 0.5, "val": 0.25, "test": 0.25}, progress=False)
    ckpt = train(data, MODEL, DIFFUSION, TrainSettings(iterations=2, batch_size=4, checkpoint_every=2),
                 checkpoint_dir=d / "ckpt", state_dir=d / "state", metrics_path=d / "m.jsonl", progress=False)[-1]
    return data, ckpt


def test_normalisation_round_trip(trained):
    emu = Emulator.from_checkpoint(trained[1])
    x = np.linspace(-1, 1, 7)
    np.testing.assert_allclose(emu.to_unit(emu.to_log10(x)), x, atol=1e-12)
    lo, hi = emu.normalisation
    assert emu.to_log10(-1) == pytest.approx(lo) and emu.to_log10(1) == pytest.approx(hi)
    with h5py.File(trained[0]) as f:
        assert (lo, hi) == (f.attrs["norm_min"], f.attrs["norm_max"])


def test_samples_shape_seed_and_samplers(trained):
    emu = Emulator.from_checkpoint(trained[1])
    a = emu.sample(0.3, 0.8, 5, SamplerSettings(sampler="ddim", steps=4, batch_size=2), seed=3)
    b = emu.sample(0.3, 0.8, 5, SamplerSettings(sampler="ddim", steps=4, batch_size=2), seed=3)
    assert a.shape == (5, 16, 16) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    assert emu.sample(0.3, 0.8, 2, SamplerSettings(sampler="ddim", steps=4), seed=3, resolution=32).shape == (2, 32, 32)
    assert emu.evaluations("ancestral", 4) == 1000 and emu.evaluations("ddim", 4) == 4
    with pytest.raises(ValueError, match="unknown sampler 'euler'"):
        emu.sample(0.3, 0.8, 1, SamplerSettings(sampler="euler"))


def test_write_samples_units_and_attributes(tmp_path):
    log_maps = np.full((2, 3, 8, 8), 11.0, np.float32)
    write_samples(tmp_path / "s.h5", log_maps, [[0.3, 0.8], [0.2, 0.7]], {"sampler": "ddim", "steps": 7, "sims": [4, -1]})
    maps, params, attrs = read_samples(tmp_path / "s.h5")
    np.testing.assert_allclose(maps, 1e11, rtol=1e-6)
    assert attrs["units"] == "(Msun/h)/(Mpc/h)^2" and attrs["box_size"] == 25.0
    assert attrs["sampler"] == "ddim" and attrs["steps"] == 7 and json.loads(attrs["sims"]) == [4, -1]
    assert params.tolist() == [[0.3, 0.8], [0.2, 0.7]]
    np.testing.assert_array_equal(read_samples(tmp_path / "s.h5", log10=True)[0], log_maps)


def test_cli_sample(trained, tmp_path):
    out = tmp_path / "out.h5"
    cmd = [sys.executable, "-m", "cosmodiff", "sample", "--checkpoint", str(trained[1]), "--omega-m", "0.3",
           "--sigma-8", "0.8", "-n", "3", "--steps", "3", "-o", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    maps, params, attrs = read_samples(out)
    assert maps.shape == (1, 3, 16, 16) and params.tolist() == [[0.3, 0.8]]
    assert attrs["evaluations_per_map"] == 3 and attrs["checkpoint"] == str(trained[1])
    bad = subprocess.run(cmd[:7] + ["0.9"] + cmd[8:], capture_output=True, text=True)
    assert bad.returncode == 2 and "omega_m=0.9 lies outside the CAMELS prior" in bad.stderr


def test_cli_infer(trained, tmp_path):
    """`python -m cosmodiff infer` on a prepared test map and on a physical map twice its size
    (downsampled as prepare does): the same posterior; bad maps are refused with the reason."""
    from cosmodiff.inference import GridPosterior

    data, ckpt = trained
    log_map = prepare.load_split(data, "test")[0][0]
    np.save(tmp_path / "log.npy", log_map)
    physical = synthetic.lognormal_maps(0.3, 0.8, 1, 9, 32)[0]
    np.save(tmp_path / "phys.npy", physical)
    opts = ["--checkpoint", str(ckpt), "--estimator", "truncated", "--t-max", "2", "--n-coarse", "3", "--n-fine", "3",
            "--max-refine", "1"]

    def infer(*args):
        return subprocess.run([sys.executable, "-m", "cosmodiff", "infer", *args, *opts], capture_output=True, text=True)

    done = infer(str(tmp_path / "log.npy"), "--units", "log10", "--truth", "0.3", "0.8", "-o", str(tmp_path / "p.h5"))
    assert done.returncode == 0, done.stderr
    assert "omega_m  mean" in done.stdout and "sigma_8  mean" in done.stdout
    assert f"{(9 + 9) * 3} network evaluations" in done.stdout  # 3x3 coarse + 3x3 fine, t = 0..2
    # the model check runs by default: 8 fields drawn at the mode, the verdict on one line
    assert "model check: 8 fields drawn at the posterior mode" in done.stderr
    assert "U per pixel at the posterior mode" in done.stderr
    post, attrs = GridPosterior.from_hdf5(tmp_path / "p.h5")
    assert post.shape == (3, 3) and np.isclose(post.prob.sum(), 1) and json.loads(attrs["truth"]) == [0.3, 0.8]
    # the physical 32^2 map gives the posterior of its prepared 16^2 version
    np.save(tmp_path / "phys_log16.npy", prepare.downsample(prepare.log_transform(physical), 16, "bicubic"))
    a = infer(str(tmp_path / "phys.npy"), "-o", str(tmp_path / "a.h5"))
    b = infer(str(tmp_path / "phys_log16.npy"), "--units", "log10", "-o", str(tmp_path / "b.h5"))
    assert a.returncode == b.returncode == 0, a.stderr + b.stderr
    np.testing.assert_allclose(GridPosterior.from_hdf5(tmp_path / "a.h5")[0].prob,
                               GridPosterior.from_hdf5(tmp_path / "b.h5")[0].prob, rtol=1e-4, atol=1e-8)
    np.save(tmp_path / "odd.npy", np.ones((24, 24)))
    bad = infer(str(tmp_path / "odd.npy"))
    assert bad.returncode == 2 and "needs a multiple of 16 pixels per side" in bad.stderr
    np.save(tmp_path / "cube.npy", np.ones((2, 16, 16)))
    bad = infer(str(tmp_path / "cube.npy"))
    assert bad.returncode == 2 and "expected one square map" in bad.stderr


def test_validation_table(trained):
    data, ckpt = trained
    sims = validation.choose_points(data, 2, seed=0)
    assert sims == validation.choose_points(data, 2, seed=0) and len(set(sims)) == 2
    with h5py.File(data) as f:
        assert set(sims) <= set(f["val"]["sim"][:])
    table = validation.validate(Emulator.from_checkpoint(ckpt), data, sims, SamplerSettings(n_samples=2, steps=3))
    assert list(table.columns) == validation.TABLE_COLUMNS and len(table) == 2
    assert np.isfinite(table[validation.STAT_COLUMNS].to_numpy()).all()
    with pytest.raises(ValueError, match="the val split has 2 simulations"):
        validation.choose_points(data, 3, seed=0)


def test_sampler_costs_are_the_validation_tables_of_each_sampler(trained):
    """Each row is validate() under that sampler (same points, same seeds); ancestral costs T
    evaluations per map whatever its steps say, the others their steps."""
    data, ckpt = trained
    emu = Emulator.from_checkpoint(ckpt)
    sims = validation.choose_points(data, 2, seed=0)
    base = SamplerSettings(n_samples=2, steps=7, seed=3, batch_size=2)
    samplers = [("ddim", 3, "linear"), ("dpm2m", 4, "quadratic"), ("ancestral", 1, "linear")]
    df = validation.sampler_costs(emu, data, sims, base, samplers)
    assert list(df.columns) == validation.COST_COLUMNS and len(df) == 3
    assert df.evaluations.tolist() == [3, 4, emu.diffusion.T] and df.spacing.tolist() == ["linear", "quadratic", "-"]
    assert (df.seconds_per_map > 0).all()
    one = validation.validate(emu, data, sims, SamplerSettings(sampler="dpm2m", steps=4, spacing="quadratic", n_samples=2, seed=3,
                                                               batch_size=2))
    assert df.chi2_log_samples[1] == pytest.approx(one.chi2_log_samples.mean(), rel=1e-12)
    assert df.abs_density_z[1] == pytest.approx(one.density_z.abs().mean(), rel=1e-12)
    assert df.chi2_log_samples[0] != df.chi2_log_samples[1]  # a different sampler draws different maps


def _table(chi2, chi2_log=(1.0, 1.0)):
    n = len(chi2)
    return pd.DataFrame({"chi2_samples": chi2, "chi2_sims": [1.3] * n, "chi2_log_samples": chi2_log,
                         "chi2_log_sims": [1.3] * n, "density_z": [0.1, -0.3][:n], "pdf_w1_dex": [0.2] * n})


def test_select_picks_the_lowest_mean_of_the_chosen_statistic():
    tables = {"a.pt": (100, _table([5.0, 3.0], [1.0, 1.2])), "b.pt": (200, _table([2.0, 2.5], [4.0, 4.0])),
              "c.pt": (300, _table([1.0, 9.0], [2.0, 2.0]))}
    choice, summary = validation.select(tables)
    assert choice["checkpoint"] == "b.pt" and choice["iteration"] == 200 and choice["chi2_samples"] == 2.25
    assert choice["select_by"] == "chi2" and choice["criterion"] == "chi2_samples"
    assert summary["iteration"].tolist() == [100, 200, 300]
    assert summary["abs_density_z"].tolist() == pytest.approx([0.2] * 3)
    choice, _ = validation.select(tables, "chi2_log")
    assert choice["checkpoint"] == "a.pt" and choice["chi2_log_samples"] == pytest.approx(1.1)
    shuffled = dict(reversed(list(tables.items())))  # "last" is the highest iteration, not the last listed
    choice, _ = validation.select(shuffled, "last")
    assert choice["checkpoint"] == "c.pt" and choice["iteration"] == 300 and choice["criterion"] == "chi2_log_samples"
    with pytest.raises(ValueError, match="unknown select_by 'loss'; choose one of"):
        validation.select(tables, "loss")
    old = {"d.pt": (100, _table([1.0, 1.0]).drop(columns=["chi2_log_samples", "chi2_log_sims"]))}
    with pytest.raises(ValueError, match="lacks \\['chi2_log_samples', 'chi2_log_sims'\\]: rerun validate_checkpoint"):
        validation.select(old)


def test_log_field_power_is_the_spectrum_of_the_log_field_minus_its_mean():
    rng = np.random.default_rng(4)
    x = rng.normal(11.0, 0.5, (3, 16, 16))
    from cosmodiff.powerspec import power_spectrum

    k, p = validation.log_field_power(x)
    # P of field/mean - 1 for field = c (x - mean) + c: c cancels, leaving x - mean
    _, ref = power_spectrum(5.0 * (x - x.mean(axis=(-2, -1), keepdims=True)) + 5.0, box_size=25.0)
    np.testing.assert_allclose(p, ref, rtol=1e-12)
    # adding a constant to the log field (a mass rescaling) leaves it unchanged
    np.testing.assert_allclose(validation.log_field_power(x + 0.7)[1], p, rtol=1e-9)


def test_paper_chi2_is_blind_to_pixel_shuffled_lognormal_maps_and_the_log_chi2_is_not():
    # lognormal maps (the demo's data, 64^2): pixel-shuffled copies keep the one-point PDF and
    # lose every correlation. The paper's chi-squared of P(k) of field/mean - 1 scores them
    # better than the simulations score each other; that of the log10 field rejects them,
    # and for independent draws it matches the Gaussian expectation (log Sigma is Gaussian).
    from cosmodiff import stats, synthetic

    sims = np.log10(synthetic.lognormal_maps(0.3, 0.8, 15, seed=0, resolution=64)).astype(np.float64)
    draws = np.log10(synthetic.lognormal_maps(0.3, 0.8, 8, seed=1, resolution=64)).astype(np.float64)
    rng = np.random.default_rng(2)
    shuffled = np.stack([rng.permutation(m.ravel()).reshape(m.shape) for m in draws])
    real = validation.point_statistics(draws, sims)
    noise = validation.point_statistics(shuffled, sims)
    assert noise["chi2_samples"] < noise["chi2_sims"]          # blind
    assert noise["chi2_log_samples"] > 100 * noise["chi2_log_sims"]  # not blind
    assert 0.7 < real["chi2_log_samples"] < 2.0
    assert real["chi2_log_sims"] == pytest.approx(stats.expected_reduced_chi2(14, 32), rel=0.15)
    assert noise["pdf_w1_dex"] == pytest.approx(real["pdf_w1_dex"])  # same pixels


# --------------------------------------------------------------------------------------------
# `python -m cosmodiff` against bad input (issue 15): in-process, one line on stderr, status 2
# --------------------------------------------------------------------------------------------

FAST = ["--estimator", "truncated", "--t-max", "2", "--n-coarse", "3", "--n-fine", "3", "--max-refine", "1"]


def _cli(capsys, *argv):
    """(status, stderr) of `python -m cosmodiff ARGV`; argparse errors exit with status 2 too."""
    from cosmodiff.__main__ import main

    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:
        code = exc.code
    return code, capsys.readouterr().err


def _sample_args(ckpt, out, *extra):
    return ["sample", "--checkpoint", ckpt, "--omega-m", "0.3", "--sigma-8", "0.8", "-n", "1", "--steps", "2", "-o", out,
            *extra]


def test_cli_output_never_destroys_an_input_or_an_existing_file(trained, tmp_path, capsys):
    """Issue 15, case 1: `-o` overwrote anything, the checkpoint and the input map included."""
    from cosmodiff.camels import sha256sum

    data, ckpt = trained
    digest = sha256sum(ckpt)
    code, err = _cli(capsys, *_sample_args(ckpt, ckpt))
    assert code == 2 and f"output {ckpt} is the input {ckpt}: choose another output file" in err
    assert sha256sum(ckpt) == digest
    field = tmp_path / "map.npy"
    np.save(field, prepare.load_split(data, "test")[0][0])
    before = field.read_bytes()
    code, err = _cli(capsys, "infer", field, "--checkpoint", ckpt, "--units", "log10", "-o", field, *FAST)
    assert code == 2 and f"output {field} is the input {field}" in err and field.read_bytes() == before
    out = tmp_path / "s.h5"
    out.write_bytes(b"precious")
    code, err = _cli(capsys, *_sample_args(ckpt, out))
    assert code == 2 and f"output {out} exists: pass --force to replace it" in err and out.read_bytes() == b"precious"
    assert _cli(capsys, *_sample_args(ckpt, out, "--force"))[0] == 0 and read_samples(out)[0].shape == (1, 1, 16, 16)
    code, err = _cli(capsys, *_sample_args(ckpt, tmp_path))
    assert code == 2 and f"output {tmp_path} is a directory: give a file name" in err
    # an unwritable place fails before the scan, not after it
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    code, err = _cli(capsys, "infer", field, "--checkpoint", ckpt, "--units", "log10", "-o", blocker / "p.h5", *FAST)
    assert code == 2 and f"cannot write {blocker / 'p.h5'}" in err and "network evaluations" not in capsys.readouterr().out


def test_failed_write_removes_its_temporary_file(trained, tmp_path, capsys, monkeypatch):
    """Issue 15, case 1: a full disk left s.h5.tmp behind, keeping the disk full."""
    import errno

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(h5py.Group, "create_dataset", full)
    out = tmp_path / "s.h5"
    code, err = _cli(capsys, *_sample_args(trained[1], out))
    assert code == 2 and err.strip().splitlines()[-1] == "cosmodiff sample: error: [Errno 28] No space left on device"
    assert "Traceback" not in err
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_cli_infer_refuses_a_field_that_does_not_match_the_checkpoint(trained, tmp_path, capsys):
    """Issue 15, case 5: these gave the prior (or a moved Omega_m) and exit 0."""
    data, ckpt = trained
    log_map = prepare.load_split(data, "test")[0][0].astype(np.float64)
    physical = 10.0**log_map
    cases = {
        "physical_as_log10": (physical, "log10", "check --units"),
        "log10_as_physical": (log_map, "physical", "of the pixels of"),
        "zeros": (np.zeros_like(log_map), "physical", "lie below --log-floor"),
        "times_1e6": (physical * 1e6, "physical", "check --units"),
        "nan_log10": (np.where(np.arange(log_map.size).reshape(log_map.shape) == 7, np.nan, log_map), "log10",
                      "has 1 non-finite pixels (NaN or inf)"),
    }
    for name, (field, units, reason) in cases.items():
        np.save(tmp_path / f"{name}.npy", field)
        code, err = _cli(capsys, "infer", tmp_path / f"{name}.npy", "--checkpoint", ckpt, "--units", units, *FAST)
        assert code == 2 and reason in err, (name, err)
        assert len(err.strip().splitlines()) == 1, (name, err)
    # a checkpoint trained on bad data (non-finite normalisation) is refused
    import torch

    bad = torch.load(ckpt, weights_only=True)
    bad["normalisation"] = [float("nan"), float("inf")]
    torch.save(bad, tmp_path / "nan_norm.pt")
    code, err = _cli(capsys, "infer", tmp_path / "physical_as_log10.npy", "--checkpoint", tmp_path / "nan_norm.pt", *FAST)
    assert code == 2 and "normalisation (nan, inf) is not a finite range" in err


def test_cli_bad_options_and_files_are_one_line_errors(trained, tmp_path, capsys):
    """Issue 15, case 8: -n 0 said "need at least one array"; a text .npy suggested allow_pickle."""
    import torch

    ckpt = trained[1]
    for option, value in (("-n", "0"), ("-n", "-3"), ("--batch-size", "0")):
        argv = _sample_args(ckpt, tmp_path / "s.h5")
        argv[argv.index("-n") : argv.index("-n") + 2] = [option, value]
        code, err = _cli(capsys, *argv)
        assert code == 2 and f"argument {option}: must be at least 1, got {value}" in err, err
    for value in ("0", "-16"):  # 0 used to mean the checkpoint's resolution, -16 a torch traceback
        code, err = _cli(capsys, *_sample_args(ckpt, tmp_path / "s.h5", "--resolution", value))
        assert code == 2 and f"argument --resolution: must be at least 1, got {value}" in err, err
    code, err = _cli(capsys, *_sample_args(ckpt, tmp_path / "s.h5", "--resolution", "15"))
    assert code == 2 and "resolution must be a positive multiple of the network's downsampling factor" in err, err
    if not torch.cuda.is_available():
        code, err = _cli(capsys, *_sample_args(ckpt, tmp_path / "s.h5", "--device", "cuda"))
        assert code == 2 and "this torch build sees no CUDA device; use --device cpu" in err
    text = tmp_path / "text.npy"
    text.write_text("1 2\n3 4\n")
    code, err = _cli(capsys, "infer", text, "--checkpoint", ckpt, *FAST)
    assert code == 2 and f"{text} is not a .npy array file" in err and "allow_pickle" not in err
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    code, err = _cli(capsys, *_sample_args(empty, tmp_path / "s.h5"))
    assert code == 2 and f"{empty} is not a readable cosmodiff checkpoint" in err and "weights_only" not in err
    assert not (tmp_path / "s.h5").exists()
