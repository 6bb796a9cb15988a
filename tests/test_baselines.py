"""The baselines comparison's pieces: the cheap (local) scan, the out-of-distribution fields,
and the comparison's metrics and tables (README, "Beyond the grid scan").

The cheap scan is checked against dense grids of analytic potentials and, on the Wiener
oracle, against the exact posterior of prepared lognormal fields at the bench's resolution
and normalisation: the criterion of the issue (within 0.1 sigma and 5% in width) at fewer
than 10,000 network evaluations per field.
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest
from cosmodiff.inference.calibration import METHODS, chain_agreement, comparison_table, ood_table
from cosmodiff.inference import InferenceSettings, grid_posterior, local_scan, method_metrics, splined
from cosmodiff.inference.shifted import generated_fields, with_white_noise


class _Counting:
    """A plain potential that counts its evaluations (7 per point, like a tiny estimator)."""

    def __init__(self, U):
        self.U, self.evaluations = U, 0

    def __call__(self, theta):
        theta = np.asarray(theta, dtype=np.float64).reshape(-1, 2)
        self.evaluations += 7 * len(theta)
        return self.U(theta)


def _skewed(mean, sig, rho):
    """A smooth skewed potential: Gaussian in (log Omega_m, sigma_8), Omega_m's sigma ~ sig[0]."""
    cov = np.array([[sig[0] ** 2, rho * sig[0] * sig[1]], [rho * sig[0] * sig[1], sig[1] ** 2]])
    prec = np.linalg.inv(cov)

    def U(th):
        th = np.asarray(th, dtype=np.float64).reshape(-1, 2)
        d = np.column_stack([mean[0] * np.log(th[:, 0] / mean[0]), th[:, 1] - mean[1]])
        return 0.5 * np.einsum("mi,ij,mj->m", d, prec, d)

    return U


@pytest.mark.parametrize(
    "mean, sig, rho, refine",
    [
        ((0.33, 0.78), (0.06, 0.05), 0.3, 0),     # the bench's widths at 32^2
        ((0.45, 0.65), (0.04, 0.03), -0.5, 0),    # against the prior's corner
        ((0.23, 0.91), (0.006, 0.005), 0.6, 2),   # far narrower than a coarse cell: coarse_refine
    ],
)
def test_local_scan_matches_a_dense_grid(mean, sig, rho, refine):
    U = _skewed(mean, sig, rho)
    dense = grid_posterior(U, np.linspace(0.1, 0.5, 1201), np.linspace(0.6, 1.0, 1201))
    coarse, fine = _Counting(U), _Counting(U)
    post = local_scan(coarse, fine, coarse_refine=refine)
    assert post.evaluations == coarse.evaluations + fine.evaluations == 7 * post.meta["n_points"]
    assert fine.evaluations == 7 * 25 and coarse.evaluations <= 7 * 25 * (1 + refine)
    np.testing.assert_allclose(post.mean, dense.mean, atol=0.05 * dense.std.min())
    np.testing.assert_allclose(post.std, dense.std, rtol=0.03)


def test_splined_keeps_a_fine_posterior_and_refines_a_coarse_one():
    U = _skewed((0.3, 0.8), (0.03, 0.025), 0.4)
    dense = grid_posterior(U, np.linspace(0.15, 0.45, 801), np.linspace(0.675, 0.925, 801))
    coarse = grid_posterior(U, np.linspace(0.15, 0.45, 7), np.linspace(0.675, 0.925, 7))
    fine = splined(coarse, 81)
    assert fine.shape == (81, 81) and fine.evaluations == coarse.evaluations
    # the trapezoid rule on 7 nodes (1.7 sigma apart) misses the width by 1.5-1.7%; the spline by < 0.1%
    assert np.abs(coarse.std / dense.std - 1).min() > 0.01
    np.testing.assert_allclose(fine.std, dense.std, rtol=0.003)
    np.testing.assert_allclose(fine.mean, dense.mean, atol=0.02 * dense.std.min())


def test_local_settings_count_evaluations_and_refuse_bad_values():
    bench_cheap = dict(scan="local", n_coarse=5, n_fine=5, t_exact=20, n_strata=200, n_noise={1: 32, 4: 16, 10: 8, 20: 4})
    s = InferenceSettings.from_dict(bench_cheap)
    # coarse: 25 points x (10 + 20) evaluations; fine: 25 x (2 x 84 below t = 20 + 200 strata)
    assert s.evaluations_per_theta() == 368 and s.evaluations_per_field() == 25 * 30 + 25 * 368 == 9950
    assert s.coarse_estimator_options() == {"t_exact": 10, "n_strata": 20, "n_noise": 1}
    refined = InferenceSettings.from_dict({**bench_cheap, "coarse_refine": 2, "n_strata": 140})
    assert refined.evaluations_per_field() == 3 * 25 * 30 + 25 * 308 == 9950
    with pytest.raises(ValueError, match="'n_fine'.*>= 4"):
        InferenceSettings.from_dict({**bench_cheap, "n_fine": 3})
    with pytest.raises(ValueError, match="coarse_estimator.*unknown key"):
        InferenceSettings.from_dict({**bench_cheap, "coarse_estimator": {"t_max": 3}})


# --------------------------------------------------------------------------------------------
# the cheap posterior on the exact denoiser: the criterion
# --------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_cheap_posterior_on_the_oracle_is_within_a_tenth_of_a_sigma_and_5_percent(request):
    """The bench's cheap scan (9,950 network evaluations per field) with the exact denoiser of
    prepared lognormal fields (64^2 -> 32^2 bicubic, normalisation (8.9, 11.9)): median
    |mean shift| <= 0.1 exact sigma and median width within 5% of the exact posterior's,
    over 20 fields at parameters drawn across the prior (measured 0.090 / 0.086 sigma, widths
    0.974 / 1.007; with 10 fields a median width was 0.946: the median needs the fields). The
    grid scan the workflow used before (coarse_to_fine, 124 evaluations per point, ~10,000 per
    field) misses the 0.1 sigma (0.135 / 0.216). ~7 minutes on 2 cores: opt-in with -m slow or
    COSMODIFF_SLOW=1; benchmarks/cheap_posterior.py measures the same on the bench's 50 fields."""
    if "slow" not in (request.config.getoption("markexpr") or "") and not os.environ.get("COSMODIFF_SLOW"):
        pytest.skip("~7 minutes: run with -m slow or COSMODIFF_SLOW=1")
    import torch
    from cosmodiff.diffusion import GaussianDiffusion, make_betas
    from cosmodiff.inference import Potential, WienerOracle, coarse_to_fine, compare
    from cosmodiff.inference.potential import exact_log10_potential

    torch.set_num_threads(2)
    norm, native, res = (8.9, 11.9), 64, 32
    diffusion = GaussianDiffusion(make_betas("mudur"), model_variance="fixedlarge")
    oracle = WienerOracle(diffusion, norm, native_resolution=native, method="bicubic")
    rng = np.random.default_rng(11)
    truths = np.column_stack([rng.uniform(0.15, 0.45, 20), rng.uniform(0.65, 0.95, 20)])
    fields = generated_fields("lognormal", truths, 3, native, res, log_floor=1e4)
    s = InferenceSettings.from_dict(dict(scan="local", n_coarse=5, n_fine=5, t_exact=20, n_strata=200,
                                         n_noise={1: 32, 4: 16, 10: 8, 20: 4}, batch_size=256))
    cheap, grid = [], []
    for i, field in enumerate(fields):
        exact = exact_log10_potential(field, native, "bicubic")
        ref = local_scan(exact, exact, n_fine=9, n_sigma=4.0, n_interp=81)
        pot = Potential(oracle, diffusion, field, norm, **s.potential_options(i))
        post = local_scan(pot.with_options(**s.coarse_estimator_options()), pot, **s.local_options())
        assert post.evaluations == s.evaluations_per_field() == 9950
        cheap.append(compare(post, ref))
        old = Potential(oracle, diffusion, field, norm, estimator="full", t_exact=20, n_strata=40, noise_seed=i)
        grid.append(compare(coarse_to_fine(old, n_coarse=5, n_fine=7, max_refine=2), ref))
    cheap, grid = pd.DataFrame(cheap), pd.DataFrame(grid)
    for name in ("omega_m", "sigma_8"):
        shift, width = cheap[f"shift_{name}"].abs().median(), cheap[f"width_{name}"].median()
        print(f"\n{name}: cheap median |shift| {shift:.3f}, width {width:.3f}; grid "
              f"{grid[f'shift_{name}'].abs().median():.3f}, {grid[f'width_{name}'].median():.3f}")
        assert shift <= 0.1 and abs(width - 1) <= 0.05
    assert max(grid[f"shift_{n}"].abs().median() for n in ("omega_m", "sigma_8")) > 0.1


# --------------------------------------------------------------------------------------------
# out-of-distribution fields
# --------------------------------------------------------------------------------------------


def test_white_noise_has_its_level_and_is_reproducible():
    field = np.full((64, 64), 10.5)
    noisy = with_white_noise(field, 0.03, seed=4)
    assert abs((noisy - field).std() / 0.03 - 1) < 0.05 and abs((noisy - field).mean()) < 0.005
    np.testing.assert_array_equal(noisy, with_white_noise(field, 0.03, seed=4))
    assert not np.array_equal(noisy, with_white_noise(field, 0.03, seed=5))
    with pytest.raises(ValueError, match="noise sigma"):
        with_white_noise(field, -0.1, 0)


def test_generated_fields_are_prepared_like_the_training_maps_and_may_leave_the_prior():
    """Lognormal fields outside the CAMELS prior (allowed only here) have the mean log density
    of their Omega_m; prepared fields go through the floor, log10 and the downsampling."""
    from cosmodiff.cosmology import mean_surface_density
    from cosmodiff.synthetic import lognormal_maps

    inside = generated_fields("lognormal", [(0.3, 0.8)], 5, 64, 32, log_floor=1e4)
    outside = generated_fields("lognormal", [(0.6, 1.1)], 5, 64, 32, log_floor=1e4)
    assert inside.shape == outside.shape == (1, 32, 32)
    ratio = np.log10(mean_surface_density(0.6) / mean_surface_density(0.3))
    assert abs((outside.mean() - inside.mean()) - ratio) < 0.15
    with pytest.raises(ValueError, match="outside the CAMELS prior"):
        lognormal_maps(0.6, 1.1, 1, 0, 64)


# --------------------------------------------------------------------------------------------
# the comparison's metrics and tables
# --------------------------------------------------------------------------------------------


def _gaussian_rows(n, scale=1.0, bias=0.0, seed=0):
    """n calibrated (scale 1, bias 0) Gaussian posterior summaries: mean ~ N(truth, sigma)."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        row = {"field": i}
        for name, truth, sigma in (("omega_m", 0.3, 0.02), ("sigma_8", 0.8, 0.03)):
            mean = truth + bias * sigma + sigma * rng.standard_normal()
            s = sigma * scale
            row.update({f"{name}_mean": mean, f"{name}_std": s, f"{name}_truth": truth,
                        f"{name}_lo68": mean - 0.9945 * s, f"{name}_hi68": mean + 0.9945 * s,
                        f"{name}_lo95": mean - 1.96 * s, f"{name}_hi95": mean + 1.96 * s})
        rows.append(row)
    return rows


def test_method_metrics_of_calibrated_and_overconfident_posteriors():
    rows = _gaussian_rows(4000)
    m = method_metrics(rows, exact=rows, cost=[100] * 4000, seconds=[2.0] * 4000)
    assert m["n"] == 4000 and m["evaluations"] == 100 and m["seconds"] == 2.0
    for name, sigma, truth in (("omega_m", 0.02, 0.3), ("sigma_8", 0.03, 0.8)):
        assert abs(m[f"{name}_coverage68"] - 0.68) < 0.025 and abs(m[f"{name}_coverage95"] - 0.95) < 0.012
        assert abs(m[f"{name}_mean_abs_z"] - np.sqrt(2 / np.pi)) < 0.03
        assert abs(m[f"{name}_rel_error"] - 0.6745 * sigma / truth) < 0.05 * sigma / truth  # median |N(0, s)|
        assert m[f"{name}_width"] == pytest.approx(sigma) and m[f"{name}_shift"] == 0 and m[f"{name}_width_ratio"] == 1
    narrow = method_metrics(_gaussian_rows(4000, scale=0.5), exact=rows)
    assert narrow["omega_m_coverage68"] < 0.45 and narrow["omega_m_width_ratio"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="3 exact posteriors for 4000 fields"):
        method_metrics(rows, exact=rows[:3])


def test_comparison_table_has_a_row_per_method_against_the_exact_posterior():
    exact = pd.DataFrame(_gaussian_rows(60, seed=1))
    biased = pd.DataFrame(_gaussian_rows(60, bias=1.0, seed=2)).assign(evaluations=9950, seconds=20.0)
    table = comparison_table({"exact": exact, "local": biased, "npe": biased.iloc[:30]}, exact)
    assert list(table.index) == [METHODS["exact"], METHODS["local"], METHODS["npe"]]
    assert table.loc[METHODS["npe"], "n"] == 30 and table.loc[METHODS["local"], "evaluations"] == 9950
    assert np.isnan(table.loc[METHODS["exact"], "omega_m_shift"])
    assert 0.5 < table.loc[METHODS["local"], "omega_m_shift"] < 2.0  # one sigma of bias and the exact's own scatter


def _chains(n, offset=0.0, width=1.0, seed=0):
    """Summaries of n chains whose means scatter about the same-U grid's by their Monte Carlo
    error (plus ``offset`` of it), with stds ``width`` times the grid's."""
    rng = np.random.default_rng(seed)
    rows = {"divergences": np.zeros(n, dtype=int)}
    for name, grid_mean, grid_std in (("omega_m", 0.3, 0.05), ("sigma_8", 0.8, 0.04)):
        ess = rng.uniform(80, 170, n)
        mcse = width * grid_std / np.sqrt(ess)
        rows.update({f"same_u_grid_{name}_mean": np.full(n, grid_mean), f"same_u_grid_{name}_std": np.full(n, grid_std),
                     f"{name}_mean": grid_mean + mcse * (offset + rng.standard_normal(n)),
                     f"{name}_std": np.full(n, width * grid_std), f"{name}_ess": ess, f"{name}_r_hat": np.full(n, 1.004)})
    return pd.DataFrame(rows)


def test_chain_agreement_reads_a_correct_sampler_at_its_monte_carlo_error():
    good = chain_agreement(_chains(4000))
    for name in ("omega_m", "sigma_8"):
        assert abs(good[f"same_u_{name}_mcse"] - 0.6745) < 0.04  # median |N(0, 1)|
        assert abs(good[f"same_u_{name}_within2"] - 0.9545) < 0.012
        assert good[f"same_u_{name}_width"] == pytest.approx(1.0) and good[f"{name}_ess_min"] >= 80
    assert good["r_hat_max"] == pytest.approx(1.004) and good["divergences"] == 0
    off = chain_agreement(_chains(4000, offset=3.0, width=0.8, seed=1))
    assert off["same_u_omega_m_within2"] < 0.2 and off["same_u_omega_m_mcse"] == pytest.approx(3.0, abs=0.1)
    assert off["same_u_sigma_8_width"] == pytest.approx(0.8)
    with pytest.raises(ValueError, match="no chains to check"):
        chain_agreement(_chains(0))


def test_ood_table_counts_flags_and_coverage_per_set():
    rows = []
    for kind, level, z in (("in distribution", 0.0, 0.5), ("white noise", 0.1, 40.0)):
        for r in _gaussian_rows(20, seed=3):
            r.update({"set": kind, "noise": level, "check_z": z, "flagged": abs(z) > 5,
                      **{f"npe_{k}": r[k] for k in list(r) if k.split("_", 2)[-1] in
                         ("mean", "std", "lo68", "hi68", "lo95", "hi95")}})
            rows.append(r)
    table = ood_table(pd.DataFrame(rows)).set_index("set")
    assert table.loc["in distribution", "flagged"] == 0 and table.loc["white noise", "flagged"] == 1
    assert table.loc["white noise", "noise_dex"] == 0.1 and table.loc["white noise", "n"] == 20
    assert 0.8 <= table.loc["in distribution", "diffusion_sigma_8_coverage95"] <= 1
