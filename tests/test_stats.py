"""Statistics: chi-squared by hand, the leave-one-out expectation, PDF distances, peaks."""

import numpy as np
import pytest

from cosmodiff import stats


def test_reduced_chi2_hand_computed():
    sim = np.array([[1.0, 2.0, 3.0], [3.0, 2.0, 5.0], [2.0, 5.0, 4.0]])
    # mean (2, 3, 4); ddof=1 variance (1, 3, 1)
    gen = np.array([[2.0, 6.0, 6.0]])
    # (0/1 + 9/3 + 4/1) / (3 - 1) = 3.5
    assert stats.reduced_chi2(gen, sim)[0] == pytest.approx(3.5)


def test_loo_reference_has_the_expected_mean():
    """15 maps per point and 128 bins as in the paper: the expectation is 1.276."""
    rng = np.random.default_rng(0)
    values = [stats.loo_chi2(rng.normal(10, 1, size=(15, 128))).mean() for _ in range(300)]
    expected = stats.expected_reduced_chi2(14, 128)
    assert expected == pytest.approx(1.276, abs=1e-3)
    se = np.std(values, ddof=1) / np.sqrt(len(values))
    assert abs(np.mean(values) - expected) < 4 * se, (np.mean(values), expected, se)


def test_a_perfect_emulator_scores_like_the_simulations():
    rng = np.random.default_rng(1)
    vals = [stats.reduced_chi2(rng.normal(0, 2, (50, 64)), rng.normal(0, 2, (15, 64))).mean() for _ in range(200)]
    assert np.mean(vals) == pytest.approx(stats.expected_reduced_chi2(15, 64), rel=0.03)
    # a biased one does not
    biased = stats.reduced_chi2(rng.normal(1, 2, (50, 64)), rng.normal(0, 2, (15, 64))).mean()
    assert biased > 1.2 * stats.expected_reduced_chi2(15, 64)


def test_chi2_errors():
    with pytest.raises(ValueError, match="k bins differ"):
        stats.reduced_chi2(np.ones((2, 3)), np.ones((4, 4)))
    with pytest.raises(ValueError, match="at least 4"):
        stats.loo_chi2(np.ones((3, 5)))


def test_mean_density_zscore():
    rng = np.random.default_rng(2)
    sims = rng.normal(11, 0.5, (15, 8, 8)) + rng.normal(0, 0.1, (15, 1, 1))
    z_same = stats.mean_density_zscore(sims[:5], sims)
    z_low = stats.mean_density_zscore(sims - 0.3, sims)
    assert abs(z_same) < 2 and z_low < -2


def test_pdf_distance():
    rng = np.random.default_rng(3)
    a, b = rng.normal(0, 1, 20000), rng.normal(0, 1, 20000)
    w, ks = stats.pdf_distance(a, b)
    assert w < 0.03 and ks < 0.02
    w, ks = stats.pdf_distance(a, a + 0.5)  # a shift by 0.5 has W1 = 0.5 exactly
    assert w == pytest.approx(0.5, rel=1e-9)


def test_peak_counts_periodic():
    f = np.zeros((8, 8))
    f[0, 0] = 3.0  # a peak on the corner: its neighbours wrap around
    f[4, 4] = 1.0
    assert stats.peak_counts(f, [0.5, 2.0]).tolist() == [2, 1]
    assert stats.peak_counts(np.roll(f, (3, 5), axis=(0, 1)), [0.5, 2.0]).tolist() == [2, 1]
    assert stats.peak_counts(np.stack([f, 2 * f]), [1.5]).tolist() == [[1], [2]]
