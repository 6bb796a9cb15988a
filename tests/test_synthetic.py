"""The lognormal generator and its exact likelihood; the Latin hypercube; the CMD writer."""

import numpy as np
import pytest

from cosmodiff import camels, synthetic
from cosmodiff.cosmology import BOX_SIZE, mean_surface_density


def _mode_power(maps, omega_m):
    """|FFT(Sigma / Sigma_bar - 1)|^2 / N^2 per map: estimates the circulant eigenvalues.

    Uses the true mean Sigma_bar, not each map's own mean: a lognormal slab's mean fluctuates
    by ~50% in a 25 Mpc/h box, so normalising by it would bias the spectrum.
    """
    n = maps.shape[-1]
    delta = maps / mean_surface_density(omega_m) - 1
    return np.abs(np.fft.fft2(delta)) ** 2 / n**2


def _shell_average(values, resolution):
    """Average over shells of integer |k| / k_F (ceil), DC dropped, up to N/2."""
    kk = synthetic.grid_wavenumbers(resolution) / (2 * np.pi / BOX_SIZE)
    shell = np.ceil(np.round(kk, 9)).astype(int).ravel()
    keep = (shell >= 1) & (shell <= resolution // 2)
    flat = values.reshape(*values.shape[:-2], -1)[..., keep]
    counts = np.bincount(shell[keep], minlength=resolution // 2 + 1)[1:]
    sums = np.stack([np.bincount(shell[keep], weights=row, minlength=resolution // 2 + 1)[1:] for row in flat.reshape(-1, flat.shape[-1])])
    return (sums / counts).reshape(*values.shape[:-2], -1)


def test_mass_identity_within_standard_error():
    """Independent maps: the mean over many maps agrees with rho_crit (Om - Ob) 5 Mpc/h."""
    for om, s8 in [(0.15, 0.9), (0.45, 0.7)]:
        maps = synthetic.lognormal_maps(om, s8, 300, seed=3, resolution=64)
        per_map = maps.mean(axis=(1, 2), dtype=np.float64)
        se = per_map.std(ddof=1) / np.sqrt(len(per_map))
        target = 1.3877e12 * (om - 0.049)
        assert abs(per_map.mean() - target) < 3.5 * se, (per_map.mean() / target - 1, se / target)


def test_power_spectrum_matches_target_within_standard_error():
    """Averaged over maps, the measured spectrum equals the generator's realised spectrum
    (shell by shell, within the scatter between maps), which equals the requested halofit
    spectrum to 3e-3 below half the Nyquist frequency at 128^2."""
    res, om, s8 = 128, 0.3, 0.8
    spec = synthetic.lognormal_spectrum(om, s8, res)
    maps = synthetic.lognormal_maps(om, s8, 400, seed=11, resolution=res)
    measured = _shell_average(_mode_power(maps, om), res)  # (n_maps, shells)
    mean, se = measured.mean(axis=0), measured.std(axis=0, ddof=1) / np.sqrt(len(measured))
    expected = _shell_average(spec.realised[None], res)[0]
    z = (mean - expected) / se
    assert np.abs(z).max() < 4.5, np.abs(z).max()
    assert np.mean(z**2) < 1.6, np.mean(z**2)
    # ... and the requested halofit spectrum itself, within the standard error, up to 0.9 k_Nyquist
    requested = _shell_average(spec.target[None], res)[0]
    shells_k = np.arange(1, res // 2 + 1) * 2 * np.pi / BOX_SIZE
    inside = shells_k < 0.9 * np.pi * res / BOX_SIZE
    z_req = ((mean - requested) / se)[inside]
    assert np.abs(z_req).max() < 4.5 and np.mean(z_req**2) < 1.6, (np.abs(z_req).max(), np.mean(z_req**2))
    # realised vs requested: the floor acts only on modes beyond the Nyquist circle
    kk = synthetic.grid_wavenumbers(res)
    k_nyq = np.pi * res / BOX_SIZE
    assert spec.floored_k > 0.95 * k_nyq
    dev = np.abs(spec.realised / spec.target - 1)
    assert dev[kk < 0.5 * k_nyq].max() < 3e-3
    assert dev[kk < 0.9 * k_nyq].max() < 0.05


@pytest.mark.parametrize("om,s8", [(0.1, 0.6), (0.1, 1.0), (0.5, 0.6), (0.5, 1.0), (0.3, 0.8)])
def test_floor_only_beyond_nyquist_across_the_prior(om, s8):
    spec = synthetic.lognormal_spectrum(om, s8, 256)
    k_nyq = np.pi * 256 / BOX_SIZE
    assert spec.floored_k > 0.98 * k_nyq
    kk = synthetic.grid_wavenumbers(256)
    dev = np.abs(spec.realised / spec.target - 1)
    assert dev[kk < 0.5 * k_nyq].max() < 1e-3


def test_sigma8_raises_large_scale_power_and_omega_m_changes_shape():
    res = 128
    kk = synthetic.grid_wavenumbers(res)
    low = (kk > 0) & (kk < 1.0)
    lo = synthetic.lognormal_spectrum(0.3, 0.7, res).target[low].mean()
    hi = synthetic.lognormal_spectrum(0.3, 0.9, res).target[low].mean()
    assert hi > 1.3 * lo
    # and in generated maps, not only in the target
    m_lo = _mode_power(synthetic.lognormal_maps(0.3, 0.7, 60, 1, res), 0.3)[:, low].mean()
    m_hi = _mode_power(synthetic.lognormal_maps(0.3, 0.9, 60, 1, res), 0.3)[:, low].mean()
    assert m_hi > 1.2 * m_lo
    # Omega_m: not a rescaling - the ratio of spectra varies with k by more than 10%
    a = synthetic.lognormal_spectrum(0.2, 0.8, res).target
    b = synthetic.lognormal_spectrum(0.4, 0.8, res).target
    ratio = _shell_average((b / a)[None], res)[0]
    assert ratio.max() / ratio.min() > 1.1


def test_seeded_determinism():
    a = synthetic.lognormal_maps(0.3, 0.8, 3, seed=5, resolution=32)
    b = synthetic.lognormal_maps(0.3, 0.8, 3, seed=5, resolution=32)
    c = synthetic.lognormal_maps(0.3, 0.8, 3, seed=6, resolution=32)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    assert a.dtype == np.float32 and a.shape == (3, 32, 32) and (a > 0).all()


def _dense_log_likelihood(field, om, s8):
    """Independent reference: a dense multivariate normal in log space (tiny grids only)."""
    n = field.shape[-1]
    spec = synthetic.lognormal_spectrum(om, s8, n)
    xi_g = np.fft.ifft2(spec.gaussian).real
    idx = np.arange(n)
    dx = (idx[:, None] - idx[None, :]) % n
    cov = xi_g[dx[:, None, :, None], dx[None, :, None, :]].reshape(n * n, n * n)
    g = (np.log(field.astype(np.float64)) - spec.log_mean + 0.5 * spec.variance_g).ravel()
    sign, logdet = np.linalg.slogdet(cov)
    assert sign > 0
    return -0.5 * (g @ np.linalg.solve(cov, g) + logdet)


def test_likelihood_equals_dense_gaussian_reference():
    field = synthetic.lognormal_maps(0.3, 0.8, 1, seed=2, resolution=8)[0]
    for om, s8 in [(0.3, 0.8), (0.25, 0.85), (0.4, 0.7)]:
        fast = synthetic.lognormal_log_likelihood(field, om, s8)
        assert fast == pytest.approx(_dense_log_likelihood(field, om, s8), rel=1e-9, abs=1e-6)


def test_likelihood_peaks_near_truth():
    truth = (0.3, 0.8)
    maps = synthetic.lognormal_maps(*truth, 15, seed=9, resolution=64)
    grid_om = np.linspace(0.2, 0.4, 9)
    grid_s8 = np.linspace(0.7, 0.9, 9)
    ll = np.array([[synthetic.lognormal_log_likelihood(maps, om, s8).sum() for s8 in grid_s8] for om in grid_om])
    i, j = np.unravel_index(ll.argmax(), ll.shape)
    assert abs(grid_om[i] - truth[0]) <= 0.05 and abs(grid_s8[j] - truth[1]) <= 0.05, (grid_om[i], grid_s8[j])
    assert ll.max() - ll[0, 0] > 10 and ll.max() - ll[-1, -1] > 10


def test_likelihood_per_map_and_bad_input():
    maps = synthetic.lognormal_maps(0.3, 0.8, 2, seed=1, resolution=16)
    both = synthetic.lognormal_log_likelihood(maps, 0.3, 0.8)
    assert both.shape == (2,)
    assert both[1] == pytest.approx(synthetic.lognormal_log_likelihood(maps[1], 0.3, 0.8))
    with pytest.raises(ValueError, match="strictly positive"):
        synthetic.lognormal_log_likelihood(maps - maps.max(), 0.3, 0.8)
    with pytest.raises(ValueError, match="outside the CAMELS prior"):
        synthetic.lognormal_log_likelihood(maps, 0.7, 0.8)
    with pytest.raises(ValueError, match="shape"):
        synthetic.lognormal_log_likelihood(maps[:, :, :8], 0.3, 0.8)


def test_latin_hypercube_is_stratified_and_in_prior():
    t = synthetic.latin_hypercube(50, seed=1)
    assert t.shape == (50, 6)
    for j, (lo, hi) in enumerate([(0.1, 0.5), (0.6, 1.0)]):
        bins = np.floor((t[:, j] - lo) / (hi - lo) * 50).astype(int)
        assert sorted(bins) == list(range(50))  # one draw per stratum
    for j, (lo, hi) in enumerate(synthetic.ASTRO_PRIOR.values(), start=2):
        assert t[:, j].min() >= lo and t[:, j].max() <= hi
    np.testing.assert_array_equal(t, synthetic.latin_hypercube(50, seed=1))
    narrow = synthetic.latin_hypercube(20, 2, omega_m_range=(0.25, 0.35), sigma_8_range=(0.75, 0.85))
    assert narrow[:, 0].min() >= 0.25 and narrow[:, 0].max() <= 0.35
    with pytest.raises(ValueError, match="outside the CAMELS prior"):
        synthetic.latin_hypercube(5, 0, omega_m_range=(0.05, 0.3))


def test_synthesize_cmd_writes_the_cmd_layout(tmp_path):
    settings = synthetic.synthesize_cmd(tmp_path, "lognormal", n_sims=4, seed=1, resolution=32, progress=False)
    maps = camels.open_maps(tmp_path / camels.MAPS_FILENAME)
    params = camels.read_params(tmp_path / camels.PARAMS_FILENAME)
    camels.check_layout(maps, params)
    assert maps.shape == (60, 32, 32) and maps.dtype == np.float32
    assert settings["generator"] == "lognormal" and (tmp_path / "synthetic.json").exists()
    # the written table is exactly the one the maps were made from: regenerate sim 2
    seeds = np.random.SeedSequence(1).spawn(2)[1].spawn(4)
    again = synthetic.generate_maps("lognormal", params[2, 0], params[2, 1], seeds[2], resolution=32)
    np.testing.assert_array_equal(maps[30:45], again)


def test_generator_interface_errors():
    with pytest.raises(ValueError, match="unknown generator 'gadget'"):
        synthetic.generate_maps("gadget", 0.3, 0.8, 0)
    with pytest.raises(ValueError, match="takes no options"):
        synthetic.generate_maps("lognormal", 0.3, 0.8, 0, resolution=16, n_particles=8)


def test_log10_likelihood_matches_the_physical_one_at_native_resolution():
    maps = synthetic.lognormal_maps(0.3, 0.8, 2, seed=4, resolution=16)
    logm = np.log10(maps.astype(np.float64))
    pts = [(0.3, 0.8), (0.35, 0.75), (0.22, 0.9)]
    a = np.array([synthetic.lognormal_log_likelihood(maps, *p) for p in pts])
    b = np.array([synthetic.lognormal_log10_likelihood(logm, *p) for p in pts])
    np.testing.assert_allclose(a - a[0], b - b[0], atol=1e-6)


@pytest.mark.parametrize("method", ["bicubic", "area"])
def test_log10_likelihood_of_downsampled_fields_equals_a_dense_gaussian(method):
    """Exact likelihood of prepare.downsample(log10 map): the coarse field is Gaussian with
    covariance D C D^T; compare with that matrix built explicitly (16^2 -> 4^2)."""
    from cosmodiff import prepare

    native, res = 16, 4
    basis = np.eye(native * native).reshape(-1, native, native)
    D = prepare.downsample(basis, res, method).reshape(native * native, res * res).T.astype(np.float64)
    for om, s8 in [(0.3, 0.8), (0.4, 0.7)]:
        lam, mean = synthetic.log10_spectrum(om, s8, native, res, method)
        spec = synthetic.lognormal_spectrum(om, s8, native)
        xi = np.fft.ifft2(spec.gaussian).real / np.log(10) ** 2
        idx = np.arange(native)
        dx = (idx[:, None] - idx[None, :]) % native
        C = xi[dx[:, None, :, None], dx[None, :, None, :]].reshape(native**2, native**2)
        cov = D @ C @ D.T
        field = prepare.downsample(np.log10(synthetic.lognormal_maps(0.3, 0.8, 1, 5, native)[0]), res, method).astype(np.float64)
        y = field.ravel() - mean
        _, logdet = np.linalg.slogdet(cov)
        dense = -0.5 * (y @ np.linalg.solve(cov, y) + logdet)
        fast = synthetic.lognormal_log10_likelihood(field, om, s8, native_resolution=native, method=method)
        assert fast == pytest.approx(dense, abs=1e-5 * max(1, abs(dense)))
