"""Physics tests of cosmodiff.powerspec: analytic spectra, symmetries, binning, references.

Notation: an N x N map of a box of side L; modes are (kx, ky) in units of k_F = 2 pi / L, kx
along axis 0 and ky along axis 1, each in (-N/2, N/2] for even N. A single mode of one map
has P_mode = |delta_k|^2 L^2 / N^4. "paper" counts every mode of the full FFT plane once and
bins by ceil(|k|) into bins 1..N/2; "pylians" counts every independent mode (one of each
conjugate pair, self-conjugate modes once) and bins by floor(|k|) into 1..int(sqrt2 N/2).
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import pytest

from cosmodiff.powerspec import power_spectrum

L = 25.0
CONVENTIONS = ("paper", "pylians")


# --------------------------------------------------------------------------- helpers
def _signed(i, n):
    """Signed wavenumber of FFT index i, with +N/2 kept positive (both references)."""
    return i - n if i > n // 2 else i


def _modes(n):
    """Every mode of the full FFT plane as (kx, ky, |k|^2, self_conjugate) (plain Python)."""
    out = []
    for i in range(n):
        for j in range(n):
            kx, ky = _signed(i, n), _signed(j, n)
            selfconj = ((-i) % n == i) and ((-j) % n == j)
            out.append((kx, ky, kx * kx + ky * ky, selfconj))
    return out


def _bin_of(q, convention):
    """1-based bin of a mode with |k|^2 = q (integer): ceil(sqrt q) or floor(sqrt q)."""
    r = math.isqrt(q)
    if convention == "paper":
        return r if r * r == q else r + 1
    return r


@lru_cache(maxsize=None)
def _bin_census(n, convention):
    """Per bin (1-based dict): number of conjugate pairs and of self-conjugate modes."""
    nbins = n // 2 if convention == "paper" else math.isqrt(2 * (n // 2) ** 2)
    pairs = np.zeros(nbins + 1)
    selfc = np.zeros(nbins + 1)
    for kx, ky, q, sc in _modes(n):
        b = _bin_of(q, convention)
        if q == 0 or b > nbins:
            continue
        if sc:
            selfc[b] += 1
        else:
            pairs[b] += 0.5  # each pair is met twice in the full plane
    return pairs[1:], selfc[1:]


def _single_mode(n, m, k, amp):
    i = np.arange(n)[:, None]
    j = np.arange(n)[None, :]
    return 1.0 + amp * np.cos(2 * np.pi * (m * i + k * j) / n)


# --------------------------------------------------------------------------- 1. single mode
# field = 1 + A cos(2 pi (m i + n j)/N) has mean exactly 1, so delta = A cos(...). Its
# unnormalised DFT is delta_k = A N^2 / 2 at (m, n) and at (-m, -n), zero elsewhere, so each of
# the two modes has P_mode = (A N^2/2)^2 L^2 / N^4 = A^2 L^2 / 4. If (m, n) is self-conjugate
# ((N/2, 0) for instance: cos(pi i) = (-1)^i) there is one mode with delta_k = A N^2 and
# P_mode = A^2 L^2.
#   paper: both modes of the pair sit in the full plane, each with weight 1, so the bin holds
#          A^2 L^2 / 2 over its N_b full-plane modes:   P = A^2 L^2 / (2 N_b)
#          (self-conjugate: P = A^2 L^2 / N_b).
#   pylians: one mode per pair is counted, N_b' independent modes in the bin:
#          P = A^2 L^2 / (4 N_b')   (self-conjugate: P = A^2 L^2 / N_b').
#
# Hand counts at N = 16 (modes (kx, ky), kx, ky in -7..8; q = kx^2 + ky^2):
#   (3,0), |k| = 3.  paper bin ceil(3) = 3 holds 2 < |k| <= 3, q in {5, 8, 9}:
#       q=5 (+-1,+-2),(+-2,+-1): 8;  q=8 (+-2,+-2): 4;  q=9 (+-3,0),(0,+-3): 4   -> N_b = 16
#       P = A^2 L^2 / 32.
#     pylians bin floor(3) = 3 holds 9 <= q < 16: q=9: 4, q=10 (+-1,+-3),(+-3,+-1): 8,
#       q=13 (+-2,+-3),(+-3,+-2): 8 -> 20 full-plane modes, none self-conjugate,
#       N_b' = 10 independent                                                    P = A^2 L^2 / 40.
#   (2,2), |k| = 2.83.  paper bin 3 again: N_b = 16, P = A^2 L^2 / 32.
#     pylians bin 2, 4 <= q < 9: q=4: 4, q=5: 8, q=8: 4 -> 16 full, N_b' = 8 ->  P = A^2 L^2 / 32.
#   (8,0), the Nyquist mode, self-conjugate, |k| = 8 -> last paper bin 8, 49 < q <= 64:
#       q=50 (+-1,+-7),(+-7,+-1),(+-5,+-5): 12; q=52 (+-4,+-6),(+-6,+-4): 8;
#       q=53 (+-2,+-7),(+-7,+-2): 8; q=58 (+-3,+-7),(+-7,+-3): 8; q=61 (+-5,+-6),(+-6,+-5): 8;
#       q=64 (8,0),(0,8) (-8 is the same index as +8): 2                       -> N_b = 46
#       P = A^2 L^2 / 46.
#     pylians bin 8, 64 <= q < 81: q=64: (8,0),(0,8) [self-conjugate]: 2;
#       q=65 (+-1,8),(8,+-1),(+-4,+-7),(+-7,+-4): 12; q=68 (+-2,8),(8,+-2): 4; q=72 (+-6,+-6): 4;
#       q=73 (+-3,8),(8,+-3): 4; q=74 (+-5,+-7),(+-7,+-5): 8; q=80 (+-4,8),(8,+-4): 4
#       -> 36 non-self-conjugate (18 pairs) + 2 -> N_b' = 20                   P = A^2 L^2 / 20.
#   (7,3), near Nyquist, |k| = sqrt(58) = 7.62: paper bin 8 (N_b = 46, P = A^2 L^2 / 92);
#     pylians bin 7, 49 <= q < 64: q=49 (+-7,0),(0,+-7): 4; q=50: 12; q=52: 8; q=53: 8; q=58: 8;
#       q=61: 8 -> 48 full, N_b' = 24                                           P = A^2 L^2 / 96.
HAND_CASES_N16 = [
    # (m, n, paper bin, paper P / (A^2 L^2), pylians bin, pylians P / (A^2 L^2))
    ((3, 0), 3, 1 / 32, 3, 1 / 40),
    ((0, 3), 3, 1 / 32, 3, 1 / 40),
    ((2, 2), 3, 1 / 32, 2, 1 / 32),
    ((2, -2), 3, 1 / 32, 2, 1 / 32),
    ((8, 0), 8, 1 / 46, 8, 1 / 20),
    ((0, 8), 8, 1 / 46, 8, 1 / 20),
    ((7, 3), 8, 1 / 92, 7, 1 / 96),
]


@pytest.mark.parametrize("mode,pbin,pval,ybin,yval", HAND_CASES_N16)
def test_single_mode_hand_derived_n16(mode, pbin, pval, ybin, yval):
    amp = 0.3
    field = _single_mode(16, *mode, amp)
    for conv, b, val in (("paper", pbin, pval), ("pylians", ybin, yval)):
        k, p = power_spectrum(field, box_size=L, convention=conv)
        expected = np.zeros_like(p)
        expected[b - 1] = val * amp**2 * L**2
        np.testing.assert_allclose(p[b - 1], expected[b - 1], rtol=1e-6, err_msg=conv)
        others = np.delete(p, b - 1)
        assert np.max(np.abs(others)) < 1e-12 * p[b - 1], conv


def test_hand_counts_agree_with_enumeration():
    # The hand-derived bin populations above, re-counted by brute-force enumeration.
    pairs, selfc = _bin_census(16, "paper")
    assert 2 * pairs[2] + selfc[2] == 16 and 2 * pairs[7] + selfc[7] == 46
    pairs, selfc = _bin_census(16, "pylians")
    assert pairs[2] + selfc[2] == 10 and pairs[1] + selfc[1] == 8
    assert pairs[7] + selfc[7] == 20 and selfc[7] == 2 and pairs[6] + selfc[6] == 24


@pytest.mark.parametrize(
    "mode",
    [(5, 0), (0, 17), (9, 9), (-20, 31), (127, 3), (3, 127), (128, 0), (128, 128), (100, 85)],
)
def test_single_mode_n256(mode):
    # Same algebra at the paper's resolution, with bin populations from _bin_census.
    n, amp = 256, 0.25
    m, k_ = mode
    q = m * m + k_ * k_
    selfconj = (m % n) in (0, n // 2) and (k_ % n) in (0, n // 2)
    field = _single_mode(n, m, k_, amp)
    for conv in CONVENTIONS:
        kk, p = power_spectrum(field, box_size=L, convention=conv)
        b = _bin_of(q, conv)
        if b > len(p):  # paper discards the corners |k| > N/2 (e.g. (128, 128), (100, 85))
            assert conv == "paper" and q > (n // 2) ** 2
            assert np.max(np.abs(p)) < 1e-12 * amp**2 * L**2
            continue
        pairs, selfc = _bin_census(n, conv)
        if conv == "paper":
            nb = 2 * pairs[b - 1] + selfc[b - 1]
            expected = amp**2 * L**2 / nb if selfconj else amp**2 * L**2 / (2 * nb)
        else:
            nb = pairs[b - 1] + selfc[b - 1]
            expected = amp**2 * L**2 / nb if selfconj else amp**2 * L**2 / (4 * nb)
        np.testing.assert_allclose(p[b - 1], expected, rtol=1e-6, err_msg=f"{conv} {mode}")
        assert np.max(np.abs(np.delete(p, b - 1))) < 1e-12 * expected, f"{conv} {mode}"


# --------------------------------------------------------------------------- 2. white noise
def _flat_spectrum_noise(n, sigma, seed):
    """Real field whose every k != 0 mode has |delta_k| = c exactly, with random phases."""
    g = np.random.default_rng(seed).standard_normal((n, n))
    gk = np.fft.fft2(g)
    gk = gk / np.abs(gk)  # keeps Hermitian symmetry; self-conjugate modes become +-1
    gk[0, 0] = 0.0
    d = np.fft.ifft2(gk).real  # |fft2(d)| = 1 for every k != 0
    # Parseval: var(d) = sum_k |d_k|^2 / N^4 = (N^2 - 1) / N^4; rescale to variance sigma^2.
    c = sigma * n**2 / math.sqrt(n * n - 1)
    return 1.0 + c * d, c


@pytest.mark.parametrize("n", [64, 256])
def test_exactly_flat_spectrum(n):
    sigma = 0.2
    field, c = _flat_spectrum_noise(n, sigma, seed=3)
    np.testing.assert_allclose(field.std(), sigma, rtol=1e-10)
    # Every mode has P_mode = c^2 L^2 / N^4 = sigma^2 (L/N)^2 N^2/(N^2 - 1): any weighted mean
    # over modes returns it exactly.
    level = c**2 * L**2 / n**4
    np.testing.assert_allclose(level, sigma**2 * (L / n) ** 2 * n**2 / (n**2 - 1), rtol=1e-12)
    for conv in CONVENTIONS:
        _, p = power_spectrum(field, box_size=L, convention=conv)
        np.testing.assert_allclose(p, level, rtol=1e-6, err_msg=conv)
        np.testing.assert_allclose(p, sigma**2 * (L / n) ** 2, rtol=2.0 / n**2, err_msg=conv)


def test_gaussian_white_noise_chi_square():
    # delta = sigma g, g ~ N(0, 1) i.i.d.: <|delta_k|^2> = sigma^2 N^2, P0 = sigma^2 (L/N)^2.
    # |delta_k|^2 / P_mode-mean is Exp(1) (variance 1) for a conjugate pair and chi^2_1
    # (variance 2) for a self-conjugate mode, all independent. With the bins' weights:
    #   paper:   P_b = (2 sum_pairs + sum_self) / N_b,  Var = P0^2 (4 n_pairs + 2 n_self) / N_b^2
    #   pylians: P_b = (sum_pairs + sum_self) / N_b',   Var = P0^2 (n_pairs + 2 n_self) / N_b'^2
    n, sigma = 256, 0.1
    g = np.random.default_rng(12345).standard_normal((n, n))
    field = 1.0 + sigma * (g - g.mean())  # mean exactly 1
    p0 = sigma**2 * (L / n) ** 2
    for conv in CONVENTIONS:
        _, p = power_spectrum(field, box_size=L, convention=conv)
        pairs, selfc = _bin_census(n, conv)
        if conv == "paper":
            nb = 2 * pairs + selfc
            var = p0**2 * (4 * pairs + 2 * selfc) / nb**2
        else:
            nb = pairs + selfc
            var = p0**2 * (pairs + 2 * selfc) / nb**2
        chi2 = np.sum((p - p0) ** 2 / var)
        dof = len(p)
        assert abs(chi2 - dof) < 5 * math.sqrt(2 * dof), (conv, chi2, dof)
        # and no drift with k: the upper and lower halves agree within their errors
        lo, hi = slice(0, dof // 2), slice(dof // 2, dof)
        mlo = np.sum(p[lo] / var[lo]) / np.sum(1 / var[lo])
        mhi = np.sum(p[hi] / var[hi]) / np.sum(1 / var[hi])
        err = math.sqrt(1 / np.sum(1 / var[lo]) + 1 / np.sum(1 / var[hi]))
        assert abs(mlo - mhi) < 5 * err, conv


# --------------------------------------------------------------------------- 3. stacks, dtypes
def _lognormal_maps(shape, seed):
    rng = np.random.default_rng(seed)
    return np.exp(0.8 * rng.standard_normal(shape))


@pytest.mark.parametrize("conv", CONVENTIONS)
def test_stack_equals_loop(conv):
    maps = _lognormal_maps((2, 3, 32, 32), seed=1)
    k, p = power_spectrum(maps, box_size=L, convention=conv)
    assert p.shape == (2, 3, len(k))
    for a in range(2):
        for b in range(3):
            k1, p1 = power_spectrum(maps[a, b], box_size=L, convention=conv)
            np.testing.assert_array_equal(k1, k)
            np.testing.assert_allclose(p[a, b], p1, rtol=1e-12)
    # a (1, N, N) stack keeps its leading axis; a large stack crosses the internal chunks
    big = _lognormal_maps((70, 64, 64), seed=2)
    _, pb = power_spectrum(big, box_size=L, convention=conv)
    _, p69 = power_spectrum(big[69], box_size=L, convention=conv)
    np.testing.assert_allclose(pb[69], p69, rtol=1e-12)
    assert power_spectrum(big[:1], convention=conv)[1].shape == (1, pb.shape[-1])


@pytest.mark.parametrize("conv", CONVENTIONS)
def test_float32_and_float64_agree(conv):
    maps = _lognormal_maps((4, 64, 64), seed=4)
    m32 = maps.astype(np.float32)
    k32, p32 = power_spectrum(m32, convention=conv)
    k64, p64 = power_spectrum(m32.astype(np.float64), convention=conv)
    assert p32.dtype == np.float64
    np.testing.assert_array_equal(k32, k64)
    np.testing.assert_array_equal(p32, p64)  # float32 input is promoted, not computed in float32
    _, pref = power_spectrum(maps, convention=conv)
    np.testing.assert_allclose(p32, pref, rtol=1e-4)  # only the input rounding differs


# --------------------------------------------------------------------------- 4. invariances
@pytest.mark.parametrize("conv", CONVENTIONS)
def test_invariances(conv):
    field = _lognormal_maps((64, 64), seed=5)
    _, p = power_spectrum(field, convention=conv)
    for other in (
        np.roll(field, (5, -23), axis=(0, 1)),  # translation: delta_k -> phase * delta_k
        np.rot90(field),  # rotation: permutes modes of equal |k|
        np.rot90(field, 3),
        field.T,
        7.3 * field,  # delta = field / mean - 1 is scale free
    ):
        _, q = power_spectrum(other, convention=conv)
        np.testing.assert_allclose(q, p, rtol=1e-10)


# --------------------------------------------------------------------------- 5. bins
def test_bin_layout_n256():
    n = 256
    kf = 2 * np.pi / L
    field = _lognormal_maps((n, n), seed=6)

    k, p = power_spectrum(field, box_size=L, convention="paper")
    assert k.shape == p.shape == (n // 2,) == (128,)
    # bin 1 = ceil bin (0, 1] holds only the four |k| = k_F modes
    np.testing.assert_allclose(k[0], kf, rtol=1e-12)
    units = k / kf
    edges = np.arange(1, n // 2 + 1)
    assert np.all(units > edges - 1) and np.all(units <= edges + 1e-12)
    assert (n // 2 - 1) * kf < k[-1] <= (n // 2) * kf

    k, p = power_spectrum(field, box_size=L, convention="pylians")
    assert k.shape == p.shape == (181,)
    assert 181 == int(np.sqrt(2 * 128**2))
    # bin 1 = floor bin [1, 2): independent modes (1,0), (0,1), (1,1), (-1,1)
    np.testing.assert_allclose(k[0], (1 + np.sqrt(2)) / 2 * kf, rtol=1e-12)
    # last bin [181, 182): only the corner (128, 128)
    np.testing.assert_allclose(k[-1], 128 * np.sqrt(2) * kf, rtol=1e-12)
    units = k / kf
    edges = np.arange(1, 182)
    assert np.all(units >= edges - 1e-12) and np.all(units < edges + 1)
    assert np.all(np.isfinite(p)) and np.all(p > 0)


def test_box_size_scaling():
    # k scales as 1/L and P as L^2 at fixed pixels
    field = _lognormal_maps((32, 32), seed=7)
    for conv in CONVENTIONS:
        k1, p1 = power_spectrum(field, box_size=25.0, convention=conv)
        k2, p2 = power_spectrum(field, box_size=50.0, convention=conv)
        np.testing.assert_allclose(k2, k1 / 2, rtol=1e-12)
        np.testing.assert_allclose(p2, 4 * p1, rtol=1e-12)


# --------------------------------------------------------------------------- 6. bad inputs
@pytest.mark.parametrize(
    "field,box,conv,match",
    [
        (np.ones(16), 25.0, "paper", "2D map"),
        (np.ones((16, 8)), 25.0, "paper", "square"),
        (np.ones((3, 16, 8)), 25.0, "pylians", "square"),
        (np.ones((1, 1)), 25.0, "paper", "at least 2"),
        (np.zeros((8, 8)), 25.0, "paper", "mean.*> 0"),
        (-np.ones((8, 8)), 25.0, "paper", "mean.*> 0"),
        (np.stack([np.ones((8, 8)), -np.ones((8, 8))]), 25.0, "paper", "map 1 .*mean"),
        (np.full((8, 8), np.nan), 25.0, "pylians", "finite"),
        (np.where(np.eye(8) > 0, np.inf, 1.0), 25.0, "paper", "finite"),
        (np.ones((8, 8)) + 0j, 25.0, "paper", "real-valued"),
        (np.ones((8, 8)), 0.0, "paper", "box_size"),
        (np.ones((8, 8)), -25.0, "paper", "box_size"),
        (np.ones((8, 8)), 25.0, "Pylians3", r"allowed conventions are 'paper', 'pylians'"),
        (np.ones((8, 8)), 25.0, "nbodykit", "unknown convention 'nbodykit'"),
    ],
)
def test_bad_inputs(field, box, conv, match):
    with pytest.raises(ValueError, match=match):
        power_spectrum(field, box_size=box, convention=conv)


# --------------------------------------------------------------------------- 7. reference
def _slow_reference(field, box, convention):
    """Direct loop over the full (complex, non-rfft) FFT plane.

    pylians: Pk_plane counts one mode of each conjugate pair and self-conjugate modes once;
    over the full plane that is weight 1/2 per mode of a pair and 1 per self-conjugate mode,
    floor binning, bins 1..int(sqrt2 N/2). paper: weight 1 for every full-plane mode, ceil
    binning, bins 1..N/2.
    """
    n = field.shape[0]
    delta = field / field.mean() - 1.0
    dk = np.fft.fft2(delta)
    nbins = n // 2 if convention == "paper" else math.isqrt(2 * (n // 2) ** 2)
    psum, ksum, wsum = [0.0] * (nbins + 1), [0.0] * (nbins + 1), [0.0] * (nbins + 1)
    for i in range(n):
        for j in range(n):
            kx, ky = _signed(i, n), _signed(j, n)
            q = kx * kx + ky * ky
            if q == 0:
                continue
            b = _bin_of(q, convention)
            if b > nbins:
                continue
            if convention == "paper":
                w = 1.0
            else:
                w = 1.0 if ((-i) % n == i and (-j) % n == j) else 0.5
            v = dk[i, j]
            psum[b] += w * (v.real * v.real + v.imag * v.imag)
            ksum[b] += w * math.sqrt(q)
            wsum[b] += w
    kf = 2 * math.pi / box
    k = np.array([ksum[b] / wsum[b] * kf for b in range(1, nbins + 1)])
    p = np.array([psum[b] / wsum[b] * box**2 / n**4 for b in range(1, nbins + 1)])
    return k, p


@pytest.mark.parametrize("n", [32, 15])
@pytest.mark.parametrize("conv", CONVENTIONS)
def test_against_slow_full_plane_loop(n, conv):
    field = _lognormal_maps((n, n), seed=8 + n)
    k, p = power_spectrum(field, box_size=L, convention=conv)
    k_ref, p_ref = _slow_reference(field, L, conv)
    np.testing.assert_allclose(k, k_ref, rtol=1e-10)
    np.testing.assert_allclose(p, p_ref, rtol=1e-10)
