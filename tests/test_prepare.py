"""Preparation: log floor, splits by simulation, periodic downsampling, HDF5 with provenance."""

import json
import tracemalloc

import h5py
import numpy as np
import pytest

from cosmodiff import camels, prepare


def _grid(n):
    x = np.arange(n) + 0.5
    return np.meshgrid(x, x, indexing="ij")


def test_log_transform_floor():
    out = prepare.log_transform(np.array([0.0, 1e8, 1e12]), floor=1e9)
    np.testing.assert_allclose(out, [9.0, 9.0, 12.0])
    assert out.dtype == np.float32
    with pytest.raises(ValueError, match="positive"):
        prepare.log_transform(np.ones(3), floor=0)


def test_split_as_the_authors():
    r = prepare.split_simulations(1000, {"train": 0.7, "val": 0.15, "test": 0.15})
    assert r == {"train": (0, 700), "val": (700, 850), "test": (850, 1000)}
    with pytest.raises(ValueError, match="sum to 1"):
        prepare.split_simulations(10, {"train": 0.7, "val": 0.2, "test": 0.2})
    with pytest.raises(ValueError, match="gets no simulation"):
        prepare.split_simulations(3, {"train": 0.9, "val": 0.05, "test": 0.05})


@pytest.mark.parametrize("method", prepare.DOWNSAMPLE_METHODS)
def test_downsample_keeps_constants_and_low_k_modes(method):
    np.testing.assert_allclose(prepare.downsample(np.full((2, 64, 64), 11.3), 16, method), 11.3, rtol=1e-6)
    X, Y = _grid(256)
    f = np.cos(2 * np.pi * 3 * X / 256) + 0.5 * np.sin(2 * np.pi * 2 * Y / 256)
    Xs, Ys = _grid(64)
    ref = np.cos(2 * np.pi * 3 * Xs / 64) + 0.5 * np.sin(2 * np.pi * 2 * Ys / 64)
    # bicubic keeps a low-k mode to 1e-3; the block mean multiplies it by its sinc window
    tol = 1e-3 if method == "bicubic" else 5e-3
    np.testing.assert_allclose(prepare.downsample(f, 64, method), ref, atol=tol)


@pytest.mark.parametrize("method", prepare.DOWNSAMPLE_METHODS)
def test_downsample_is_periodic(method):
    """Wrap-around, not edge clamping: shifting the input by half a box shifts the output by
    half a box exactly, which fails when the kernel clamps at the edges (the features that
    cross the edge would be treated differently)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 64)).astype(np.float32)
    for shift in (4, 32, 60):
        a = prepare.downsample(np.roll(x, (shift, -shift), axis=(0, 1)), 16, method)
        b = np.roll(prepare.downsample(x, 16, method), (shift // 4, -shift // 4), axis=(0, 1))
        np.testing.assert_allclose(a, b, atol=1e-5)
    # a feature sitting on the edge is smoothed the same as one in the middle
    spike = np.zeros((64, 64), np.float32)
    spike[0, 0] = 1
    centred = np.roll(spike, (32, 32), axis=(0, 1))
    np.testing.assert_allclose(
        np.roll(prepare.downsample(spike, 16, method), (8, 8), axis=(0, 1)), prepare.downsample(centred, 16, method), atol=1e-6
    )


def test_downsample_errors():
    with pytest.raises(ValueError, match="must divide"):
        prepare.downsample(np.zeros((48, 48)), 32)
    with pytest.raises(ValueError, match="unknown downsample method"):
        prepare.downsample(np.zeros((32, 32)), 16, "nearest")


def _write_cmd(folder, n_sims=6, res=32, seed=0):
    rng = np.random.default_rng(seed)
    params = np.column_stack([rng.uniform(0.1, 0.5, n_sims), rng.uniform(0.6, 1.0, n_sims), np.ones((n_sims, 4))])
    with camels.maps_writer(folder / camels.MAPS_FILENAME, 15 * n_sims, res) as m:
        m[:] = 10 ** rng.normal(11, 0.5, size=(15 * n_sims, res, res))
        m[0, 0, :4] = 0.0  # empty pixels
    camels.write_params(folder / camels.PARAMS_FILENAME, params)
    return folder / camels.MAPS_FILENAME, folder / camels.PARAMS_FILENAME


def test_prepare_dataset_layout_and_normalisation(tmp_path):
    maps_path, params_path = _write_cmd(tmp_path)
    outs = {32: tmp_path / "p32.h5", 8: tmp_path / "p8.h5"}
    fractions = {"train": 0.5, "val": 1 / 6, "test": 1 / 3}
    prepare.prepare_dataset(maps_path, params_path, outs, fractions, log_floor=1e9, source={"k": 1}, progress=False)
    raw = np.load(maps_path)
    params = camels.read_params(params_path)
    with h5py.File(outs[32]) as f:
        assert [len(f[s]["maps"]) for s in prepare.SPLITS] == [45, 15, 30]
        np.testing.assert_array_equal(f["val"]["sim"][:], np.full(15, 3))
        np.testing.assert_allclose(f["test"]["params"][:], np.repeat(params[4:], 15, axis=0))
        np.testing.assert_allclose(f["train"]["maps"][0], np.log10(np.maximum(raw[0], 1e9)), rtol=1e-6)
        assert f["train"]["maps"][0, 0, 0] == pytest.approx(9.0)
        train = np.log10(np.maximum(raw[:45].astype(np.float64), 1e9))
        # normalisation from the training split only
        assert f.attrs["norm_min"] == pytest.approx(train.min(), rel=1e-6)
        assert f.attrs["norm_max"] == pytest.approx(train.max(), rel=1e-6)
        assert f.attrs["norm_mean"] == pytest.approx(train.mean(), rel=1e-6)
        assert f.attrs["norm_std"] == pytest.approx(train.std(), rel=1e-4)
        assert f.attrs["box_size"] == 25.0 and "Msun/h" in f.attrs["units"]
        assert list(f.attrs["param_names"])[:2] == ["Omega_m", "sigma_8"]
        assert json.loads(f.attrs["split_sims"]) == {"train": [0, 3], "val": [3, 4], "test": [4, 6]}
        assert json.loads(f.attrs["source"]) == {"k": 1}
        # the floored pixels per split: 4 empty ones plus the normal tail below 10^9 (z = -4)
        floored = json.loads(f.attrs["floored_fraction"])
        for split, (a, b) in json.loads(f.attrs["split_sims"]).items():
            block = raw[15 * a : 15 * b]
            assert floored[split] == pytest.approx((block < 1e9).mean(), rel=1e-12)
        assert floored["train"] >= 4 / (45 * 32 * 32)
    with h5py.File(outs[8]) as f:
        assert f["train"]["maps"].shape == (45, 8, 8)
        assert f.attrs["downsample"] == "bicubic" and f.attrs["native_resolution"] == 32
        np.testing.assert_allclose(
            f["train"]["maps"][3], prepare.downsample(np.log10(np.maximum(raw[3], 1e9)), 8), rtol=1e-6
        )


def test_configured_norm_range_replaces_the_training_range(tmp_path):
    """A configured (lo, hi) is what the network sees as [-1, 1] (read_normalisation); the
    maps themselves and the training statistics are unchanged; a bad range is refused."""
    maps_path, params_path = _write_cmd(tmp_path)
    fractions = {"train": 0.5, "val": 1 / 6, "test": 1 / 3}
    prepare.prepare_dataset(maps_path, params_path, {32: tmp_path / "a.h5"}, fractions, progress=False)
    prepare.prepare_dataset(maps_path, params_path, {32: tmp_path / "b.h5"}, fractions, progress=False,
                            norm_range=[9.0, 12.0])
    assert prepare.read_normalisation(tmp_path / "b.h5") == (9.0, 12.0)
    with h5py.File(tmp_path / "a.h5") as a, h5py.File(tmp_path / "b.h5") as b:
        np.testing.assert_array_equal(a["train"]["maps"][:], b["train"]["maps"][:])
        assert a.attrs["norm_mean"] == b.attrs["norm_mean"]
        assert (a.attrs["norm_source"], b.attrs["norm_source"]) == ("training range", "config")
    assert prepare.normalise(np.array([9.0, 10.5, 12.0]), (9.0, 12.0)) == pytest.approx([-1.0, 0.0, 1.0])
    for bad in ([12.0, 9.0], [9.0, float("inf")], [9.0], "x"):
        with pytest.raises(ValueError, match="norm_range must be"):
            prepare.prepare_dataset(maps_path, params_path, {32: tmp_path / "c.h5"}, fractions, progress=False,
                                    norm_range=bad)
    assert not (tmp_path / "c.h5").exists()


def test_prepare_streams_through_a_memory_map(tmp_path):
    """Peak Python-side allocations stay far below the size of the maps file."""
    maps_path, params_path = _write_cmd(tmp_path, n_sims=100, res=64)
    size = maps_path.stat().st_size  # 24.6 MB
    tracemalloc.start()
    prepare.prepare_dataset(
        maps_path, params_path, {64: tmp_path / "a.h5", 16: tmp_path / "b.h5"},
        {"train": 0.5, "val": 0.25, "test": 0.25}, block_sims=2, progress=False,
    )
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < size / 5, (peak, size)


def test_prepare_failure_leaves_no_output(tmp_path):
    maps_path, params_path = _write_cmd(tmp_path)
    out = tmp_path / "p.h5"
    with pytest.raises(ValueError, match="must divide"):
        prepare.prepare_dataset(maps_path, params_path, {32: out, 12: tmp_path / "q.h5"}, {"train": 0.5, "val": 0.25, "test": 0.25})
    assert not out.exists() and not list(tmp_path.glob("*.tmp"))
    # a table that does not match the maps
    camels.write_params(params_path, np.tile([0.3, 0.8, 1, 1, 1, 1], (5, 1)))
    with pytest.raises(ValueError):
        prepare.prepare_dataset(maps_path, params_path, {32: out}, {"train": 0.5, "val": 0.25, "test": 0.25})
    assert not out.exists()


FRACTIONS = {"train": 0.5, "val": 0.25, "test": 0.25}


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_non_finite_raw_pixels_are_refused_with_the_map_named(tmp_path, value):
    """Issue 15, case 4: one NaN or inf used to give a normalisation of (inf, -inf, NaN)."""
    maps_path, params_path = _write_cmd(tmp_path)
    maps = np.load(maps_path, mmap_mode="r+")
    maps[37, 5, 5] = value
    maps.flush()
    del maps
    out = tmp_path / "p.h5"
    with pytest.raises(ValueError, match=r"map 37 \(simulation 2\) has non-finite pixels \(NaN or inf\)"):
        prepare.prepare_dataset(maps_path, params_path, {32: out}, FRACTIONS, progress=False)
    assert not out.exists() and not list(tmp_path.glob("*.tmp"))


def test_zero_or_negative_pixels_above_the_configured_share_are_refused(tmp_path, caplog):
    maps_path, params_path = _write_cmd(tmp_path)  # 4 empty pixels of 92160
    maps = np.load(maps_path, mmap_mode="r+")
    maps[3, 0, 4:8] = -1.0
    maps.flush()
    del maps
    out = tmp_path / "p.h5"
    with pytest.raises(ValueError, match=r"0\.009% of the pixels are zero or negative, above "
                                         r"prepare.max_nonpositive_fraction \(5e-05\)"):
        prepare.prepare_dataset(maps_path, params_path, {32: out}, FRACTIONS, progress=False,
                                max_nonpositive_fraction=5e-5)
    assert not out.exists()
    with caplog.at_level("WARNING", logger="cosmodiff.prepare"):
        prepare.prepare_dataset(maps_path, params_path, {32: out}, FRACTIONS, progress=False)
    assert "0.009% of the pixels are zero or negative; floored at 1e+09" in caplog.text


def test_raw_maps_of_another_size_than_the_config_name_key_and_file(tmp_path):
    maps_path, params_path = _write_cmd(tmp_path)  # 32^2 maps
    with pytest.raises(ValueError, match=f"{maps_path} holds 32x32 maps but config key 'data.resolution' is 64"):
        prepare.prepare_dataset(maps_path, params_path, {64: tmp_path / "p.h5"}, FRACTIONS, progress=False,
                                native_resolution=64)


def test_truncated_prepared_file_names_the_file_and_the_rule(tmp_path):
    maps_path, params_path = _write_cmd(tmp_path)
    out = tmp_path / "p.h5"
    prepare.prepare_dataset(maps_path, params_path, {32: out}, FRACTIONS, progress=False)
    out.write_bytes(out.read_bytes()[: out.stat().st_size // 2])
    for read in (prepare.read_normalisation, prepare.load_split):
        with pytest.raises(ValueError, match=f"{out} is not a readable HDF5 file .*: it is truncated or damaged; "
                                             "delete it and rerun the `prepare` rule"):
            read(out)
