"""Tests of cosmodiff.inference: grid posteriors, the Wiener oracle, the bound as a likelihood.

The diffusion network is replaced by :class:`WienerOracle`, the exact E[eps | x_t] of the
lognormal synthetic maps, so that the whole inference chain can be checked against the exact
lognormal posterior without training. Fields are 32 x 32; one truth (0.3, 0.8), two fields;
a 7 x 7 grid within +-0.08 of the truth (exact posterior widths at 32 x 32 are 0.022-0.030,
so the grid spans about +-3 sigma).

Normalisation. The bound's decoder and first reverse steps have variance beta_0 = 1e-4 in
normalised units, so Fourier modes of x0 whose variance is below ~10 beta_0 are invisible to
it (the bound is then the likelihood of a slightly noised field). With a training-like
normalisation (lo, hi) = (7, 15) (x0 in [-1, 1]) 6% of the modes are below beta_0 and the
modes below 10 beta_0 hold most of the Fisher information of the exact lognormal likelihood
(many are corner modes beyond the Nyquist circle whose power the generator floors). The
tests of "bound = likelihood" therefore use TIGHT = (11.5, 11.75), where every mode has
variance >= 17 beta_0; ``test_bound_is_loose_at_training_normalisation`` pins the
(7, 15) numbers.
"""

from __future__ import annotations

import os
import time

import numpy as np
import pytest
import torch
from cosmodiff.diffusion import GaussianDiffusion, make_betas
from cosmodiff.inference import (
    FULL_DRAWS,
    GridPosterior,
    Potential,
    WienerOracle,
    coarse_to_fine,
    compare,
    coverage,
    exact_lognormal_posterior,
    grid_around,
    grid_posterior,
    strata_edges,
    stratified_timesteps,
    stratified_variance,
)
from cosmodiff.synthetic import lognormal_log_likelihood, lognormal_maps
from scipy.stats import norm

TIGHT = (11.5, 11.75)
TRAINING = (7.0, 15.0)
TRUTH = (0.3, 0.8)
RES = 32
NG = 7  # grid points per axis


# --------------------------------------------------------------------------------------------
# shared fixtures (module scope: the 49 spectra cost ~0.25 s each, once)
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def diffusion():
    return GaussianDiffusion(make_betas("mudur"), model_variance="fixedlarge")


@pytest.fixture(scope="module")
def oracle(diffusion):
    return WienerOracle(diffusion, TIGHT)


@pytest.fixture(scope="module")
def maps():
    """Two lognormal fields at the truth, physical units, float64."""
    return lognormal_maps(*TRUTH, 2, 1, RES).astype(np.float64)


@pytest.fixture(scope="module")
def grid():
    return grid_around(TRUTH, 0.08, NG)


@pytest.fixture(scope="module")
def thetas(grid):
    return np.stack(np.meshgrid(*grid, indexing="ij"), axis=-1).reshape(-1, 2)


@pytest.fixture(scope="module")
def exact(maps, grid, oracle, thetas):
    for th in thetas:  # warm the oracle's spectrum cache while the cosmologies are fresh
        oracle.spectrum(*th, RES)
    return exact_lognormal_posterior(maps, *grid)


def unit(field_physical, normalisation):
    lo, hi = normalisation
    return 2 * (np.log10(field_physical) - lo) / (hi - lo) - 1


def gaussian_potential(mean, cov):
    """U(theta) = 0.5 (theta - mean)^T cov^-1 (theta - mean), vectorised."""
    prec = np.linalg.inv(np.asarray(cov))

    def U(theta):
        d = np.asarray(theta, dtype=np.float64).reshape(-1, 2) - np.asarray(mean)
        return 0.5 * np.einsum("mi,ij,mj->m", d, prec, d)

    return U


# --------------------------------------------------------------------------------------------
# a. grid posterior against an analytic 2D Gaussian
# --------------------------------------------------------------------------------------------


def test_grid_posterior_of_a_gaussian(tmp_path):
    mean, sig, rho = np.array([0.3, 0.8]), np.array([0.02, 0.03]), 0.6
    cov = np.array([[sig[0] ** 2, rho * sig[0] * sig[1]], [rho * sig[0] * sig[1], sig[1] ** 2]])
    om = np.linspace(mean[0] - 6 * sig[0], mean[0] + 6 * sig[0], 241)
    s8 = np.linspace(mean[1] - 6 * sig[1], mean[1] + 6 * sig[1], 201)
    U = gaussian_potential(mean, cov)
    post = grid_posterior(U, om, s8)
    assert post.shape == (241, 201) and post.evaluations == 241 * 201
    w = lambda x: np.r_[(x[1] - x[0]) / 2, (x[2:] - x[:-2]) / 2, (x[-1] - x[-2]) / 2]  # trapezoid cells
    area = w(om)[:, None] * w(s8)[None]
    assert (post.density * area).sum() == pytest.approx(1, abs=1e-12)
    assert post.prob.sum() == pytest.approx(1, abs=1e-12)
    assert post.marginals["omega_m"] @ w(om) == pytest.approx(1, abs=1e-10)
    assert post.marginals["sigma_8"] @ w(s8) == pytest.approx(1, abs=1e-10)
    # peak density of the normalised posterior
    assert post.density.max() == pytest.approx(1 / (2 * np.pi * np.sqrt(np.linalg.det(cov))), rel=1e-3)
    np.testing.assert_allclose(post.mean, mean, atol=1e-4 * sig.min())
    np.testing.assert_allclose(post.std, sig, rtol=1e-3)
    assert post.cov[0, 1] / np.prod(post.std) == pytest.approx(rho, abs=1e-3)
    for m in (0.68, 0.95):
        z = norm.ppf((1 + m) / 2)  # 0.9945 and 1.9600
        expect = np.stack([mean - z * sig, mean + z * sig], axis=1)
        np.testing.assert_allclose((post.intervals[m] - expect) / sig[:, None], 0, atol=3e-3)
        # 2D HPD region of mass m of a Gaussian: density >= peak (1 - m)
        assert post.levels[m] == pytest.approx(post.density.max() * (1 - m), rel=1e-2)  # lattice-point error
    # the smallest HPD region containing a point at Mahalanobis radius r holds 1 - exp(-r^2/2)
    for r in (0.5, 1.0, 2.0):
        point = mean + r * sig[0] * np.sqrt(1 - rho**2) * np.array([1.0, 0.0])  # Mahalanobis r along omega_m
        assert post.hpd_mass(point) == pytest.approx(1 - np.exp(-r**2 / 2), abs=3e-3)
    assert post.hpd_mass((0.9, 0.1)) == 1.0
    np.testing.assert_allclose(post.mode, mean, atol=om[1] - om[0])
    row = post.summary(truth=mean + sig)
    assert row["omega_m_z"] == pytest.approx(-1, abs=1e-3) and row["sigma_8_z"] == pytest.approx(-1, abs=1e-3)
    assert row["omega_m_lo95"] == pytest.approx(mean[0] - 1.96 * sig[0], abs=1e-4)
    assert row["n_omega_m"] == 241 and row["evaluations"] == 241 * 201
    # HDF5 round trip
    post.to_hdf5(tmp_path / "p.h5", {"field": 3, "truth": [0.3, 0.8], "estimator": "full"})
    back, attrs = GridPosterior.from_hdf5(tmp_path / "p.h5")
    np.testing.assert_allclose(back.mean, post.mean, rtol=1e-12)
    np.testing.assert_allclose(back.log_density, post.log_density, atol=1e-12)
    assert attrs["field"] == 3 and attrs["estimator"] == "full" and attrs["evaluations"] == 241 * 201
    assert attrs["omega_m_std"] == pytest.approx(post.std[0])
    # +inf potential = zero posterior; NaN refused
    U2 = post.potential.copy()
    U2[:10] = np.inf
    assert GridPosterior.from_potential(om, s8, U2).prob[:10].sum() == 0
    U2[0, 0] = np.nan
    with pytest.raises(ValueError):
        GridPosterior.from_potential(om, s8, U2)


def test_intervals_of_a_density_with_empty_cells_are_those_of_its_support():
    """A marginal that is exactly 0 on its first and last nodes (U = +inf, or underflow far
    from the mode): the intervals lie on its support, here a triangle on [0.30, 0.34] peaking
    at 0.32, whose CDF (linear between nodes, as the intervals take it) is 1/2 at 0.32."""
    om = np.linspace(0.2, 0.44, 13)                      # nodes every 0.02
    s8 = np.array([0.7, 0.8, 0.9])
    U = np.full((13, 3), np.inf)
    U[6] = 0.0                                           # mass only at the node 0.32
    post = GridPosterior.from_potential(om, s8, U)
    for m in (0.68, 0.95):
        lo, hi = post.intervals[m][0]                    # F(lo) = (1 - m) / 2 = (lo - 0.30) / 0.02 / 2
        assert lo == pytest.approx(0.30 + 0.02 * (1 - m), abs=1e-12) and hi == pytest.approx(0.34 - 0.02 * (1 - m), abs=1e-12)
    assert post.mean[0] == pytest.approx(0.32)


def test_grid_around_clips_to_the_prior():
    om, s8 = grid_around((0.45, 0.62), 0.1, 11)
    assert om[0] == pytest.approx(0.35) and om[-1] == pytest.approx(0.5)
    assert s8[0] == pytest.approx(0.6) and s8[-1] == pytest.approx(0.72)
    assert len(om) == len(s8) == 11
    om, s8 = grid_around((0.3, 0.8), (0.05, 0.02), (5, 7))
    assert (om[0], om[-1], len(om), s8[0], s8[-1], len(s8)) == pytest.approx((0.25, 0.35, 5, 0.78, 0.82, 7))


def test_coverage_of_calibrated_gaussian_posteriors():
    """Truths drawn from each (Gaussian) posterior: the intervals and HPD regions cover at
    their nominal rates and the z-scores are standard normal."""
    rng = np.random.default_rng(0)
    sig, rho, n = np.array([0.02, 0.03]), -0.4, 300
    cov = np.array([[sig[0] ** 2, rho * sig[0] * sig[1]], [rho * sig[0] * sig[1], sig[1] ** 2]])
    posts, truths = [], []
    for _ in range(n):
        mean = np.array([0.3, 0.8]) + rng.normal(0, 0.01, 2)
        om = np.linspace(mean[0] - 5 * sig[0], mean[0] + 5 * sig[0], 61)
        s8 = np.linspace(mean[1] - 5 * sig[1], mean[1] + 5 * sig[1], 61)
        posts.append(grid_posterior(gaussian_potential(mean, cov), om, s8))
        truths.append(rng.multivariate_normal(mean, cov))
    cov_out = coverage(posts, truths)
    assert cov_out["n"] == n
    for name in ("omega_m", "sigma_8"):
        assert abs(cov_out[f"{name}_coverage68"] - 0.68) < 3 * cov_out["se68"]
        assert abs(cov_out[f"{name}_coverage95"] - 0.95) < 3 * cov_out["se95"]
        assert abs(cov_out[f"{name}_mean_z"]) < 3 / np.sqrt(n)
        assert abs(cov_out[f"{name}_rms_z"] - 1) < 0.15
        assert cov_out[f"{name}_z"].shape == (n,)
    assert abs(cov_out["hpd_coverage68"] - 0.68) < 3 * cov_out["se68"]
    assert abs(cov_out["hpd_coverage95"] - 0.95) < 3 * cov_out["se95"]
    # the same from summary rows (with the truth, so the HPD mass travels in the row)
    rows = [p.summary(truth=t) for p, t in zip(posts, truths)]
    again = coverage(rows, truths)
    assert again["omega_m_coverage68"] == cov_out["omega_m_coverage68"]
    assert again["hpd_coverage95"] == cov_out["hpd_coverage95"]
    # an over-confident posterior (std halved) under-covers
    narrow = coverage(
        [grid_posterior(gaussian_potential(p.mean, cov / 4), p.omega_m, p.sigma_8) for p in posts[:100]], truths[:100]
    )
    assert narrow["omega_m_coverage68"] < 0.5 and narrow["omega_m_rms_z"] > 1.6


# --------------------------------------------------------------------------------------------
# b. the Wiener oracle is the optimal predictor, and its bound is the likelihood
# --------------------------------------------------------------------------------------------


def test_oracle_is_the_optimal_noise_predictor(diffusion, oracle):
    """Its error is the analytic minimum (the posterior variance of eps), is orthogonal to
    functions of x_t (so no perturbation of it helps), and perturbations hurt."""
    theta = TRUTH
    x0 = torch.from_numpy(unit(lognormal_maps(*theta, 48, 5, RES).astype(np.float64), TIGHT))[:, None]
    cond = torch.tensor([theta] * len(x0), dtype=torch.float64)
    wrong = torch.tensor([[theta[0] + 0.03, theta[1] - 0.03]] * len(x0), dtype=torch.float64)
    g = torch.Generator().manual_seed(3)
    for t in (0, 30, 200, 600, 999):
        tt = torch.full((len(x0),), t, dtype=torch.long)
        eps = torch.randn(x0.shape, generator=g, dtype=torch.float64)
        x_t = diffusion.q_sample(x0, tt, eps)
        hat = oracle(x_t, tt, cond)
        r = eps - hat
        mse = (r**2).mean().item()
        assert mse == pytest.approx(oracle.mmse(t, theta, RES), rel=0.03)
        # E[r | x_t] = 0: the best step delta along any direction f(x_t) is 0. Cov(r | x_t)
        # has eigenvalues in [0, 1], so the standard error of delta is at most 1/|f|.
        for f in (hat, torch.roll(hat, 1, -1), oracle(x_t, tt, wrong) - hat, x_t):
            delta = (f * r).sum() / (f * f).sum()
            assert abs(delta.item()) < 4 / (f * f).sum().sqrt().item()
        if t >= 200:  # where the predictor is far from 0, perturbing it visibly costs
            for other in (1.1 * hat, 0.9 * hat, oracle(x_t, tt, wrong), hat + 0.1 * torch.roll(hat, 1, -1)):
                assert ((other - eps) ** 2).mean().item() > mse
    # float32 in, float32 out, same values
    h32 = oracle(x_t.float(), tt, cond.float())
    assert h32.dtype == torch.float32 and torch.allclose(h32.double(), hat, atol=1e-5)


def test_oracle_bound_equals_the_exact_likelihood(diffusion, oracle, maps):
    """oracle.nll differs from -lognormal_log_likelihood by a theta-free Jacobian; the
    closed-form expected bound is the mean of the Monte Carlo terms; the bound is above the
    NLL by < 0.01 nats/pixel and its differences between parameter points equal the exact
    ones within 5% (measured 0.3-3.9%: the generator's spectra span 1e6 in variance, the
    schedule resolves 1e-4..1e4, so the extreme modes are only partly seen)."""
    x0 = unit(maps[0], TIGHT)
    thetas = [TRUTH, (0.38, 0.88), (0.45, 0.95), (0.15, 0.65), (0.2, 0.9)]
    nll = np.array([oracle.nll(x0[None], th)[0] for th in thetas])
    ll = np.array([lognormal_log_likelihood(maps[0], *th) for th in thetas])
    np.testing.assert_allclose(nll - nll[0], -(ll - ll[0]), rtol=1e-9, atol=1e-8)
    expected, e_terms = zip(*(oracle.expected_bound(x0[None], th, diffusion, return_terms=True) for th in thetas))
    expected = np.array([e[0] for e in expected])
    gap = (expected - nll) / RES**2
    assert np.all(gap > 0) and np.all(gap < 0.01)
    d_exact, d_bound = nll[1:] - nll[0], expected[1:] - expected[0]
    np.testing.assert_allclose(d_bound, d_exact, rtol=0.05)
    # the closed form term by term: mean of 256 noise draws of vb_terms at a few t
    xt = torch.from_numpy(x0)[None, None]
    g = torch.Generator().manual_seed(11)
    for t in (0, 3, 60, 400, 950):
        noise = torch.randn((256, 1, RES, RES), generator=g, dtype=torch.float64)
        cond = torch.tensor([thetas[1]] * 256, dtype=torch.float64)
        v = diffusion.vb_terms(oracle, xt.expand(256, -1, -1, -1), cond, torch.full((256,), t), noise).numpy()
        assert abs(v.mean() - e_terms[1][0, t]) < 4 * v.std(ddof=1) / 16 + 1e-9
    # Monte Carlo nll_bound over all T, common random numbers: differences match too
    mc_thetas = [TRUTH, (0.45, 0.95), (0.15, 0.65)]
    cond = torch.tensor(mc_thetas, dtype=torch.float64)
    mc = np.array([diffusion.nll_bound(oracle, xt.expand(len(mc_thetas), -1, -1, -1), cond, noise_seed=s,
                                       batch_size=500).numpy() for s in range(4)])
    se = mc.std(axis=0, ddof=1) / np.sqrt(len(mc))
    assert np.all(np.abs(mc.mean(axis=0) - expected[[0, 2, 3]]) < 4 * se)
    d_mc = mc[:, 1:] - mc[:, :1]
    d_se = d_mc.std(axis=0, ddof=1) / np.sqrt(len(mc))
    d_ref = d_exact[[1, 2]]
    assert np.all(np.abs(d_mc.mean(0) - d_ref) < 0.05 * np.abs(d_ref) + 4 * d_se)
    print(
        f"\noracle bound, 32x32, normalisation {TIGHT}: gap {gap.mean():.4f} nats/px; NLL differences: exact "
        f"{np.round(d_exact, 2)}, closed-form bound {np.round(d_bound, 2)} "
        f"({np.round(100 * (d_bound / d_exact - 1), 1)}%), nll_bound (4 seeds, 2nd and 3rd) {np.round(d_mc.mean(0), 2)} "
        f"+- {np.round(d_se, 2)}"
    )


def test_oracle_of_prepared_fields_is_the_optimal_predictor(diffusion):
    """With native_resolution, the oracle knows the workflow's prepared fields (lognormal maps
    made at 64^2, log10, downsampled to 16^2): its NLL differences are those of the exact
    lognormal_log10_likelihood, and its error is the analytic minimum on such fields, while
    the oracle that takes them for native 16^2 maps does measurably worse."""
    from cosmodiff.prepare import downsample
    from cosmodiff.synthetic import _downsample_kernel_power, lognormal_log10_likelihood

    native, res = 64, 16
    norm = (11.4, 11.9)
    with torch.no_grad():  # the kernel is built with autograd: it must work under no_grad too
        _downsample_kernel_power.cache_clear()
        WienerOracle(diffusion, norm, native_resolution=native).spectrum(*TRUTH, res)
    logs = downsample(np.log10(lognormal_maps(*TRUTH, 64, 7, native).astype(np.float64)), res, "bicubic")
    prepared = WienerOracle(diffusion, norm, native_resolution=native, method="bicubic")
    x0 = 2 * (logs - norm[0]) / (norm[1] - norm[0]) - 1
    thetas = [TRUTH, (0.38, 0.88), (0.2, 0.7)]
    nll = np.array([prepared.nll(x0[:1], th)[0] for th in thetas])
    ll = np.array([lognormal_log10_likelihood(logs[0], *th, native, "bicubic") for th in thetas])
    np.testing.assert_allclose(nll - nll[0], -(ll - ll[0]), rtol=1e-5)  # downsample returns float32
    naive = WienerOracle(diffusion, norm)
    xt0 = torch.from_numpy(x0)[:, None]
    cond = torch.tensor([TRUTH] * len(x0), dtype=torch.float64)
    g = torch.Generator().manual_seed(5)
    for t in (100, 400):
        tt = torch.full((len(x0),), t, dtype=torch.long)
        eps = torch.randn(xt0.shape, generator=g, dtype=torch.float64)
        x_t = diffusion.q_sample(xt0, tt, eps)
        mse = ((prepared(x_t, tt, cond) - eps) ** 2).mean().item()
        assert mse == pytest.approx(prepared.mmse(t, TRUTH, res), rel=0.05)
        assert ((naive(x_t, tt, cond) - eps) ** 2).mean().item() > 1.05 * mse  # measured 1.09 at t = 400


def test_bound_is_loose_at_training_normalisation(diffusion, maps, exact, grid, thetas):
    """With x0 in [-1, 1] the modes below ~beta_0 escape the bound: its gap per pixel is
    ~0.15 nats and its (noise-free) posterior is wider and shifted. Characterisation only."""
    loose = WienerOracle(diffusion, TRAINING)
    x0 = unit(maps[0], TRAINING)
    gap = (loose.expected_bound(x0[None], TRUTH, diffusion)[0] - loose.nll(x0[None], TRUTH)[0]) / RES**2
    assert gap > 0.05
    x0s = unit(maps, TRAINING)
    U = np.stack([loose.expected_bound(x0s, th, diffusion) for th in thetas], axis=1)
    rows = [compare(GridPosterior.from_potential(*grid, U[i].reshape(NG, NG)), exact[i]) for i in range(2)]
    widths = [r[f"width_{p}"] for r in rows for p in ("omega_m", "sigma_8")]
    assert max(widths) > 1.05
    print(f"\nnormalisation {TRAINING}: bound gap {gap:.3f} nats/px; noise-free bound vs exact posterior: "
          + "; ".join(", ".join(f"{k} {v:.2f}" for k, v in r.items()) for r in rows))


# --------------------------------------------------------------------------------------------
# c. the full bound reproduces the exact posterior; the truncated one does not
# --------------------------------------------------------------------------------------------


def _fmt(c):
    return ", ".join(f"{k} {v:+.3f}" if k.startswith("shift") else f"{k} {v:.3f}" for k, v in c.items())


def test_full_bound_reproduces_the_exact_posterior(diffusion, oracle, maps, exact, grid, thetas):
    report = []
    x0s = unit(maps, TIGHT)
    # noise-free: the closed-form expectation of the whole bound (and of its t <= 10 part)
    terms = np.stack([oracle.expected_bound(x0s, th, diffusion, return_terms=True)[1] for th in thetas], axis=1)
    prior = diffusion.prior_kl(torch.from_numpy(x0s)[:, None]).numpy()
    for i in range(2):
        e_full = compare(GridPosterior.from_potential(*grid, (terms[i].sum(1) + prior[i]).reshape(NG, NG)), exact[i])
        e_trunc = compare(GridPosterior.from_potential(*grid, terms[i][:, :11].sum(1).reshape(NG, NG)), exact[i])
        for p in ("omega_m", "sigma_8"):
            assert abs(e_full[f"shift_{p}"]) <= 0.15
            assert abs(e_full[f"width_{p}"] - 1) <= 0.05
        assert e_trunc["kl"] > 10 * e_full["kl"]
        # Monte Carlo: the "full" estimator (default settings) and the authors' truncation
        res = {}
        for est in ("full", "truncated"):
            pot = Potential(oracle, diffusion, np.log10(maps[i]), TIGHT, estimator=est)
            t0 = time.perf_counter()
            post = grid_posterior(pot, *grid)
            res[est] = (compare(post, exact[i]), post.evaluations, time.perf_counter() - t0)
        full, trunc = res["full"][0], res["truncated"][0]
        assert res["full"][1] == NG**2 * (sum(FULL_DRAWS_COUNT()) + 80)
        assert res["truncated"][1] == NG**2 * 11
        # one noise seed: the posterior moves by the Monte Carlo noise of the bound (its
        # standard deviation is ~0.3 sigma for 164 evaluations per theta here; see the
        # slow test for the strict thresholds with more draws)
        for p in ("omega_m", "sigma_8"):
            assert abs(full[f"shift_{p}"]) <= 0.75
            assert abs(full[f"width_{p}"] - 1) <= 0.15
        # the truncated sum is measurably worse: much larger KL, and wider
        assert trunc["kl"] > 4 * full["kl"] and trunc["kl"] > 0.3
        assert max(trunc["width_omega_m"], trunc["width_sigma_8"]) > 1.3
        report.append((i, e_full, e_trunc, res))
    print()
    for i, e_full, e_trunc, res in report:
        print(f"field {i}: exact mean {np.round(exact[i].mean, 4)} std {np.round(exact[i].std, 4)}")
        print(f"  noise-free full bound : {_fmt(e_full)}")
        print(f"  noise-free t<=10      : {_fmt(e_trunc)}")
        for est, (c, ev, dt) in res.items():
            print(f"  MC {est:9s} ({ev} evaluations, {dt:.1f} s): {_fmt(c)}")


def FULL_DRAWS_COUNT():
    """Noise draws of the default "full" estimator at t = 0..19 ({t_end: draws at t < t_end})."""
    return [next((FULL_DRAWS[e] for e in sorted(FULL_DRAWS) if t < e), 1) for t in range(20)]


@pytest.mark.slow
def test_full_bound_with_many_draws_meets_the_strict_thresholds(request, diffusion, oracle, maps, exact, grid):
    """With 8 noise draws at every t (8000 evaluations per theta) the Monte Carlo noise is
    ~0.05 sigma and the posterior is within 0.15 sigma and 5% of the exact one. Also reports
    the single-draw exact sum (the prototype's and nll_bound's estimator) for comparison.
    ~880,000 oracle evaluations: 4-5 minutes on two busy cores, so opt-in: run with
    ``-m slow`` or COSMODIFF_SLOW=1."""
    if "slow" not in (request.config.getoption("markexpr") or "") and not os.environ.get("COSMODIFF_SLOW"):
        pytest.skip("4-5 minutes: run with -m slow or COSMODIFF_SLOW=1")
    print()
    for i in range(2):
        for n_noise in (1, 8):
            pot = Potential(oracle, diffusion, np.log10(maps[i]), TIGHT, estimator="exact", n_noise=n_noise)
            t0 = time.perf_counter()
            c = compare(grid_posterior(pot, *grid), exact[i])
            print(f"field {i}, exact sum x {n_noise} draws ({pot.evaluations} evaluations, "
                  f"{time.perf_counter() - t0:.0f} s): {_fmt(c)}")
        for p in ("omega_m", "sigma_8"):
            assert abs(c[f"shift_{p}"]) <= 0.15
            assert abs(c[f"width_{p}"] - 1) <= 0.05


# --------------------------------------------------------------------------------------------
# d. common random numbers make the surface smooth
# --------------------------------------------------------------------------------------------


def test_common_random_numbers_smooth_the_surface(diffusion, oracle, maps, grid):
    om, s8 = grid
    line = np.stack([om, np.full_like(om, s8[NG // 2])], axis=1)  # omega_m line through the truth
    field = np.log10(maps[0])
    crn = Potential(oracle, diffusion, field, TIGHT, noise_seed=0)(line)
    indep = np.concatenate(
        [Potential(oracle, diffusion, field, TIGHT, noise_seed=100 + k)(line[k : k + 1]) for k in range(len(line))]
    )
    truth = np.array([oracle.expected_bound(unit(maps[0], TIGHT)[None], th, diffusion)[0] for th in line])
    d2 = lambda u: u[2:] - 2 * u[1:-1] + u[:-2]
    rms_crn = np.sqrt(np.mean((d2(crn) - d2(truth)) ** 2))
    rms_ind = np.sqrt(np.mean((d2(indep) - d2(truth)) ** 2))
    print(f"\nrms of second differences about the noise-free ones: CRN {rms_crn:.3f}, independent {rms_ind:.3f} nats"
          f" (noise-free curvature {np.sqrt(np.mean(d2(truth) ** 2)):.3f})")
    assert rms_crn < 0.1 * rms_ind
    # a single call and point-by-point calls give the same CRN values (batching is invisible)
    pot = Potential(oracle, diffusion, field, TIGHT, noise_seed=0, batch_size=37)
    np.testing.assert_allclose([pot(th)[0] for th in line[:3]], crn[:3], rtol=0, atol=1e-9)


# --------------------------------------------------------------------------------------------
# e. the stratified "full" estimator is unbiased; evaluation counts
# --------------------------------------------------------------------------------------------


def test_strata_edges_and_timesteps():
    for spacing in (0.0, 0.5, 1.0):
        e = strata_edges(1000, 20, 80, spacing)
        assert e[0] == 20 and e[-1] == 1000 and len(e) == 81 and np.all(np.diff(e) >= 1)
    lin = strata_edges(1000, 0, 10, 1.0)
    np.testing.assert_array_equal(lin, np.arange(0, 1001, 100))
    ts, w = stratified_timesteps(1000, 20, 80, seed=3)
    assert len(ts) == 100 and w.sum() == 1000
    np.testing.assert_array_equal(ts[:20], np.arange(20))
    e = strata_edges(1000, 20, 80)
    assert np.all((ts[20:] >= e[:-1]) & (ts[20:] < e[1:]))
    ts2, _ = stratified_timesteps(1000, 20, 80, seed=3)
    np.testing.assert_array_equal(ts, ts2)
    assert not np.array_equal(ts, stratified_timesteps(1000, 20, 80, seed=4)[0])
    assert len(strata_edges(1000, 995, 5)) == 6
    with pytest.raises(ValueError):
        strata_edges(1000, 995, 6)


def test_full_estimator_is_unbiased_and_counts_evaluations(diffusion, oracle, maps):
    field = np.log10(maps[1])
    th = np.array([TRUTH, (0.34, 0.76)])
    # reference: every term, one noise draw (what nll_bound computes)
    ex = Potential(oracle, diffusion, field, TIGHT, estimator="exact", noise_seed=0)
    terms = ex.terms(th)
    assert ex.evaluations == 2 * 1000 and ex.evaluations_per_theta == 1000
    U_exact = terms.sum(1) + ex.prior
    np.testing.assert_allclose(ex(th), U_exact, rtol=1e-12)
    nb = diffusion.nll_bound(oracle, ex.x0.expand(2, -1, -1, -1), torch.from_numpy(th), noise_seed=0, batch_size=500)
    np.testing.assert_allclose(U_exact, nb.numpy(), rtol=1e-10)
    # the Potential draws its timesteps as stratified_timesteps does, and shares the noise
    for s in (0, 1):
        pot = Potential(oracle, diffusion, field, TIGHT, estimator="full", n_noise=1, noise_seed=0, strata_seed=s)
        ts, w = stratified_timesteps(1000, 20, 80, s)
        np.testing.assert_array_equal(pot.timesteps, ts)
        np.testing.assert_allclose(pot(th), terms[:, ts] @ w + ex.prior, rtol=1e-12)
        assert pot.evaluations == 2 * 100
    # unbiased over the draw of timesteps (noise fixed), with the predicted variance
    K = 400
    est = np.array([terms[:, ts] @ w for ts, w in (stratified_timesteps(1000, 20, 80, s) for s in range(K))]) + ex.prior
    se = est.std(axis=0, ddof=1) / np.sqrt(K)
    assert np.all(np.abs(est.mean(0) - U_exact) < 4 * se)
    var_pred = stratified_variance(terms, 20, 80)
    np.testing.assert_allclose(est.var(axis=0, ddof=1), var_pred, rtol=0.2)
    diff = est[:, 1] - est[:, 0]
    var_diff = stratified_variance(terms[1] - terms[0], 20, 80)
    assert abs(diff.mean() - (U_exact[1] - U_exact[0])) < 4 * np.sqrt(var_diff / K)
    # unbiased over the noise too: default "full" (extra draws at small t, its own seed)
    # averaged over noise seeds equals the closed-form expectation of the whole bound
    x0 = unit(maps[1], TIGHT)[None]
    expected = np.array([oracle.expected_bound(x0, t, diffusion)[0] for t in th])
    runs = []
    for s in range(16):
        pot = Potential(oracle, diffusion, field, TIGHT, noise_seed=1000 + s)
        runs.append(pot(th))
    runs = np.array(runs)
    assert pot.evaluations == 2 * pot.evaluations_per_theta == 2 * (sum(FULL_DRAWS_COUNT()) + 80)
    se = runs.std(axis=0, ddof=1) / np.sqrt(len(runs))
    assert np.all(np.abs(runs.mean(0) - expected) < 4 * se)
    d_se = (runs[:, 1] - runs[:, 0]).std(ddof=1) / np.sqrt(len(runs))
    assert abs((runs[:, 1] - runs[:, 0]).mean() - (expected[1] - expected[0])) < 4 * d_se
    print(f"\nU at truth: exact sum {U_exact[0]:.2f}; stratified (n_noise=1) sd {np.sqrt(var_pred[0]):.2f} nats at "
          f"100 vs 1000 evaluations; default full sd {runs[:, 0].std(ddof=1):.2f} nats (sd of the difference "
          f"{(runs[:, 1] - runs[:, 0]).std(ddof=1):.2f}, {pot.evaluations_per_theta} evaluations)")


def test_truncated_and_options(diffusion, oracle, maps):
    field = np.log10(maps[0])
    tr = Potential(oracle, diffusion, field, TIGHT, estimator="truncated", t_max=10)
    assert tr.evaluations_per_theta == 11 and tr.prior == 0.0
    terms = Potential(oracle, diffusion, field, TIGHT, estimator="exact").terms(TRUTH)
    np.testing.assert_allclose(tr(TRUTH), terms[:, :11].sum(1), rtol=1e-12)
    anti = Potential(oracle, diffusion, field, TIGHT, estimator="truncated", antithetic=True, n_noise=2)
    assert anti.evaluations_per_theta == 44
    assert np.isfinite(anti(TRUTH)).all()
    with pytest.raises(ValueError):
        Potential(oracle, diffusion, field, TIGHT, estimator="nope")
    with pytest.raises(ValueError):
        Potential(oracle, diffusion, field[None], TIGHT)


# --------------------------------------------------------------------------------------------
# f. coarse to fine
# --------------------------------------------------------------------------------------------


class _Counting:
    """A callable potential that counts 7 'network evaluations' per point."""

    def __init__(self, U):
        self.U, self.evaluations = U, 0

    def __call__(self, theta):
        theta = np.asarray(theta).reshape(-1, 2)
        self.evaluations += 7 * len(theta)
        return self.U(theta)


@pytest.mark.parametrize(
    "mean, sig, rho",
    [
        ((0.31, 0.78), (0.025, 0.03), 0.5),    # resolved by the coarse grid
        ((0.23, 0.91), (0.004, 0.006), -0.7),  # far narrower than a coarse cell
        ((0.48, 0.62), (0.02, 0.02), 0.0),     # against the prior's corner
    ],
)
def test_coarse_to_fine_matches_a_dense_grid(mean, sig, rho):
    cov = np.array([[sig[0] ** 2, rho * sig[0] * sig[1]], [rho * sig[0] * sig[1], sig[1] ** 2]])
    # a skewed potential: a Gaussian 1.4 times narrower below the mode in omega_m
    base = gaussian_potential(mean, cov)

    def U(th):
        th = np.asarray(th, dtype=np.float64).reshape(-1, 2).copy()
        below = th[:, 0] < mean[0]
        th[below, 0] = mean[0] + 1.4 * (th[below, 0] - mean[0])
        return base(th)

    pot = _Counting(U)
    dense = grid_posterior(U, np.linspace(0.1, 0.5, 801), np.linspace(0.6, 1.0, 801))
    ctf = coarse_to_fine(pot, n_coarse=11, n_fine=31)
    stages = ctf.meta["stages"]
    assert ctf.evaluations == pot.evaluations == 7 * ctf.meta["n_points"]
    assert ctf.meta["n_points"] < dense.potential.size / 50
    np.testing.assert_allclose(ctf.mean, dense.mean, atol=0.03 * dense.std.min())
    np.testing.assert_allclose(ctf.std, dense.std, rtol=0.03)
    print(f"\ncoarse_to_fine {mean}: {len(stages)} stages, {ctf.meta['n_points']} points vs {dense.potential.size}; "
          f"mean {np.round(ctf.mean, 4)} vs {np.round(dense.mean, 4)}, std {np.round(ctf.std, 4)} vs {np.round(dense.std, 4)}")
