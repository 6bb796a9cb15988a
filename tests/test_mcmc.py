"""Tests of gradient-based inference: ``Potential.torch_call``, the differentiable Wiener
oracle (:class:`TabulatedOracle`) and NUTS (:func:`cosmodiff.inference.nuts`).

Sizes (the whole module should take well under a minute on two cores): one 32 x 32 lognormal
field at (0.3, 0.8), normalisation TIGHT as in test_inference (every mode >= 17 beta_0, so the
bound is close to the likelihood; exact posterior widths 0.022-0.030). The oracle's table
covers the box (0.2, 0.4) x (0.7, 0.9) (about +-4 sigma) with 5 x 5 nodes: 25 pyccl spectra,
~0.25 s each, the largest fixed cost; its interpolation error does not enter the NUTS test,
which compares two samplers of the same potential. The potential is a cheap estimate of the
bound, 16 denoiser calls per theta ("full" with 4 exact timesteps and 12 strata, one noise
draw): with common random numbers it is a smooth, deterministic function of theta, which is
all that NUTS-versus-grid needs, and each NUTS step (one theta, one batch of 16) costs a few ms.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from cosmodiff.diffusion import GaussianDiffusion, make_betas
from cosmodiff.inference import Potential, TabulatedOracle, WienerOracle, coarse_to_fine, nuts
from cosmodiff.inference.tabulated import bspline_weights, spline_operator
from cosmodiff.synthetic import lognormal_maps
from pyro.ops.stats import effective_sample_size

TIGHT = (11.5, 11.75)
TRUTH = (0.3, 0.8)
RES = 32
BOX = {"omega_m": (0.2, 0.4), "sigma_8": (0.7, 0.9)}
CHEAP = {"estimator": "full", "t_exact": 4, "n_strata": 12, "n_noise": 1, "noise_seed": 0}  # 16 calls per theta
ANTITHETIC = {"estimator": "truncated", "t_max": 3, "n_noise": 2, "antithetic": True}  # 4 entries per timestep
INSIDE = np.array([[0.287, 0.812], [0.318, 0.779], [0.262, 0.845]])  # between the table's nodes


@pytest.fixture(scope="module")
def diffusion():
    return GaussianDiffusion(make_betas("mudur"), model_variance="fixedlarge")


@pytest.fixture(scope="module")
def field():
    """The observed field: log10 surface density (32, 32)."""
    return np.log10(lognormal_maps(*TRUTH, 1, 1, RES)[0].astype(np.float64))


@pytest.fixture(scope="module")
def oracle(diffusion):
    return TabulatedOracle(diffusion, TIGHT, RES, omega_m=BOX["omega_m"], sigma_8=BOX["sigma_8"], nodes=5)


def unit(field_log10):
    lo, hi = TIGHT
    return 2 * (field_log10 - lo) / (hi - lo) - 1


# --------------------------------------------------------------------------------------------
# the spline and the tabulated oracle
# --------------------------------------------------------------------------------------------


def test_spline_reproduces_cubics():
    for n in (4, 5, 9):
        x = np.linspace(0.2, 0.5, n)
        c = spline_operator(n) @ (x**3 - 2 * x**2 + 0.5)
        u = np.linspace(0, n - 1, 41)
        i = np.clip(np.floor(u).astype(int), 0, n - 2)
        w = bspline_weights(u - i)
        got = np.einsum("ua,ua->u", w, np.stack([c[i + a] for a in range(4)], axis=1))
        xx = x[0] + u * (x[1] - x[0])
        np.testing.assert_allclose(got, xx**3 - 2 * xx**2 + 0.5, atol=1e-13)
        np.testing.assert_allclose(w.sum(axis=1), 1, atol=1e-15)
    with pytest.raises(ValueError):
        spline_operator(3)


def test_tabulated_oracle_matches_the_exact_one(diffusion, oracle, field):
    """At the nodes it is the WienerOracle (spectrum and output); between them the
    interpolation error is small near the truth (measured with 5 x 5 nodes on this box:
    log lambda 0.031, mu 3e-5, NLL 0.25 nats); outside the table it refuses."""
    exact = WienerOracle(diffusion, TIGHT)
    node = (oracle.axes[0][2], oracle.axes[1][1])
    lam_t, mu_t = oracle.spectrum(*node, RES)
    lam_e, mu_e = exact.spectrum(*node, RES)
    np.testing.assert_allclose(lam_t.numpy(), lam_e.numpy(), rtol=1e-10)
    assert mu_t == pytest.approx(mu_e, abs=1e-12)
    x0 = torch.from_numpy(unit(field))[None, None].expand(3, -1, -1, -1)
    t = torch.tensor([0, 50, 600])
    g = torch.Generator().manual_seed(0)
    x_t = diffusion.q_sample(x0, t, torch.randn(x0.shape, generator=g, dtype=torch.float64))
    cond = torch.tensor([node] * 3, dtype=torch.float64)
    torch.testing.assert_close(oracle(x_t, t, cond), exact(x_t, t, cond), rtol=1e-9, atol=1e-9)
    mids = [(0.275, 0.775), (0.325, 0.825), (0.275, 0.825), (0.325, 0.775)]
    rows = oracle.table_error(mids, unit(field))
    print("\ntable error (5 x 5 nodes):", [{k: round(float(v), 5) for k, v in r.items()} for r in rows])
    assert max(r["log_lambda"] for r in rows) < 0.1
    assert max(abs(r["mu"]) for r in rows) < 1e-4
    assert max(abs(r["nll"]) for r in rows) < 1.0
    with pytest.raises(ValueError):
        oracle.spectrum(0.45, 0.8, RES)


# --------------------------------------------------------------------------------------------
# Potential.torch_call: the numpy path's U, and its gradient
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("options", [CHEAP, ANTITHETIC], ids=["full", "antithetic"])
def test_torch_call_equals_the_numpy_path_and_its_gradient(diffusion, oracle, field, options):
    pot = Potential(oracle, diffusion, field, TIGHT, **options)
    E = pot.evaluations_per_theta
    U = pot(INSIDE)
    assert pot.evaluations == 3 * E and pot.gradient_evaluations == 0
    # without grad: the numpy path itself
    np.testing.assert_array_equal(pot.torch_call(torch.from_numpy(INSIDE)).numpy(), U)
    # with grad: same batches, values to rounding (the table is interpolated row by row)
    theta = torch.from_numpy(INSIDE.copy()).requires_grad_(True)
    Ut = pot.torch_call(theta)
    assert Ut.dtype == torch.float64 and Ut.shape == (3,) and Ut.requires_grad
    np.testing.assert_allclose(Ut.detach().numpy(), U, rtol=1e-10)
    assert pot.gradient_evaluations == 3 * E and pot.evaluations == 9 * E  # 3 points: numpy, torch, torch with grad
    Ut.sum().backward()
    # central differences of the numpy path; h = 1e-5: truncation ~h^2 U''' and rounding
    # ~1e-12 |U| / h are both below 1e-4 nats per unit theta
    h = 1e-5
    steps = np.array([[h, 0.0], [0.0, h]])
    pts = np.concatenate([INSIDE[:, None] + steps[None], INSIDE[:, None] - steps[None]], axis=1).reshape(-1, 2)
    Us = pot(pts).reshape(3, 4)
    fd = (Us[:, :2] - Us[:, 2:]) / (2 * h)
    print(f"\n{options['estimator']}: U {np.round(U, 3)}; dU/dtheta autograd {np.round(theta.grad.numpy(), 4).tolist()}, "
          f"central differences {np.round(fd, 4).tolist()}")
    np.testing.assert_allclose(theta.grad.numpy(), fd, rtol=1e-6, atol=1e-4)
    # one point: a scalar, and a chain rule through a transform
    z = torch.tensor([0.1, -0.2], dtype=torch.float64, requires_grad=True)
    u = pot.torch_call(torch.tensor([0.3, 0.8], dtype=torch.float64) + 0.01 * z)
    assert u.shape == ()
    u.backward()
    _, g = pot.value_and_grad([0.3 + 0.001, 0.8 - 0.002])
    np.testing.assert_allclose(z.grad.numpy(), 0.01 * g[0], rtol=1e-12)


def test_torch_call_needs_a_differentiable_model(diffusion, field):
    pot = Potential(WienerOracle(diffusion, TIGHT), diffusion, field, TIGHT, **CHEAP)
    with pytest.raises(TypeError, match="TabulatedOracle"):
        pot.torch_call(torch.tensor(TRUTH, dtype=torch.float64, requires_grad=True))


# --------------------------------------------------------------------------------------------
# NUTS against the grid posterior of the same potential
# --------------------------------------------------------------------------------------------


def test_chains_start_at_the_mode_and_then_spread_over_the_coarse_posterior():
    """Chain 0 starts at the coarse grid's mode; the others at distinct points drawn from that
    grid's posterior (reproducible by seed), so R-hat compares chains from different starts."""
    from cosmodiff.inference.mcmc import _initial

    def U(theta):  # a Gaussian posterior at (0.3, 0.8), 0.03 wide in each parameter
        theta = np.asarray(theta, dtype=np.float64).reshape(-1, 2)
        return 0.5 * (((theta - [0.3, 0.8]) / 0.03) ** 2).sum(axis=1)

    starts, evaluations = _initial(U, None, 400, 11, BOX, seed=3)
    assert evaluations == 11 * 11 and starts.shape == (400, 2)  # a plain function: one per grid point
    np.testing.assert_allclose(starts[0], (0.3, 0.8))
    assert len(np.unique(starts[1:], axis=0)) == 399
    lo, hi = np.array([BOX[p][0] for p in BOX]), np.array([BOX[p][1] for p in BOX])
    assert np.all((starts >= lo - 0.01) & (starts <= hi + 0.01))  # within half a coarse cell (0.02) of the box
    np.testing.assert_allclose(starts[1:].mean(axis=0), (0.3, 0.8), atol=0.005)  # 0.03 / sqrt(399) ~ 0.0015
    assert 0.025 < starts[1:, 0].std() < 0.04  # the posterior's width, plus the cells' jitter (0.02 / sqrt(12))
    np.testing.assert_array_equal(_initial(U, None, 400, 11, BOX, seed=3)[0], starts)
    np.testing.assert_array_equal(_initial(U, None, 1, 11, BOX, seed=3)[0], starts[:1])


@pytest.mark.slow
def test_nuts_matches_the_grid_posterior(diffusion, oracle, field):
    """Two chains of 150 warmup + 200 samples (~5 leapfrog steps each after adaptation, a few
    ms per step: ~20-30 s on two cores). Means: |chain - grid| < 4 std / sqrt(ESS). Second
    moments: with z = L^-1 (theta - grid mean), L L^T the grid covariance, the chain averages
    of z_i z_j must be delta_ij within 4 sd(z_i z_j) / sqrt(ESS(z_i z_j)) (their own Monte
    Carlo error; for a Gaussian sd(z_i^2) = sqrt(2), so the variances are checked to about
    4 sqrt(2 / ESS), ~25% at ESS ~ 400, and the correlation to ~4 / sqrt(ESS)). The grid
    (coarse to fine, 31 points per axis over +-5 sigma) is accurate far beyond that."""
    pot = Potential(oracle, diffusion, field, TIGHT, batch_size=512, **CHEAP)
    ref = coarse_to_fine(pot, n_coarse=11, n_fine=31, prior=BOX)
    before = pot.evaluations
    res = nuts(pot, n_warmup=150, n_samples=200, n_chains=2, seed=0, n_coarse=7, prior=BOX)
    E = pot.evaluations_per_theta
    # every evaluation is accounted for: the start's coarse grid, then one theta per call of U
    assert res.init_evaluations == 7 * 7 * E
    assert res.network_evaluations == pot.evaluations - before == res.init_evaluations + E * res.potential_calls
    assert res.gradient_evaluations == E * res.gradient_calls and res.gradient_calls <= res.potential_calls
    assert res.samples.shape == (2, 200, 2)
    lo = np.array([BOX["omega_m"][0], BOX["sigma_8"][0]])
    hi = np.array([BOX["omega_m"][1], BOX["sigma_8"][1]])
    assert np.all((res.samples > lo) & (res.samples < hi))
    print(f"\ngrid: mean {np.round(ref.mean, 4)} std {np.round(ref.std, 4)} corr {ref.cov[0, 1] / np.prod(ref.std):.3f} "
          f"({ref.evaluations} evaluations)")
    print(f"NUTS: {res.summary()}")
    assert np.all(res.r_hat < 1.1)
    assert res.divergences <= 0.02 * res.samples[..., 0].size
    se = res.std / np.sqrt(res.ess)
    assert np.all(np.abs(res.mean - ref.mean) < 4 * se), (res.mean, ref.mean, se)
    L = np.linalg.cholesky(ref.cov)
    z = np.linalg.solve(L, (res.samples - ref.mean).reshape(-1, 2).T).T.reshape(res.samples.shape)
    for i, j in ((0, 0), (1, 1), (0, 1)):
        f = torch.from_numpy(z[..., i] * z[..., j])  # (chains, samples)
        ess = float(effective_sample_size(f, chain_dim=0, sample_dim=1))
        tol = 4 * float(f.std()) / np.sqrt(ess)
        assert abs(float(f.mean()) - (i == j)) < tol, (i, j, float(f.mean()), tol, ess)
    assert res.evaluations_per_ess == pytest.approx(res.network_evaluations / res.ess.min())
