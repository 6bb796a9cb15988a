"""Constants of the CAMELS IllustrisTNG boxes and matter power spectra from pyccl.

Everything cosmological that the rest of the package needs lives here: the box, the slab,
the fixed parameters, the prior, the mean surface density of a CDM map, the 3D matter power
spectrum (pyccl: Eisenstein-Hu transfer function, optionally halofit), linear growth, and the
power spectrum of a slab-projected field in a periodic box.

Units: lengths in Mpc/h, wavenumbers in h/Mpc, 3D power in (Mpc/h)^3, 2D power in
(Mpc/h)^2, surface densities in (Msun/h)/(Mpc/h)^2.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

#: Side of the periodic CAMELS box, Mpc/h.
BOX_SIZE = 25.0
#: Thickness of the slab projected into one CMD map, Mpc/h (5 slabs along each of 3 axes).
SLAB_THICKNESS = 5.0
#: Maps per simulation in CMD: 5 slabs x 3 axes.
MAPS_PER_SIM = 15
#: Fixed parameters of the CAMELS IllustrisTNG LH set.
OMEGA_B = 0.049
HUBBLE = 0.6711
N_S = 0.9624
#: Critical density today, (Msun/h)/(Mpc/h)^3.
RHO_CRIT = 2.77536627e11
#: Latin-hypercube prior of the cosmological parameters (CAMELS docs).
PRIOR = {"omega_m": (0.1, 0.5), "sigma_8": (0.6, 1.0)}
#: Names of the six columns of the CAMELS LH parameter tables, in order.
PARAM_NAMES = ("Omega_m", "sigma_8", "A_SN1", "A_AGN1", "A_SN2", "A_AGN2")
#: Surface-density unit of the maps.
MAP_UNITS = "(Msun/h)/(Mpc/h)^2"


def mean_surface_density(omega_m, slab=SLAB_THICKNESS):
    """Mean CDM surface density of a slab map: rho_crit (Omega_m - Omega_b) * slab.

    This is the mass identity of the CMD Mcdm maps: the mean of a simulation's maps equals
    1.3877e12 (Omega_m - 0.049) (Msun/h)/(Mpc/h)^2 for 5 Mpc/h slabs.
    """
    return RHO_CRIT * (np.asarray(omega_m, dtype=float) - OMEGA_B) * slab


def check_in_prior(omega_m, sigma_8):
    """Raise ValueError naming the parameter if (omega_m, sigma_8) lies outside the prior."""
    for name, value in (("omega_m", omega_m), ("sigma_8", sigma_8)):
        lo, hi = PRIOR[name]
        v = np.asarray(value, dtype=float)
        if np.any(v < lo - 1e-12) or np.any(v > hi + 1e-12) or not np.all(np.isfinite(v)):
            raise ValueError(f"{name}={value} lies outside the CAMELS prior [{lo}, {hi}]")


@lru_cache(maxsize=256)
def _ccl(omega_m: float, sigma_8: float, nonlinear: bool):
    import pyccl

    return pyccl.Cosmology(
        Omega_c=omega_m - OMEGA_B,
        Omega_b=OMEGA_B,
        h=HUBBLE,
        n_s=N_S,
        sigma8=sigma_8,
        transfer_function="eisenstein_hu",
        matter_power_spectrum="halofit" if nonlinear else "linear",
    )


def matter_power(omega_m, sigma_8, k, a=1.0, nonlinear=True):
    """3D matter power spectrum P(k) in (Mpc/h)^3 at wavenumbers k in h/Mpc.

    pyccl with the Eisenstein-Hu transfer function; ``nonlinear`` selects halofit.
    P(0) is defined as 0 (a periodic box has no mean-density fluctuation).
    """
    import pyccl

    k = np.asarray(k, dtype=float)
    cosmo = _ccl(float(omega_m), float(sigma_8), bool(nonlinear))
    out = np.zeros_like(k)
    pos = k > 0
    fn = pyccl.nonlin_matter_power if nonlinear else pyccl.linear_matter_power
    out[pos] = fn(cosmo, k[pos] * HUBBLE, a) * HUBBLE**3
    return out


def growth(omega_m, sigma_8, a):
    """Linear growth at scale factor(s) a: (D, f, E) with D(1) = 1, f = dlnD/dlna, E = H/H0."""
    import pyccl

    cosmo = _ccl(float(omega_m), float(sigma_8), False)
    a = np.asarray(a, dtype=float)
    flat = np.atleast_1d(a).ravel()  # pyccl rejects 0-d arrays
    return tuple(
        np.asarray(fn(cosmo, flat)).reshape(a.shape)
        for fn in (pyccl.growth_factor, pyccl.growth_rate, pyccl.h_over_h0)
    )


def projected_power(
    omega_m,
    sigma_8,
    k_perp,
    box_size=BOX_SIZE,
    slab=SLAB_THICKNESS,
    nonlinear=True,
    n_kz=512,
):
    """2D power spectrum (Mpc/h)^2 of the density contrast averaged over a slab of a periodic box.

    A slab average delta_2D(x) = (1/slab) * int_0^slab delta(x, z) dz has

        P_2D(k) = (1/L) sum_n P_3D(sqrt(k^2 + k_n^2)) sinc^2(k_n slab / 2),  k_n = 2 pi n / L,

    a sum over the line-of-sight modes that the periodic box of side L holds (n = -n_kz..n_kz;
    the tail falls as 1/n^2 times a steeply falling P_3D). This is what a CMD map of
    Maps_i / mean - 1 measures, up to the pixel window.

    k_perp: wavenumbers in h/Mpc (any shape).
    """
    k_perp = np.asarray(k_perp, dtype=float)
    # Evaluate on a 1D table and interpolate: the grid holds many repeated |k|.
    kmin_pos = 2 * np.pi / box_size
    table_k = np.concatenate([[0.0], np.geomspace(kmin_pos * 0.5, max(k_perp.max(), kmin_pos) * 1.01, 400)])
    n = np.arange(-n_kz, n_kz + 1)
    kz = 2 * np.pi * n / box_size
    weight = np.sinc(kz * slab / 2 / np.pi) ** 2  # numpy sinc(x) = sin(pi x)/(pi x)
    ktot = np.sqrt(table_k[:, None] ** 2 + kz[None, :] ** 2)
    # P_3D itself is smooth in log-log: tabulate it once, interpolate for all (k_perp, k_z).
    k3 = np.geomspace(kmin_pos * 0.5, ktot.max() * 1.01, 1024)
    logp3 = np.log(matter_power(omega_m, sigma_8, k3, nonlinear=nonlinear))
    with np.errstate(divide="ignore"):
        p3 = np.where(ktot > 0, np.exp(np.interp(np.log(ktot), np.log(k3), logp3)), 0.0)
    table_p = (p3 * weight[None, :]).sum(axis=1) / box_size
    # log-log interpolation for k > 0; the k = 0 entry separately
    out = np.empty_like(k_perp)
    zero = k_perp == 0
    out[zero] = table_p[0]
    kk = k_perp[~zero]
    out[~zero] = np.exp(np.interp(np.log(kk), np.log(table_k[1:]), np.log(table_p[1:])))
    return out
