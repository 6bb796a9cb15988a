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
    a = emu.sample(0.3, 0.8, 5, sampler="ddim", steps=4, seed=3, batch_size=2)
    b = emu.sample(0.3, 0.8, 5, sampler="ddim", steps=4, seed=3, batch_size=2)
    assert a.shape == (5, 16, 16) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    assert emu.sample(0.3, 0.8, 2, sampler="ddim", steps=4, seed=3, resolution=32).shape == (2, 32, 32)
    assert emu.evaluations("ancestral", 4) == 1000 and emu.evaluations("ddim", 4) == 4
    with pytest.raises(ValueError, match="unknown sampler 'euler'"):
        emu.sample(0.3, 0.8, 1, sampler="euler")


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
    table = validation.validate(Emulator.from_checkpoint(ckpt), data, sims, n_samples=2, steps=3)
    assert list(table.columns) == validation.TABLE_COLUMNS and len(table) == 2
    assert np.isfinite(table[["chi2_samples", "chi2_sims", "density_z"]].to_numpy()).all()
    with pytest.raises(ValueError, match="the val split has 2 simulations"):
        validation.choose_points(data, 3, seed=0)


def test_select_picks_the_lowest_mean_chi2():
    def table(values):
        return pd.DataFrame({"chi2_samples": values, "chi2_sims": [1.3] * len(values), "density_z": [0.1] * len(values)})

    tables = {"a.pt": (100, table([5.0, 3.0])), "b.pt": (200, table([2.0, 2.5])), "c.pt": (300, table([1.0, 9.0]))}
    choice, summary = validation.select(tables)
    assert choice["checkpoint"] == "b.pt" and choice["iteration"] == 200 and choice["chi2_samples"] == 2.25
    assert summary["iteration"].tolist() == [100, 200, 300]
