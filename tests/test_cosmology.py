"""Cosmology: constants, pyccl conventions (h units), and the slab projection."""

import numpy as np
import pytest

from cosmodiff import cosmology as cosmo


def test_mass_identity_constant():
    # method.md: 1.3877e12 (Omega_m - 0.049) for Mcdm, and rho_crit * 0.3 * 5 = 4.1632e11 (Mtot)
    assert cosmo.mean_surface_density(0.3) == pytest.approx(1.3877e12 * (0.3 - 0.049), rel=1e-4)
    assert cosmo.RHO_CRIT * 0.3 * 5 == pytest.approx(4.1632e11, rel=1e-4)


def test_sigma8_normalisation_in_h_units():
    """The linear P(k) in (Mpc/h)^3 vs k in h/Mpc gives back sigma_8 in 8 Mpc/h spheres.

    This catches any slip in the h conversions of pyccl's Mpc units.
    """
    k = np.geomspace(1e-4, 1e2, 20000)
    for s8 in (0.6, 0.8, 1.0):
        p = cosmo.matter_power(0.3, s8, k, nonlinear=False)
        x = k * 8.0
        w = 3 * (np.sin(x) - x * np.cos(x)) / x**3
        var = np.trapezoid(k**3 * p * w**2 / (2 * np.pi**2), np.log(k))
        assert np.sqrt(var) == pytest.approx(s8, rel=2e-3)


def test_halofit_exceeds_linear_on_small_scales():
    k = np.array([0.05, 5.0])
    lin = cosmo.matter_power(0.3, 0.8, k, nonlinear=False)
    nl = cosmo.matter_power(0.3, 0.8, k, nonlinear=True)
    assert nl[0] == pytest.approx(lin[0], rel=0.02)
    assert nl[1] > 10 * lin[1]


def test_growth_normalised_today():
    d, f, e = cosmo.growth(0.3, 0.8, np.array([0.1, 1.0]))
    assert d[1] == pytest.approx(1.0)
    assert e[1] == pytest.approx(1.0)
    # matter domination at a = 0.1: D ~ a, f ~ 1
    assert d[0] == pytest.approx(0.1 / 0.78, rel=0.05)
    assert f[0] == pytest.approx(1.0, abs=0.01)


def test_projection_of_white_noise_is_p_over_slab(monkeypatch):
    """For a constant 3D spectrum P0, averaging over a slab s gives P_2D = P0 / s exactly:
    (1/L) sum_n sinc^2(pi n s / L) = 1/s (the discrete sum is exact for s = L/5)."""
    monkeypatch.setattr(cosmo, "matter_power", lambda om, s8, k, a=1.0, nonlinear=True: np.where(k > 0, 7.0, 0.0))
    k = np.array([0.5, 3.0, 20.0])
    p2 = cosmo.projected_power(0.3, 0.8, k, n_kz=4096)
    np.testing.assert_allclose(p2, 7.0 / cosmo.SLAB_THICKNESS, rtol=2e-4)


def test_projection_matches_continuous_integral_in_a_large_box():
    """In a box much larger than the slab, the sum over line-of-sight modes becomes the
    integral P_2D(k) = int dk_z / (2 pi) P_3D(sqrt(k^2 + k_z^2)) sinc^2(k_z s / 2)."""
    k = np.array([1.0, 4.0])
    big = 400.0
    p_sum = cosmo.projected_power(0.3, 0.8, k, box_size=big, n_kz=20000)
    kz = np.linspace(0, 60, 200001)
    for ki, ps in zip(k, p_sum):
        integrand = cosmo.matter_power(0.3, 0.8, np.hypot(ki, kz)) * np.sinc(kz * 5.0 / 2 / np.pi) ** 2
        p_int = 2 * np.trapezoid(integrand, kz) / (2 * np.pi)
        assert ps == pytest.approx(p_int, rel=5e-3)


def test_prior_check():
    cosmo.check_in_prior(0.1, 1.0)
    with pytest.raises(ValueError, match=r"omega_m=0\.6 lies outside the CAMELS prior \[0\.1, 0\.5\]"):
        cosmo.check_in_prior(0.6, 0.8)
    with pytest.raises(ValueError, match="sigma_8"):
        cosmo.check_in_prior(0.3, 0.5)
