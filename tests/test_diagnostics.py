"""Where a network's likelihood goes wrong, tested on the exact denoiser (the Wiener oracle).

The oracle's bound is the likelihood (up to modes below beta_0, none at the tight
normalisation used here), so:
- per-timestep contributions to dU/dtheta add up to the derivative of the same potential
  (bookkeeping), and, averaged over noise draws, to the gradient of the oracle's closed-form
  expected bound band by band, and that to the exact likelihood's gradient (physics);
- the excess of the oracle over itself is zero, and a network that is the oracle plus a
  known error gets exactly that error's weighted power, in the right |k| band.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from cosmodiff.diagnostics import (
    K_EDGES,
    T_EDGES,
    band_table,
    diagnose_field,
    emulation_metrics,
    excess_by_scale,
    posterior_metrics,
    score_by_timestep,
)
from cosmodiff.diffusion import GaussianDiffusion, make_betas
from cosmodiff.inference import Potential, WienerOracle, exact_log10_potential
from cosmodiff.prepare import normalise
from cosmodiff.synthetic import lognormal_maps

TIGHT = (11.6, 11.7)    # every Fourier mode of the 16^2 maps >= 27 beta_0: bound = likelihood
TRUTH = (0.3, 0.8)
RES = 16
STEP = 0.01


@pytest.fixture(scope="module")
def diffusion():
    return GaussianDiffusion(make_betas("mudur"), model_variance="fixedlarge", prediction="v")


@pytest.fixture(scope="module")
def oracle(diffusion):
    return WienerOracle(diffusion, TIGHT)


@pytest.fixture(scope="module")
def field():
    return np.log10(lognormal_maps(*TRUTH, 1, 3, RES)[0].astype(np.float64))


def _points(theta, h):
    t0 = np.asarray(theta, np.float64)
    return np.array([t0] + [t0 + s * h * np.eye(2)[i] for i in range(2) for s in (1.0, -1.0)])


def test_contributions_add_up_to_the_potential_derivatives(diffusion, oracle, field):
    pot = Potential(oracle, diffusion, field, TIGHT, estimator="full", t_exact=10, n_strata=20, noise_seed=4)
    out = score_by_timestep(pot, TRUTH, STEP)
    u = pot(_points(TRUTH, STEP))
    grad = [(u[1] - u[2]) / (2 * STEP), (u[3] - u[4]) / (2 * STEP)]
    curv = [(u[1] - 2 * u[0] + u[2]) / STEP**2, (u[3] - 2 * u[0] + u[4]) / STEP**2]
    np.testing.assert_allclose(out["grad"].sum(axis=0), grad, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(out["curv"].sum(axis=0), curv, rtol=1e-7, atol=1e-6)
    assert out["grad"].shape == (len(pot.timesteps), 2)


def test_oracle_scores_match_the_expected_bound_band_by_band_and_the_exact_score(diffusion, oracle, field):
    """Monte Carlo per-band scores of the oracle, averaged over 12 noise seeds, against the
    closed-form expectation of each band (WienerOracle.expected_bound), within 4 standard
    errors; and the expected bound's total score equals the exact likelihood's."""
    draws = []
    for seed in range(12):
        pot = Potential(oracle, diffusion, field, TIGHT, estimator="exact", noise_seed=seed, batch_size=1000)
        out = score_by_timestep(pot, TRUTH, STEP)
        draws.append(band_table(out["timesteps"], out["grad"])[1])
    draws = np.array(draws)  # (seeds, bands, 2)
    x0 = normalise(field, TIGHT)[None]
    terms = np.array([oracle.expected_bound(x0, th, diffusion, return_terms=True)[1][0] for th in _points(TRUTH, STEP)])
    expected = np.stack([(terms[1 + 2 * i] - terms[2 + 2 * i]) / (2 * STEP) for i in range(2)], axis=1)
    labels, exp_bands = band_table(np.arange(diffusion.T), expected)
    mean, se = draws.mean(axis=0), draws.std(axis=0, ddof=1) / np.sqrt(len(draws))
    assert len(labels) == len(T_EDGES) - 1
    assert np.all(np.abs(mean - exp_bands) <= 4 * se + 1e-6 * np.abs(exp_bands).max())
    u = exact_log10_potential(field)(_points(TRUTH, STEP))
    exact = [(u[1] - u[2]) / (2 * STEP), (u[3] - u[4]) / (2 * STEP)]
    scale = np.sqrt([(u[1] - 2 * u[0] + u[2]), (u[3] - 2 * u[0] + u[4])]) / STEP  # 1 / exact sigma
    # the noise-free bound's score, in exact sigmas, is the exact score
    np.testing.assert_allclose(expected.sum(axis=0) / scale, np.array(exact) / scale, atol=0.05)


class _Offset(torch.nn.Module):
    """The oracle plus a known error: x0_hat + delta (a map), in v parametrisation."""

    def __init__(self, oracle, diffusion, delta):
        super().__init__()
        self.oracle, self.diffusion, self.delta = oracle, diffusion, delta

    def forward(self, x_t, t, cond):
        _, x0 = self.diffusion.model_predictions(self.oracle, x_t, t, cond)
        x0 = x0 + self.delta.to(x0)
        eps = self.diffusion.predict_eps(x_t, t, x0)
        return self.diffusion.model_output_from_eps(x_t, t, eps)


def test_excess_is_zero_for_the_oracle_and_splits_a_known_error_by_scale(diffusion, oracle, field):
    ts = np.array([0, 1, 5, 50, 500, 999])
    same = excess_by_scale(oracle, oracle, diffusion, field, TIGHT, TRUTH, timesteps=ts, noise_seed=2)
    assert np.abs(same["excess"]).max() < 1e-9
    assert same["oracle"].min() >= 0 and same["oracle"].sum() > 0
    # a constant offset d of x0_hat: excess = w_t (|e + d|^2 - |e|^2) lives in the DC band only
    # (the oracle's error e has its own DC part, so the cross term is there too)
    d = 0.01
    net = _Offset(oracle, diffusion, torch.full((1, 1, RES, RES), d, dtype=torch.float64))
    out = excess_by_scale(net, oracle, diffusion, field, TIGHT, TRUTH, timesteps=ts, noise_seed=2)
    assert np.abs(out["excess"][:, 1:]).max() < 1e-9 * np.abs(out["excess"][:, 0]).max()
    # every row adds up to the difference of the bound terms on the same x_t
    x0 = torch.from_numpy(normalise(field, TIGHT))[None, None].expand(len(ts), -1, -1, -1)
    from cosmodiff.diffusion import crn_noise

    noise = torch.stack([crn_noise(2, int(t), (1, RES, RES)) for t in ts]).double()
    cond = torch.tensor([TRUTH], dtype=torch.float64).expand(len(ts), 2)
    tt = torch.from_numpy(ts)
    diff = (diffusion.vb_terms(net, x0, cond, tt, noise) - diffusion.vb_terms(oracle, x0, cond, tt, noise)).numpy()
    np.testing.assert_allclose(out["excess"].sum(axis=1), diff, rtol=1e-6, atol=1e-9)
    # a checkerboard error (the single mode |k| = sqrt(2) N/2 k_F) lands in its band only
    ii = np.add.outer(np.arange(RES), np.arange(RES)) % 2
    board = torch.from_numpy(0.01 * (2.0 * ii - 1.0))[None, None]
    out = excess_by_scale(_Offset(oracle, diffusion, board), oracle, diffusion, field, TIGHT, TRUTH, timesteps=ts)
    band = 1 + np.digitize(np.sqrt(2) * RES / 2, K_EDGES) - 1  # column 0 is the DC mode
    others = np.delete(out["excess"], band, axis=1)
    assert np.abs(others).max() < 1e-9 * np.abs(out["excess"][:, band]).max()
    assert len(out["k_edges"]) == len(K_EDGES) + 1


def test_diagnose_field_on_the_oracle_gives_no_shift(diffusion, oracle, field):
    score, excess = diagnose_field(
        oracle, oracle, diffusion, field, TIGHT, TRUTH, exact_log10_potential(field), noise_seed=1, batch_size=1000
    )
    df = pd.DataFrame(score)
    assert set(df["param"]) == {"omega_m", "sigma_8"} and len(df) == 2 * (len(T_EDGES) - 1)
    assert np.abs(df["shift_sigma"]).max() < 1e-9
    assert np.abs(pd.DataFrame(excess)["excess_nats"]).max() < 1e-9


def _row(shift, width, z, std=0.02):
    """A posterior summary with a Gaussian of sd ``std`` whose mean is z sds above the truth."""
    out = {}
    for p, truth in (("omega_m", 0.3), ("sigma_8", 0.8)):
        mean = truth + z * std
        out.update({f"{p}_truth": truth, f"{p}_mean": mean, f"{p}_std": std,
                    f"{p}_lo68": mean - std, f"{p}_hi68": mean + std,
                    f"{p}_lo95": mean - 1.96 * std, f"{p}_hi95": mean + 1.96 * std,
                    f"vs_exact_shift_{p}": shift, f"vs_exact_width_{p}": width})
    return out


def test_posterior_metrics_against_the_targets():
    # z-scores of a calibrated posterior: quantiles of N(0, 1)
    from scipy.stats import norm

    zs = norm.ppf((np.arange(100) + 0.5) / 100)
    good = posterior_metrics([_row(0.1, 1.0, z) for z in zs])
    assert good["all_pass"], good
    assert good["omega_m_coverage68"] == pytest.approx(0.68, abs=0.011)
    assert good["sigma_8_mean_abs_z"] == pytest.approx(np.sqrt(2 / np.pi), abs=0.02)
    # one field 2 sigma off fails the largest-shift target, nothing else
    bad = posterior_metrics([_row(0.1, 1.0, z) for z in zs[:-1]] + [_row(2.0, 1.0, zs[-1])])
    failed = sorted(k for k, v in bad.items() if k.endswith("_pass") and k != "all_pass" and not v)
    assert failed == ["omega_m_max_abs_shift_pass", "sigma_8_max_abs_shift_pass"]
    # too narrow posteriors: width, coverage and z fail
    narrow = posterior_metrics([_row(0.1, 0.5, 2 * z, std=0.01) for z in zs])
    assert not narrow["omega_m_median_width_pass"] and not narrow["omega_m_coverage68_pass"]
    assert not narrow["sigma_8_mean_abs_z_pass"] and not narrow["all_pass"]
    with pytest.raises(ValueError, match="at least one field"):
        posterior_metrics([])


def test_emulation_metrics():
    ok = pd.DataFrame({"chi2_log_samples": [1.3, 1.5], "chi2_log_sims": [1.28, 1.27], "density_z": [0.5, -0.9]})
    assert emulation_metrics(ok)["emulation_pass"]
    assert emulation_metrics(ok)["worst_chi2_log_ratio"] == pytest.approx(1.5 / 1.27)
    far = ok.assign(chi2_log_samples=[1.3, 1.7])
    assert not emulation_metrics(far)["emulation_pass"]
    assert not emulation_metrics(ok.assign(density_z=[1.5, -0.9]))["emulation_pass"]
