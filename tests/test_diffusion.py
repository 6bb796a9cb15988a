"""Tests of cosmodiff.diffusion against closed forms.

Most checks use a toy data set whose optimal noise predictor is known exactly: x0 ~ N(mu, s^2)
independently per pixel. Then x_t = a x0 + b eps (a = sqrt(abar_t), b = sqrt(1 - abar_t)) is
jointly Gaussian with eps, and E[eps | x_t] = b (x_t - a mu) / (a^2 s^2 + b^2). The
conditioning (B, 2) carries (mu, s), standing in for the physical parameters.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from cosmodiff import sampling
from cosmodiff.diffusion import (
    SCHEDULES,
    GaussianDiffusion,
    LowTSampler,
    UniformSampler,
    crn_noise,
    gaussian_nll,
    make_betas,
    make_sampler,
    normal_kl,
)

T = 1000
# abar_{T-1} of the authors' schedule, float64 (their float32 torch code gives 9.07877e-5)
MUDUR_ABAR_T = 9.0788e-5


def optimal_model(diffusion):
    """The exact E[eps | x_t] for x0 ~ N(mu, s^2) per pixel, with cond[:, 0] = mu, cond[:, 1] = s."""
    abar = torch.from_numpy(diffusion.alphas_cumprod)

    def model(x, t, cond):
        a2 = abar[t.cpu()].to(x).view(-1, *([1] * (x.ndim - 1)))
        mu = cond[:, 0].to(x).view_as(a2)
        s = cond[:, 1].to(x).view_as(a2)
        return (1 - a2).sqrt() * (x - a2.sqrt() * mu) / (a2 * s**2 + 1 - a2)

    return model


def toy_nll(x0, mu, s):
    """Exact -log N(x0; mu, s^2 I) per map, nats."""
    per = 0.5 * math.log(2 * math.pi * s**2) + (x0 - mu) ** 2 / (2 * s**2)
    return per.sum(dim=tuple(range(1, x0.ndim)))


def expected_bound_per_pixel(betas, model_variance, x0, mu, s):
    """E over the forward noise of every bound term, for the toy's optimal predictor, summed
    over t, per pixel of x0 (numpy); derived here from the definitions, independently of the
    library: x0_hat - x0 = -(x0 - mu) b^2 / v + a b s^2 / v eps with v = a^2 s^2 + b^2."""
    betas = np.asarray(betas, dtype=np.float64)
    abar = np.cumprod(1.0 - betas)
    abar_prev = np.concatenate([[1.0], abar[:-1]])
    a2, b2 = abar[:, None], 1.0 - abar[:, None]
    v = a2 * s**2 + b2
    x0 = np.asarray(x0, dtype=np.float64).reshape(1, -1)
    err2 = (x0 - mu) ** 2 * b2**2 / v**2 + a2 * b2 * s**4 / v**2  # E (x0_hat - x0)^2
    coef1 = (betas * np.sqrt(abar_prev) / (1.0 - abar))[:, None]
    var_q = (betas * (1.0 - abar_prev) / (1.0 - abar))[:, None]
    var_p = var_q.copy() if model_variance == "fixedsmall" else betas[:, None].copy()
    var_p[0] = betas[0]
    kl = 0.5 * (np.log(var_p[1:] / var_q[1:]) + var_q[1:] / var_p[1:] - 1) + coef1[1:] ** 2 * err2[1:] / (
        2 * var_p[1:]
    )
    decoder = 0.5 * np.log(2 * np.pi * var_p[0]) + err2[0] / (2 * var_p[0])
    aT = abar[-1]
    prior = 0.5 * (-1.0 - np.log(1.0 - aT) + (1.0 - aT) + aT * x0[0] ** 2)
    return decoder + kl.sum(axis=0) + prior


# --------------------------------------------------------------------------------------------
# 1. schedules
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", SCHEDULES)
def test_alpha_bar_is_the_cumulative_product(name):
    betas = make_betas(name)
    assert betas.dtype == np.float64 and betas.shape == (T,)
    assert np.all(betas > 0) and np.all(betas < 1)
    d = GaussianDiffusion(betas)
    direct = []
    prod = 1.0
    for b in betas:
        prod *= 1.0 - float(b)
        direct.append(prod)
    np.testing.assert_allclose(d.alphas_cumprod, direct, rtol=1e-12)
    np.testing.assert_allclose(d.alphas_cumprod_prev[1:], direct[:-1], rtol=1e-12)
    assert d.alphas_cumprod_prev[0] == 1.0
    assert d.T == T


def test_mudur_schedule_endpoints_and_alpha_bar_T():
    betas = make_betas("mudur")
    assert betas[0] == pytest.approx(1e-4, rel=1e-12)
    assert betas[-1] == pytest.approx(0.03, rel=1e-12)
    # independent derivation: beta_i = 1e-4 + i (1e-2 - 1e-4) / 999, times 1 + 2 (i - 500) / 499
    # for i >= 500 (np.linspace(1, 3, 500)); abar_T from a compensated sum of logs
    expected_betas = [
        (1e-4 + i * (1e-2 - 1e-4) / 999) * (1.0 if i < 500 else 1.0 + 2.0 * (i - 500) / 499) for i in range(T)
    ]
    np.testing.assert_allclose(betas, expected_betas, rtol=1e-12)
    abar_T = math.exp(math.fsum(math.log1p(-b) for b in expected_betas))
    d = GaussianDiffusion(betas)
    assert d.alphas_cumprod[-1] == pytest.approx(abar_T, rel=1e-3)
    assert abar_T == pytest.approx(MUDUR_ABAR_T, rel=1e-3)  # "about 9e-5"
    # the ramp starts at step 500: continuous there, and the second half grows faster
    assert betas[500] == pytest.approx(expected_betas[500]) and betas[499] < betas[500]


def test_linear_and_cosine_schedules():
    lin = make_betas("linear")
    assert lin[0] == pytest.approx(1e-4) and lin[-1] == pytest.approx(0.02)
    assert np.prod(1 - lin) == pytest.approx(4.0358e-5, rel=1e-3)
    cos = make_betas("cosine")
    assert cos.max() <= 0.999 and cos[-1] == pytest.approx(0.999)
    f = np.cos((np.arange(T + 1) / T + 0.008) / 1.008 * np.pi / 2) ** 2
    abar = np.cumprod(1 - cos)
    np.testing.assert_allclose(abar[:-1], (f[1:] / f[0])[:-1], rtol=1e-9)  # unclipped steps
    with pytest.raises(ValueError, match="unknown schedule"):
        make_betas("quadratic")


# --------------------------------------------------------------------------------------------
# 2. posterior q(x_{t-1} | x_t, x_0)
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", SCHEDULES)
def test_q_posterior_matches_bayes_rule(name):
    d = GaussianDiffusion(make_betas(name))
    abar, betas = d.alphas_cumprod, d.betas
    x0, xt = 0.7, -0.4
    for t in (1, 2, 10, 500, 998, 999):
        # prior q(x_{t-1} | x0) = N(sqrt(abar_{t-1}) x0, 1 - abar_{t-1});
        # likelihood q(x_t | x_{t-1}) = N(sqrt(1 - beta_t) x_{t-1}, beta_t)
        m0, v0 = math.sqrt(abar[t - 1]) * x0, 1 - abar[t - 1]
        c, vl = math.sqrt(1 - betas[t]), betas[t]
        prec = 1 / v0 + c * c / vl
        mean_cf, var_cf = (m0 / v0 + c * xt / vl) / prec, 1 / prec
        # numerical Bayes on a grid of +-12 sd around it
        grid = np.linspace(mean_cf - 12 * math.sqrt(var_cf), mean_cf + 12 * math.sqrt(var_cf), 200001)
        logp = -((grid - m0) ** 2) / (2 * v0) - (xt - c * grid) ** 2 / (2 * vl)
        w = np.exp(logp - logp.max())
        w /= w.sum()
        mean_num = float((w * grid).sum())
        var_num = float((w * (grid - mean_num) ** 2).sum())
        mean, var, logvar = d.q_posterior(
            torch.tensor([[x0]], dtype=torch.float64), torch.tensor([[xt]], dtype=torch.float64), torch.tensor([t])
        )
        assert mean.item() == pytest.approx(mean_num, rel=1e-9, abs=1e-12)
        assert var.item() == pytest.approx(var_num, rel=1e-6)
        assert mean.item() == pytest.approx(mean_cf, rel=1e-12, abs=1e-14)
        assert var.item() == pytest.approx(var_cf, rel=1e-12)
        assert logvar.item() == pytest.approx(math.log(var_cf), rel=1e-12)
    # t = 0: q(x_0 | x_1, x_0) is a point mass at x0 (log variance clipped to its t = 1 value)
    mean, var, logvar = d.q_posterior(torch.tensor([[x0]]), torch.tensor([[xt]]), torch.tensor([0]))
    assert mean.item() == pytest.approx(x0) and var.item() == 0.0 and math.isfinite(logvar.item())


def test_q_posterior_batched_mixed_t_and_dtypes():
    d = GaussianDiffusion(make_betas("mudur"))
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(5, 1, 3, 3, generator=g)
    xt = torch.randn(5, 1, 3, 3, generator=g)
    t = torch.tensor([1, 7, 300, 600, 999])
    mean, var, _ = d.q_posterior(x0, xt, t)
    assert mean.dtype == torch.float32 and mean.shape == x0.shape and var.shape == (5, 1, 1, 1)
    m64, v64, _ = d.q_posterior(x0.double(), xt.double(), t)
    assert m64.dtype == torch.float64
    for i, ti in enumerate(t.tolist()):
        mi, vi, _ = d.q_posterior(x0[i : i + 1].double(), xt[i : i + 1].double(), ti)
        torch.testing.assert_close(m64[i : i + 1], mi)
        torch.testing.assert_close(v64[i : i + 1], vi)
    torch.testing.assert_close(mean, m64.float())


# --------------------------------------------------------------------------------------------
# 3. Gaussian helpers
# --------------------------------------------------------------------------------------------


def test_normal_kl_against_monte_carlo_and_closed_form():
    m1, v1, m2, v2 = 0.3, 0.5, -0.2, 1.7
    kl = normal_kl(torch.tensor(m1, dtype=torch.float64), math.log(v1), m2, math.log(v2)).item()
    closed = 0.5 * (math.log(v2 / v1) + (v1 + (m1 - m2) ** 2) / v2 - 1)
    assert kl == pytest.approx(closed, rel=1e-12)
    g = torch.Generator().manual_seed(0)
    x = m1 + math.sqrt(v1) * torch.randn(2_000_000, generator=g, dtype=torch.float64)
    lr = torch.distributions.Normal(m1, math.sqrt(v1)).log_prob(x) - torch.distributions.Normal(
        m2, math.sqrt(v2)
    ).log_prob(x)
    assert lr.mean().item() == pytest.approx(kl, abs=4 * lr.std().item() / math.sqrt(x.numel()))
    assert normal_kl(torch.tensor(0.4), -1.0, torch.tensor(0.4), -1.0).item() == pytest.approx(0.0, abs=1e-7)
    # gaussian_nll is the negative log density
    nll = gaussian_nll(x[:10], torch.tensor(m2, dtype=torch.float64), torch.tensor(math.log(v2)))
    torch.testing.assert_close(nll, -torch.distributions.Normal(m2, math.sqrt(v2)).log_prob(x[:10]))


# --------------------------------------------------------------------------------------------
# 4. forward process
# --------------------------------------------------------------------------------------------


def test_q_sample_moments_and_inverse():
    d = GaussianDiffusion(make_betas("mudur"))
    n = 200_000
    x0 = torch.full((n, 1), 0.7)
    g = torch.Generator().manual_seed(1)
    for t in (0, 100, 700, 999):
        xt = d.q_sample(x0, torch.full((n,), t), torch.randn(n, 1, generator=g))
        assert xt.dtype == torch.float32
        m, v = math.sqrt(d.alphas_cumprod[t]) * 0.7, 1 - d.alphas_cumprod[t]
        assert xt.mean().item() == pytest.approx(m, abs=5 * math.sqrt(v / n))
        assert xt.var().item() == pytest.approx(v, rel=5 * math.sqrt(2 / n))
    # predict_x0 inverts q_sample given the true noise (float64)
    x0 = torch.randn(4, 1, 8, 8, generator=g, dtype=torch.float64)
    eps = torch.randn(4, 1, 8, 8, generator=g, dtype=torch.float64)
    t = torch.tensor([0, 10, 500, 999])
    xt = d.q_sample(x0, t, eps)
    torch.testing.assert_close(d.predict_x0(xt, t, eps), x0, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(d.predict_eps(xt, t, x0), eps, rtol=1e-9, atol=1e-9)


# --------------------------------------------------------------------------------------------
# bound terms one by one, by hand
# --------------------------------------------------------------------------------------------


def test_vb_terms_by_hand():
    d = GaussianDiffusion(make_betas("mudur"))
    g = torch.Generator().manual_seed(2)
    x0 = 0.5 * torch.randn(3, 1, 4, 4, generator=g, dtype=torch.float64)
    noise = torch.randn(3, 1, 4, 4, generator=g, dtype=torch.float64)
    cond = torch.tensor([[0.1, 0.6]] * 3, dtype=torch.float64)

    def model(x, t, c):  # any predictor; a deliberately imperfect one
        return 0.3 * x + 0.1 * c[:, :1, None, None]

    t = torch.tensor([0, 1, 640])
    terms = d.vb_terms(model, x0, cond, t, noise)
    for i, ti in enumerate(t.tolist()):
        ab, ab_prev, b = d.alphas_cumprod[ti], d.alphas_cumprod_prev[ti], d.betas[ti]
        xt = math.sqrt(ab) * x0[i] + math.sqrt(1 - ab) * noise[i]
        eps = model(xt[None], t[i : i + 1], cond[i : i + 1])[0]
        x0_hat = (xt - math.sqrt(1 - ab) * eps) / math.sqrt(ab)
        c1, c2 = b * math.sqrt(ab_prev) / (1 - ab), (1 - ab_prev) * math.sqrt(1 - b) / (1 - ab)
        mean_p = c1 * x0_hat + c2 * xt
        if ti == 0:
            want = (0.5 * math.log(2 * math.pi * b) + (x0[i] - mean_p) ** 2 / (2 * b)).sum()
        else:
            var = b * (1 - ab_prev) / (1 - ab)
            want = ((c1 * (x0[i] - x0_hat)) ** 2 / (2 * var)).sum()  # same variances: mean term only
        assert terms[i].item() == pytest.approx(want.item(), rel=1e-10)
    # fixedlarge: model variance beta_t for t >= 1, beta_0 at t = 0
    dl = GaussianDiffusion(make_betas("mudur"), model_variance="fixedlarge")
    np.testing.assert_allclose(dl.model_variance, dl.betas)
    assert d.model_variance[0] == d.betas[0]
    np.testing.assert_allclose(d.model_variance[1:], d.posterior_variance[1:])
    # prior term: KL(N(sqrt(abar) x0, 1 - abar) || N(0, 1)) summed over pixels
    aT = d.alphas_cumprod[-1]
    want = (0.5 * (-1 - math.log(1 - aT) + (1 - aT) + aT * x0**2)).sum(dim=(1, 2, 3))
    torch.testing.assert_close(d.prior_kl(x0), want)


# --------------------------------------------------------------------------------------------
# 5. the bound against the exact likelihood of the Gaussian toy
# --------------------------------------------------------------------------------------------


def test_nll_bound_of_gaussian_toy_matches_exact_nll():
    mu, s = 0.3, 0.5
    B, shape = 32, (1, 16, 16)
    npx = 16 * 16
    g = torch.Generator().manual_seed(3)
    x0 = mu + s * torch.randn((B, *shape), generator=g, dtype=torch.float64)
    cond = torch.tensor([[mu, s]] * B, dtype=torch.float64)
    wrong = torch.tensor([[mu + 0.1, s]] * B, dtype=torch.float64)
    nll = toy_nll(x0, mu, s)
    seeds = list(range(100, 100 + B))  # independent noise per map: averages over maps
    report = {}
    for mv in ("fixedsmall", "fixedlarge"):
        d = GaussianDiffusion(make_betas("mudur"), model_variance=mv)
        model = optimal_model(d)
        bound = d.nll_bound(model, x0, cond, noise_seed=seeds, batch_size=4096)
        assert bound.shape == (B,) and bound.dtype == torch.float64
        gap = (bound - nll) / npx  # nats per pixel, per map
        se = gap.std().item() / math.sqrt(B)
        expected = expected_bound_per_pixel(d.betas, mv, x0.numpy(), mu, s).reshape(B, -1).sum(1) / npx
        exp_gap = float(np.mean(expected - nll.numpy() / npx))
        # the Monte-Carlo bound agrees with its expectation derived independently above
        assert gap.mean().item() == pytest.approx(exp_gap, abs=4 * se)
        # on average over x0 the bound is above the true NLL (up to Monte-Carlo error)
        assert gap.mean().item() > -3 * se and exp_gap > 0
        # the bound discriminates parameters: a wrong mu costs about what the exact NLL says
        bound_wrong = d.nll_bound(model, x0, wrong, noise_seed=seeds, batch_size=4096)
        excess = (bound_wrong - bound).mean().item()
        exact_excess = (toy_nll(x0, mu + 0.1, s) - nll).mean().item()
        assert excess > 0 and excess == pytest.approx(exact_excess, rel=0.1)
        report[mv] = (gap.mean().item(), se, exp_gap, excess / npx, exact_excess / npx)
    # fixedlarge is tight: gap < 0.05 nats per pixel (measured ~1e-3 in expectation)
    assert abs(report["fixedlarge"][0]) < 0.05 and report["fixedlarge"][2] < 0.005
    # fixedsmall (the authors' choice) is a looser bound: ~0.38 nats per pixel in expectation,
    # from sum_t 0.5 (r_t - 1 - log r_t), r_t = beta_t / beta_tilde_t, at small t
    assert 0.3 < report["fixedsmall"][2] < 0.45
    nll_px = nll.mean().item() / npx
    print(f"\nGaussian toy mu={mu} s={s}, mudur schedule, all T: exact NLL {nll_px:.4f} nats/px")
    for mv, (g_mc, se, g_exp, exc, exc_exact) in report.items():
        print(
            f"  {mv}: bound - NLL = {g_mc:+.4f} +- {se:.4f} nats/px (MC), {g_exp:+.4f} (expectation);"
            f" mu+0.1 excess {exc:.4f} vs exact {exc_exact:.4f} nats/px"
        )


# --------------------------------------------------------------------------------------------
# 6. samplers
# --------------------------------------------------------------------------------------------


def _calls(model):
    counter = {"n": 0}

    def wrapped(x, t, c):
        counter["n"] += 1
        return model(x, t, c)

    return wrapped, counter


def test_ancestral_sampling_moments_and_determinism():
    mu, s = 0.3, 0.5
    d = GaussianDiffusion(make_betas("mudur"))
    model, counter = _calls(optimal_model(d))
    B, shape = 256, (256, 1, 8, 8)
    cond = torch.tensor([[mu, s]] * B)
    x = sampling.ancestral_sample(d, model, shape, cond, generator=torch.Generator().manual_seed(0))
    assert counter["n"] == T and x.shape == shape and x.dtype == torch.float32
    n = x.numel()
    assert x.mean().item() == pytest.approx(mu, abs=4 * s / math.sqrt(n))
    assert x.std().item() == pytest.approx(s, rel=0.03)
    small = (4, 1, 4, 4)
    a = sampling.ancestral_sample(d, model, small, cond[:4], generator=torch.Generator().manual_seed(5))
    b = sampling.ancestral_sample(d, model, small, cond[:4], generator=torch.Generator().manual_seed(5))
    c = sampling.ancestral_sample(d, model, small, cond[:4], generator=torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_ddim_sampling_moments_spacing_and_determinism():
    mu, s = 0.3, 0.5
    d = GaussianDiffusion(make_betas("mudur"))
    ts = sampling.ddim_timesteps(d, 50)
    assert ts[0] == 0 and ts[-1] == T - 1 and len(np.unique(ts)) == 50
    assert set(np.diff(ts).tolist()) <= {20, 21}
    model, counter = _calls(optimal_model(d))
    B, shape = 1024, (1024, 1, 8, 8)
    cond = torch.tensor([[mu, s]] * B, dtype=torch.float64)
    x = sampling.ddim_sample(d, model, shape, cond, steps=50, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert counter["n"] == 50 and x.dtype == torch.float64
    # deterministic DDIM maps x_T ~ N(0, 1) linearly for this toy: its exact output std
    abar, var = d.alphas_cumprod, 1.0
    for i, j in zip(ts[::-1], [*ts[::-1][1:], -1]):
        v_t = abar[i] * s**2 + 1 - abar[i]
        k = math.sqrt(abar[i]) * s**2 / v_t
        if j >= 0:
            k = (math.sqrt(abar[j] * abar[i]) * s**2 + math.sqrt((1 - abar[j]) * (1 - abar[i]))) / v_t
        var *= k * k
    n = x.numel()
    assert x.mean().item() == pytest.approx(mu, abs=4 * s / math.sqrt(n))
    assert x.std().item() == pytest.approx(math.sqrt(var), rel=0.02)
    assert x.std().item() == pytest.approx(s, rel=0.06)  # DDIM-50 is 4% narrow on this toy
    a = sampling.ddim_sample(d, model, (4, 1, 4, 4), cond[:4], generator=torch.Generator().manual_seed(9))
    b = sampling.ddim_sample(d, model, (4, 1, 4, 4), cond[:4], generator=torch.Generator().manual_seed(9))
    assert torch.equal(a, b)
    with pytest.raises(ValueError):
        sampling.ddim_timesteps(d, 1)


# --------------------------------------------------------------------------------------------
# 7. training loss and timestep samplers
# --------------------------------------------------------------------------------------------


def test_training_loss_selection_and_weights():
    g = torch.Generator().manual_seed(4)
    x0 = torch.randn(6, 1, 4, 4, generator=g)
    noise = 2 * torch.randn(6, 1, 4, 4, generator=g)  # large enough to reach Huber's linear part
    t = torch.tensor([0, 1, 2, 3, 500, 999])

    def zero(x, t, c):
        return torch.zeros_like(x)

    for loss, fn in (("huber", lambda e: F.smooth_l1_loss(torch.zeros_like(e), e, reduction="none")),
                     ("mse", lambda e: e**2)):
        d = GaussianDiffusion(make_betas("mudur"), loss=loss)
        got = d.training_losses(zero, x0, None, t=t, noise=noise)
        torch.testing.assert_close(got, fn(noise).mean(dim=(1, 2, 3)))
        w = torch.arange(1.0, 7.0)
        torch.testing.assert_close(d.training_losses(zero, x0, None, t=t, noise=noise, weights=w), got * w)
    with pytest.raises(ValueError):
        GaussianDiffusion(make_betas("mudur"), loss="l3")


def _loss_floor(d, s):
    """Var(eps | x_t) per timestep for the toy: the minimum of the MSE loss."""
    abar = d.alphas_cumprod
    return abar * s**2 / (abar * s**2 + 1 - abar)


def test_mse_loss_of_optimal_predictor_is_the_posterior_variance():
    mu, s = 0.3, 0.5
    d = GaussianDiffusion(make_betas("mudur"), loss="mse")
    reps = 8
    t = torch.arange(T).repeat(reps)  # exact enumeration of t, reps maps each
    g = torch.Generator().manual_seed(5)
    x0 = mu + s * torch.randn(T * reps, 1, 8, 8, generator=g, dtype=torch.float64)
    cond = torch.tensor([[mu, s]], dtype=torch.float64).expand(T * reps, 2)
    noise = torch.randn(x0.shape, generator=g, dtype=torch.float64)
    loss = d.training_losses(optimal_model(d), x0, cond, t=t, noise=noise)
    assert loss.mean().item() == pytest.approx(_loss_floor(d, s).mean(), rel=0.01)


def test_lowt_sampler_weights_are_unbiased():
    T_ = T
    sampler = make_sampler("lowt", T_, t_small=20, p=0.2)
    assert isinstance(sampler, LowTSampler)
    p, w = sampler.probs(), sampler.weights()
    assert p.sum() == pytest.approx(1.0) and p[0] > 10 * p[-1]
    d = GaussianDiffusion(make_betas("mudur"), loss="mse")
    L = _loss_floor(d, 0.5)
    # exact enumeration over t: E_p[w L] = uniform mean of L, for this L and any other
    assert float((p * w * L).sum()) == pytest.approx(L.mean(), rel=1e-12)
    rng = np.random.default_rng(0)
    for _ in range(3):
        other = rng.random(T_)
        assert float((p * w * other).sum()) == pytest.approx(other.mean(), rel=1e-12)
    # sampled t: frequencies and the weighted Monte-Carlo mean
    t, wt = sampler.sample(200_000, generator=torch.Generator().manual_seed(0))
    assert t.dtype == torch.long and wt.shape == t.shape
    frac = (t < 20).double().mean().item()
    assert frac == pytest.approx(0.2 + 0.8 * 20 / T_, abs=0.005)
    torch.testing.assert_close(wt.double(), torch.from_numpy(w)[t], rtol=1e-6, atol=0)
    est = (wt.double() * torch.from_numpy(L)[t]).mean().item()
    assert est == pytest.approx(L.mean(), rel=0.01)
    # uniform sampler: weights 1
    tu, wu = UniformSampler(T_).sample(1000, generator=torch.Generator().manual_seed(0))
    assert torch.all(wu == 1) and 0 <= tu.min() and tu.max() < T_


def test_training_losses_with_lowt_sampler_estimate_the_uniform_loss():
    mu, s = 0.3, 0.5
    d = GaussianDiffusion(make_betas("mudur"), loss="mse", sampler=LowTSampler(T, t_small=20, p=0.5))
    n = 40_000
    g = torch.Generator().manual_seed(6)
    x0 = mu + s * torch.randn(n, 1, 2, 2, generator=g, dtype=torch.float64)
    cond = torch.tensor([[mu, s]], dtype=torch.float64).expand(n, 2)
    loss = d.training_losses(optimal_model(d), x0, cond, generator=g)
    uniform = _loss_floor(d, s).mean()
    assert loss.mean().item() == pytest.approx(uniform, rel=0.03)


# --------------------------------------------------------------------------------------------
# 8. common random numbers
# --------------------------------------------------------------------------------------------


def test_nll_bound_uses_common_random_numbers_across_cond():
    d = GaussianDiffusion(make_betas("mudur"))
    seen = []

    def recorder(x, t, cond):
        for i in range(x.shape[0]):
            seen.append((int(t[i]), tuple(cond[i].tolist()), x[i].clone()))
        return 0.1 * x + cond[:, :1, None, None]

    g = torch.Generator().manual_seed(7)
    x0 = torch.randn(1, 1, 4, 4, generator=g)
    c1, c2 = torch.tensor([[0.3, 0.8]]), torch.tensor([[0.25, 0.7]])
    ts = [0, 1, 5, 999]
    b1 = d.nll_bound(recorder, x0, c1, timesteps=ts, noise_seed=11)
    first = {t: x for t, _, x in seen}
    seen.clear()
    b2 = d.nll_bound(recorder, x0, c2, timesteps=ts, noise_seed=11)
    for t, _, x in seen:
        assert torch.equal(x, first[t])  # identical x_t, hence identical noise, at another cond
    assert not torch.equal(first[0], first[1])
    assert b1.item() != b2.item()
    # same x0 at both cond values in one batch, and chunked differently: identical inputs again
    seen.clear()
    both = d.nll_bound(recorder, x0.repeat(2, 1, 1, 1), torch.cat([c1, c2]), timesteps=ts, noise_seed=11,
                       batch_size=3)
    for t, c, x in seen:
        assert torch.equal(x, first[t])
    torch.testing.assert_close(both, torch.cat([b1, b2]))
    # another seed, other noise; per-map seeds give each map its own stream
    seen.clear()
    d.nll_bound(recorder, x0, c1, timesteps=[5], noise_seed=12)
    assert not torch.equal(seen[0][2], first[5])
    n1 = crn_noise(11, 5, (1, 4, 4))
    n2 = crn_noise(12, 5, (1, 4, 4))
    assert n1.dtype == torch.float64 and not torch.equal(n1, n2)
    torch.testing.assert_close(crn_noise(11, 5, (1, 4, 4)), n1, rtol=0, atol=0)


def test_nll_bound_float32_float64_chunking_and_gradients():
    mu, s = 0.3, 0.5
    d = GaussianDiffusion(make_betas("mudur"))
    g = torch.Generator().manual_seed(8)
    x0 = mu + s * torch.randn(3, 1, 8, 8, generator=g, dtype=torch.float64)
    cond = torch.tensor([[mu, s]] * 3, dtype=torch.float64)
    ts = list(range(11)) + [500, 999]
    model = optimal_model(d)
    b64 = d.nll_bound(model, x0, cond, timesteps=ts)
    b32 = d.nll_bound(model, x0.float(), cond.float(), timesteps=ts)
    b64c, terms = d.nll_bound(model, x0, cond, timesteps=ts, batch_size=1, return_terms=True)
    torch.testing.assert_close(b64c, b64)
    assert terms.shape == (3, len(ts))
    torch.testing.assert_close(terms.sum(1) + d.prior_kl(x0), b64)
    assert b32.dtype == torch.float64
    torch.testing.assert_close(b32, b64, rtol=1e-4, atol=1e-2)
    # differentiable in the parameters (for HMC on the bound)
    theta = cond.clone().requires_grad_(True)
    d.nll_bound(model, x0, theta, timesteps=ts).sum().backward()
    assert theta.grad is not None and torch.isfinite(theta.grad).all()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu():
    mu, s = 0.3, 0.5
    d = GaussianDiffusion(make_betas("mudur"))
    model = optimal_model(d)
    x0 = mu + s * torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    cond = torch.tensor([[mu, s]] * 2)
    cpu = d.nll_bound(model, x0, cond, timesteps=range(20))
    gpu = d.nll_bound(model, x0.cuda(), cond.cuda(), timesteps=range(20))
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-4, atol=1e-3)
    x = sampling.ddim_sample(d, model, (2, 1, 8, 8), cond.cuda(), steps=10, generator=torch.Generator().manual_seed(0))
    assert x.device.type == "cuda"
    loss = d.training_losses(model, x0.cuda(), cond.cuda())
    assert loss.device.type == "cuda" and loss.shape == (2,)


def test_p_mean_variance_clip_and_shape_check():
    d = GaussianDiffusion(make_betas("mudur"))
    x = torch.full((2, 1, 2, 2), 3.0)
    t = torch.tensor([10, 900])

    def zero(x, t, c):
        return torch.zeros_like(x)

    _, _, _, x0_hat = d.p_mean_variance(zero, x, t, None)
    assert x0_hat.max() > 1
    mean, var, logvar, x0_hat = d.p_mean_variance(zero, x, t, None, clip=1.0)
    assert x0_hat.max() == 1.0
    want, _, _ = d.q_posterior(x0_hat, x, t)
    torch.testing.assert_close(mean, want)
    torch.testing.assert_close(var.log(), logvar)
    with pytest.raises(ValueError, match="shape"):
        d.p_mean_variance(lambda x, t, c: x[:, :, :1], x, t, None)


# --------------------------------------------------------------------------------------------
# 9. parametrisations: eps, v, x0
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("prediction", ["eps", "v", "x0"])
def test_model_predictions_invert_the_target(prediction):
    # a network that outputs exactly its training target gives back the true noise and map
    d = GaussianDiffusion(make_betas("mudur"), prediction=prediction)
    g = torch.Generator().manual_seed(11)
    x0 = torch.randn(5, 1, 8, 8, generator=g, dtype=torch.float64)
    noise = torch.randn(x0.shape, generator=g, dtype=torch.float64)
    t = torch.tensor([0, 10, 499, 800, 999])
    x_t = d.q_sample(x0, t, noise)
    target = d.model_target(x0, t, noise)
    eps, x0_hat = d.model_predictions(lambda x, tt, c: target, x_t, t, None)
    torch.testing.assert_close(eps, noise)
    torch.testing.assert_close(x0_hat, x0)
    # v by hand at t = 999: sqrt(abar) eps - sqrt(1 - abar) x0, close to -x0 (abar = 9e-5)
    if prediction == "v":
        a = math.sqrt(d.alphas_cumprod[999])
        torch.testing.assert_close(target[4], a * noise[4] - math.sqrt(1 - a * a) * x0[4])
    # and the conversion of an eps-denoiser is the same map
    torch.testing.assert_close(d.model_output_from_eps(x_t, t, noise), target)


@pytest.mark.parametrize("prediction", ["v", "x0"])
def test_bound_and_samplers_do_not_depend_on_the_parametrisation(prediction):
    # the same denoiser written in another parametrisation: identical bound and samples
    mu, s = 0.3, 0.5
    d_eps = GaussianDiffusion(make_betas("mudur"))
    d = GaussianDiffusion(make_betas("mudur"), prediction=prediction)
    eps_model = optimal_model(d_eps)

    def model(x, t, c):
        return d.model_output_from_eps(x, t, eps_model(x, t, c))

    g = torch.Generator().manual_seed(12)
    x0 = mu + s * torch.randn(3, 1, 8, 8, generator=g, dtype=torch.float64)
    cond = torch.tensor([[mu, s]] * 3, dtype=torch.float64)
    ts = [0, 1, 5, 100, 600, 999]
    ref = d_eps.nll_bound(eps_model, x0, cond, timesteps=ts, return_terms=True)
    got = d.nll_bound(model, x0, cond, timesteps=ts, return_terms=True)
    torch.testing.assert_close(got[1], ref[1], rtol=1e-9, atol=1e-9)
    for sampler in ("ddim_sample", "ancestral_sample"):
        kw = {"steps": 10} if sampler == "ddim_sample" else {}
        a = getattr(sampling, sampler)(d_eps, eps_model, (3, 1, 4, 4), cond, generator=torch.Generator().manual_seed(1), dtype=torch.float64, **kw)
        b = getattr(sampling, sampler)(d, model, (3, 1, 4, 4), cond, generator=torch.Generator().manual_seed(1), dtype=torch.float64, **kw)
        torch.testing.assert_close(a, b, rtol=1e-7, atol=1e-7)


def test_v_loss_weights_noisy_timesteps_by_one_over_abar():
    # eps - eps_hat = sqrt(abar) (v - v_hat): the MSE on v is the MSE on eps divided by abar
    d_eps = GaussianDiffusion(make_betas("mudur"), loss="mse")
    d_v = GaussianDiffusion(make_betas("mudur"), loss="mse", prediction="v")
    g = torch.Generator().manual_seed(13)
    x0 = torch.randn(4, 1, 8, 8, generator=g, dtype=torch.float64)
    noise = torch.randn(x0.shape, generator=g, dtype=torch.float64)
    t = torch.tensor([0, 300, 700, 999])
    wrong = optimal_model(d_eps)  # optimal for N(0.3, 0.5^2), not for these maps
    cond = torch.tensor([[0.3, 0.5]] * 4, dtype=torch.float64)
    l_eps = d_eps.training_losses(wrong, x0, cond, t=t, noise=noise)
    l_v = d_v.training_losses(lambda x, tt, c: d_v.model_output_from_eps(x, tt, wrong(x, tt, c)), x0, cond, t=t, noise=noise)
    torch.testing.assert_close(l_v, l_eps / torch.from_numpy(d_eps.alphas_cumprod[t.numpy()]))
    with pytest.raises(ValueError, match="unknown prediction"):
        GaussianDiffusion(make_betas("mudur"), prediction="score")


# --------------------------------------------------------------------------------------------
# 10. DDIM timestep grids
# --------------------------------------------------------------------------------------------


def test_ddim_spacings_are_distinct_increasing_and_span_the_schedule():
    from cosmodiff.sampling import DDIM_SPACINGS

    d = GaussianDiffusion(make_betas("mudur"))
    for spacing in DDIM_SPACINGS:
        for steps in (2, 3, 10, 25, 50, 999, 1000):
            ts = sampling.ddim_timesteps(d, steps, spacing)
            assert len(ts) == steps and ts[0] == 0 and ts[-1] == T - 1 and np.all(np.diff(ts) > 0), (spacing, steps)
    # quadratic, by hand: round(999 (i/9)^2)
    assert sampling.ddim_timesteps(d, 10, "quadratic").tolist() == [0, 12, 49, 111, 197, 308, 444, 604, 789, 999]
    # edm: each interior step is the timestep whose noise level sigma_t = sqrt((1 - abar)/abar)
    # is nearest (in log) to the grid uniform in sigma^(1/7)
    sigma = np.sqrt((1 - d.alphas_cumprod) / d.alphas_cumprod)
    ts = sampling.ddim_timesteps(d, 10, "edm")
    grid = (sigma[0] ** (1 / 7) + np.linspace(0, 1, 10) * (sigma[-1] ** (1 / 7) - sigma[0] ** (1 / 7))) ** 7
    for t, g in zip(ts[1:-1], grid[1:-1]):
        assert t == np.argmin(np.abs(np.log(sigma / g)))
    with pytest.raises(ValueError, match="unknown DDIM spacing 'cubic'"):
        sampling.ddim_timesteps(d, 10, "cubic")


@pytest.mark.parametrize("spacing", ["linear", "quadratic", "edm"])
def test_ddim_output_std_on_any_grid_matches_the_closed_form(spacing):
    # deterministic DDIM with the exact denoiser maps x_T linearly for the Gaussian toy; the
    # output variance is the product of the per-step gains on whatever grid is used
    mu, s = 0.3, 0.5
    d = GaussianDiffusion(make_betas("mudur"))
    B, shape = 2048, (2048, 1, 8, 8)
    cond = torch.tensor([[mu, s]] * B, dtype=torch.float64)
    x = sampling.ddim_sample(d, optimal_model(d), shape, cond, steps=10, spacing=spacing, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ts = sampling.ddim_timesteps(d, 10, spacing)
    abar, var = d.alphas_cumprod, 1.0
    for i, j in zip(ts[::-1], [*ts[::-1][1:], -1]):
        v_t = abar[i] * s**2 + 1 - abar[i]
        k = math.sqrt(abar[i]) * s**2 / v_t if j < 0 else (math.sqrt(abar[j] * abar[i]) * s**2 + math.sqrt((1 - abar[j]) * (1 - abar[i]))) / v_t
        var *= k * k
    assert x.std().item() == pytest.approx(math.sqrt(var), rel=0.01)
    assert x.mean().item() == pytest.approx(mu, abs=4 * s / math.sqrt(x.numel()))


def _gain_error(sampler, d, s, steps):
    """|gain / s - 1| of a deterministic sampler with the toy's exact denoiser, where the
    sampler maps x_T linearly, output = c + gain x_T per pixel (the exact reverse flow has
    gain s): its discretisation error on the data's scale. The gain is the regression slope
    of the output on x_T (exact for a linear map: no Monte Carlo error)."""
    cond = torch.tensor([[0.3, s]] * 64, dtype=torch.float64)
    shape = (64, 1, 4, 4)
    x = getattr(sampling, sampler)(d, optimal_model(d), shape, cond, steps=steps, spacing="quadratic",
                            generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x_T = torch.randn(shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    xc, zc = x - x.mean(), x_T - x_T.mean()
    return abs((xc * zc).sum().item() / (zc * zc).sum().item() / s - 1.0)


def test_dpm_solver_is_second_order_and_ddim_first_order():
    # data std 0.15, as log10 maps min-max scaled to [-1, 1]: halving the step size divides
    # DDIM's error by ~2 and DPM-Solver++(2M)'s by ~4
    d = GaussianDiffusion(make_betas("mudur"))
    ddim = [_gain_error("ddim_sample", d, 0.15, n) for n in (25, 50, 100)]
    dpm = [_gain_error("dpm_solver_sample", d, 0.15, n) for n in (25, 50, 100)]
    print(f"\ngain error at 25/50/100 steps: DDIM {ddim}, DPM-Solver++(2M) {dpm}")
    for e in (ddim[0] / ddim[1], ddim[1] / ddim[2]):
        assert 1.6 < e < 2.5
    for e in (dpm[0] / dpm[1], dpm[1] / dpm[2]):
        assert e > 3.0
    assert dpm[0] < ddim[0] / 2
    # with two steps both take the same first-order step, then return x0_hat
    cond = torch.tensor([[0.3, 0.15]] * 4, dtype=torch.float64)
    a = sampling.ddim_sample(d, optimal_model(d), (4, 1, 4, 4), cond, steps=2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    b = sampling.dpm_solver_sample(d, optimal_model(d), (4, 1, 4, 4), cond, steps=2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    torch.testing.assert_close(a, b)
