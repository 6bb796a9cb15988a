"""CAMELS-like synthetic CMD maps made locally: the embedded default data set.

Two generators behind one interface (:func:`generate_maps`), both returning Mcdm-like maps of a
periodic 25 Mpc/h box projected over 5 Mpc/h slabs, in (Msun/h)/(Mpc/h)^2, with the mean
surface density of :func:`cosmodiff.cosmology.mean_surface_density`:

``lognormal``
    Sigma = Sigma_bar * exp(g - sigma_g^2 / 2) with g a Gaussian random field on the pixel
    grid. The spectrum of g is chosen so that the *density contrast* Sigma / Sigma_bar - 1 has
    exactly the slab-projected halofit spectrum of :func:`cosmodiff.cosmology.projected_power`
    on the grid (the lognormal transform xi_g = ln(1 + xi) of the grid correlation function).
    That transform leaves a few Fourier modes with a slightly negative Gaussian power: for the
    whole prior only modes in the corners of the grid beyond the Nyquist circle
    (|k| > 31 h/Mpc at 256^2, 7.8 h/Mpc at 64^2), at most 3e-5 of the peak power. They are
    raised to a floor of ``GAUSSIAN_FLOOR`` times the peak, which keeps the model a proper,
    non-singular Gaussian in log space at every parameter point (and continuous in the
    parameters); :class:`LognormalSpectrum` records how many modes and where, and its
    ``realised`` spectrum is the exact spectrum of the generated maps after the floor, which
    the tests check against the maps and against the requested halofit spectrum.
    Because log Sigma is Gaussian, the exact likelihood p(map | Omega_m, sigma_8) is known:
    :func:`lognormal_log_likelihood`. Each map is an independent draw.

``nbody``
    A small particle-mesh N-body simulation (:mod:`cosmodiff.particle_mesh`): one box per
    simulation, its 15 maps are the 5 slabs along each of 3 axes as in CAMELS, so maps of a
    simulation share initial conditions and carry a cosmic web of filaments and halos.

:func:`synthesize_cmd` writes a whole Latin-hypercube data set in the CMD file layout
(:mod:`cosmodiff.camels`), so that nothing downstream can tell it from the real data except
by content.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from . import camels
from .cosmology import (
    BOX_SIZE,
    MAPS_PER_SIM,
    PRIOR,
    check_in_prior,
    mean_surface_density,
    projected_power,
)

GENERATORS = ("lognormal", "nbody")

#: Prior of the four astrophysical columns of the CAMELS tables (log-uniform in CAMELS).
#: They do not change a synthetic CDM map; they are drawn only so that the parameter table
#: has the layout and ranges of the real one.
ASTRO_PRIOR = {"A_SN1": (0.25, 4.0), "A_AGN1": (0.25, 4.0), "A_SN2": (0.5, 2.0), "A_AGN2": (0.5, 2.0)}


# --------------------------------------------------------------------------------------------
# Lognormal generator
# --------------------------------------------------------------------------------------------


#: Floor of the Gaussian (log-space) power, relative to its peak; see the module docstring.
GAUSSIAN_FLOOR = 1e-6


@dataclass(frozen=True)
class LognormalSpectrum:
    """Everything the lognormal generator and its likelihood need at one (Omega_m, sigma_8).

    All spectra are eigenvalues of circulant covariances on the N x N pixel grid in the full
    FFT layout; an eigenvalue lambda_k corresponds to a power P(|k|) = lambda_k L^2 / N^2.

    target:     requested covariance of delta = Sigma / Sigma_bar - 1: the slab-projected
                halofit P_2D(|k|) N^2 / L^2.
    gaussian:   covariance of g = ln(Sigma / Sigma_bar) + sigma_g^2 / 2 (after the floor).
    realised:   covariance of delta that the generated maps really have: the forward
                lognormal transform of ``gaussian``; equals ``target`` except at floored modes.
    variance_g: sigma_g^2, the one-point variance of g.
    log_mean:   ln Sigma_bar.
    n_floored:  number of Fourier modes whose Gaussian power was raised to the floor.
    floored_k:  the smallest |k| (h/Mpc) among them (inf if none).
    """

    target: np.ndarray
    gaussian: np.ndarray
    realised: np.ndarray
    variance_g: float
    log_mean: float
    n_floored: int
    floored_k: float


def grid_wavenumbers(resolution, box_size=BOX_SIZE):
    """|k| in h/Mpc of every mode of an N x N periodic grid, full FFT layout."""
    k1 = 2 * np.pi * np.fft.fftfreq(resolution, d=box_size / resolution)
    return np.hypot(k1[:, None], k1[None, :])


@lru_cache(maxsize=64)
def lognormal_spectrum(omega_m, sigma_8, resolution=256, box_size=BOX_SIZE, in_prior=True):
    """The spectra of the lognormal model at one parameter point (cached).

    omega_m, sigma_8: cosmology (inside the CAMELS prior).
    resolution:       pixels per side N.
    box_size:         side of the periodic box, Mpc/h.
    in_prior:         refuse parameters outside the CAMELS prior; False only for the
                      out-of-distribution fields (cosmodiff.inference.shifted).
    """
    if in_prior:
        check_in_prior(omega_m, sigma_8)
    kk = grid_wavenumbers(resolution, box_size)
    n2 = resolution * resolution
    target = projected_power(omega_m, sigma_8, kk, box_size=box_size) * n2 / box_size**2
    xi = np.fft.ifft2(target).real  # correlation function of delta on the grid
    if xi.min() <= -1:
        raise ValueError("target correlation function reaches -1: no lognormal field exists")
    gaussian = np.fft.fft2(np.log1p(xi)).real
    floor = GAUSSIAN_FLOOR * gaussian.max()
    low = gaussian < floor
    gaussian = np.where(low, floor, gaussian)
    realised = np.fft.fft2(np.expm1(np.fft.ifft2(gaussian).real)).real
    return LognormalSpectrum(
        target=target,
        gaussian=gaussian,
        realised=realised,
        variance_g=float(gaussian.sum() / n2),
        log_mean=float(np.log(mean_surface_density(omega_m))),
        n_floored=int(low.sum()),
        floored_k=float(kk[low].min()) if low.any() else float("inf"),
    )


def lognormal_maps(omega_m, sigma_8, n_maps, seed, resolution=256, box_size=BOX_SIZE, in_prior=True):
    """Independent lognormal CDM maps, float32 array (n_maps, N, N) in (Msun/h)/(Mpc/h)^2.

    omega_m, sigma_8: cosmology (inside the CAMELS prior).
    n_maps:           number of maps.
    seed:             integer seed or numpy SeedSequence; the same seed gives the same maps.
    resolution:       pixels per side N (256 for CMD).
    box_size:         side of the periodic box, Mpc/h.
    in_prior:         as in lognormal_spectrum.
    """
    spec = lognormal_spectrum(float(omega_m), float(sigma_8), int(resolution), float(box_size), bool(in_prior))
    rng = np.random.default_rng(seed)
    amp = np.sqrt(spec.gaussian)
    out = np.empty((n_maps, resolution, resolution), dtype=np.float32)
    for i in range(n_maps):
        white = rng.standard_normal((resolution, resolution))
        g = np.fft.ifft2(amp * np.fft.fft2(white)).real
        out[i] = np.exp(spec.log_mean + g - 0.5 * spec.variance_g)
    return out


def lognormal_log_likelihood(maps, omega_m, sigma_8, box_size=BOX_SIZE):
    """Exact log-likelihood ln p(map | Omega_m, sigma_8) of lognormal maps, one value per map.

    Up to a constant that does not depend on the parameters (the Gaussian normalisation
    -N^2/2 ln 2 pi and the Jacobian -sum ln Sigma of the map, both parameter-free), so
    differences between parameter points are exact.

    maps:             array (N, N) or (n, N, N) in (Msun/h)/(Mpc/h)^2, strictly positive.
    omega_m, sigma_8: the parameter point.
    box_size:         side of the periodic box, Mpc/h.
    """
    maps = np.asarray(maps, dtype=np.float64)
    single = maps.ndim == 2
    if single:
        maps = maps[None]
    if maps.ndim != 3 or maps.shape[-1] != maps.shape[-2]:
        raise ValueError(f"maps must be (N, N) or (n, N, N), got shape {maps.shape}")
    if not np.all(maps > 0):
        raise ValueError("lognormal likelihood needs strictly positive maps")
    res = maps.shape[-1]
    spec = lognormal_spectrum(float(omega_m), float(sigma_8), int(res), float(box_size))
    g = np.log(maps) - spec.log_mean + 0.5 * spec.variance_g
    gk = np.fft.fft2(g)
    quad = (np.abs(gk) ** 2 / spec.gaussian).sum(axis=(-2, -1)) / (res * res)
    logdet = np.log(spec.gaussian).sum()
    ll = -0.5 * (quad + logdet)
    return ll[0] if single else ll


# --------------------------------------------------------------------------------------------
# One interface, whole data sets
# --------------------------------------------------------------------------------------------


def generate_maps(generator, omega_m, sigma_8, seed, resolution=256, **options):
    """The 15 maps of one synthetic simulation, float32 (15, N, N) in (Msun/h)/(Mpc/h)^2.

    generator:  "lognormal" (independent maps, exact likelihood) or "nbody" (particle mesh).
    omega_m, sigma_8: cosmology (inside the CAMELS prior).
    seed:       integer seed or numpy SeedSequence of this simulation.
    resolution: pixels per side.
    options:    generator settings; for "nbody" those of
                :func:`cosmodiff.particle_mesh.simulate_maps` (n_particles, n_mesh, n_steps,
                a_start); "lognormal" takes none.
    """
    if generator == "lognormal":
        if options:
            raise ValueError(f"the lognormal generator takes no options, got {sorted(options)}")
        return lognormal_maps(omega_m, sigma_8, MAPS_PER_SIM, seed, resolution=resolution)
    if generator == "nbody":
        from .particle_mesh import simulate_maps

        if isinstance(seed, np.random.SeedSequence):
            seed = int(seed.generate_state(1)[0])
        return simulate_maps(omega_m, sigma_8, seed, resolution=resolution, **options)
    raise ValueError(f"unknown generator {generator!r}; choose one of {GENERATORS}")


def latin_hypercube(n_sims, seed, omega_m_range=PRIOR["omega_m"], sigma_8_range=PRIOR["sigma_8"]):
    """CAMELS-like parameter table (n_sims, 6) from a seeded Latin hypercube.

    n_sims:        rows of the table.
    seed:          integer seed or numpy SeedSequence.
    omega_m_range: (low, high) of Omega_m, within the CAMELS prior (default: the prior).
    sigma_8_range: (low, high) of sigma_8, within the CAMELS prior (default: the prior).

    Omega_m and sigma_8 are uniform over their ranges, the four astrophysical parameters
    log-uniform over the CAMELS prior, as in CAMELS; each column is stratified into n_sims
    bins with one draw per bin, bins shuffled independently per column.
    """
    check_in_prior(omega_m_range, sigma_8_range)
    if omega_m_range[0] > omega_m_range[1] or sigma_8_range[0] > sigma_8_range[1]:
        raise ValueError(f"ranges must be (low, high), got {omega_m_range} and {sigma_8_range}")
    rng = np.random.default_rng(seed)
    u = (rng.permuted(np.tile(np.arange(n_sims), (6, 1)), axis=1).T + rng.random((n_sims, 6))) / n_sims
    table = np.empty((n_sims, 6))
    for j, (lo, hi) in enumerate([omega_m_range, sigma_8_range]):
        table[:, j] = lo + (hi - lo) * u[:, j]
    for j, (lo, hi) in enumerate(ASTRO_PRIOR.values(), start=2):
        table[:, j] = np.exp(np.log(lo) + (np.log(hi) - np.log(lo)) * u[:, j])
    # CMD tables carry 5 decimals; round so the written table and the maps agree exactly.
    return np.round(table, 5)


def synthesize_cmd(
    out_dir,
    generator="lognormal",
    n_sims=100,
    seed=0,
    resolution=256,
    omega_m_range=PRIOR["omega_m"],
    sigma_8_range=PRIOR["sigma_8"],
    options=None,
    progress=True,
):
    """Write a synthetic data set in the CMD layout: maps .npy + parameter table.

    out_dir:    folder that receives camels.MAPS_FILENAME and camels.PARAMS_FILENAME.
    generator:  "lognormal" or "nbody".
    n_sims:     number of simulations (15 maps each), parameters from a seeded Latin hypercube.
    seed:       master seed: the table and every simulation's seed derive from it.
    resolution: pixels per side of the maps.
    omega_m_range, sigma_8_range: Latin-hypercube ranges (see :func:`latin_hypercube`).
    options:    generator settings (see :func:`generate_maps`).
    progress:   show a progress bar.

    Returns a dict of the settings (JSON-serialisable), which is also written next to the
    data as ``synthetic.json`` so that the provenance travels with the files.
    """
    from tqdm.auto import tqdm

    options = dict(options or {})
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    root = np.random.SeedSequence(seed)
    table_seed, sims_seed = root.spawn(2)
    params = latin_hypercube(n_sims, table_seed, omega_m_range, sigma_8_range)
    sim_seeds = sims_seed.spawn(n_sims)
    with camels.maps_writer(out_dir / camels.MAPS_FILENAME, n_sims * MAPS_PER_SIM, resolution) as maps:
        for s in tqdm(range(n_sims), desc=f"synthesize ({generator})", unit="sim", disable=not progress):
            maps[s * MAPS_PER_SIM : (s + 1) * MAPS_PER_SIM] = generate_maps(
                generator, params[s, 0], params[s, 1], sim_seeds[s], resolution=resolution, **options
            )
    camels.write_params(out_dir / camels.PARAMS_FILENAME, params)
    settings = {
        "generator": generator,
        "n_sims": int(n_sims),
        "seed": int(seed),
        "resolution": int(resolution),
        "omega_m_range": [float(v) for v in omega_m_range],
        "sigma_8_range": [float(v) for v in sigma_8_range],
        "options": options,
    }
    (out_dir / "synthetic.json").write_text(json.dumps(settings, indent=2) + "\n")
    return settings


# --------------------------------------------------------------------------------------------
# Exact likelihood of prepared (log10, possibly downsampled) lognormal fields
# --------------------------------------------------------------------------------------------


@lru_cache(maxsize=8)
def _downsample_kernel_power(native, resolution, method):
    """|H(k)|^2 on the native grid of the periodic downsampling operator's row for output
    pixel (0, 0) (cosmodiff.prepare.downsample is linear and commutes with shifts by one
    output pixel, so that row defines it). Obtained exactly with autograd."""
    import torch

    from .prepare import downsample_torch

    x = torch.zeros((1, 1, native, native), dtype=torch.float64, requires_grad=True)
    with torch.enable_grad():  # also when first called under no_grad (a sampler, a potential)
        downsample_torch(x, resolution, method)[0, 0, 0, 0].backward()
    return np.abs(np.fft.fft2(x.grad[0, 0].numpy())) ** 2


@lru_cache(maxsize=1024)
def log10_spectrum(omega_m, sigma_8, native, resolution=None, method="bicubic", box_size=BOX_SIZE):
    """(eigenvalues (n, n) of the circulant covariance of log10 Sigma, mean of log10 Sigma) on
    an n x n grid: the native grid, or after the periodic downsampling of prepare (linear in
    the log field, so the field stays Gaussian; the coarse spectrum is the aliased sum
    lambda'(q) = FFT_coarse[ IFFT_native(|H|^2 lambda)[::f, ::f] ]). Cached: a new cosmology
    costs ~0.2 s of halofit."""
    spec = lognormal_spectrum(float(omega_m), float(sigma_8), int(native), float(box_size))
    lam = spec.gaussian / np.log(10) ** 2
    mean = (spec.log_mean - 0.5 * spec.variance_g) / np.log(10)
    if resolution is None or resolution == native:
        return lam, mean
    f = native // resolution
    corr = np.fft.ifft2(_downsample_kernel_power(native, resolution, method) * lam).real
    return np.fft.fft2(corr[::f, ::f]).real, mean


def lognormal_log10_likelihood(log10_maps, omega_m, sigma_8, native_resolution=None, method="bicubic"):
    """Exact log-likelihood of log10 lognormal maps, as prepared by the workflow, per map.

    log10_maps:        (N, N) or (n, N, N) log10 surface densities.
    omega_m, sigma_8:  the parameter point.
    native_resolution: resolution at which the maps were generated (default N); when larger,
                       the maps are taken to be prepare.downsample(..., N, method) of native
                       ones and the likelihood is the exact one of that Gaussian field.
    method:            downsampling method of prepare.
    Up to a parameter-independent constant; equals lognormal_log_likelihood of 10**maps up
    to such a constant at the native resolution.
    """
    x = np.asarray(log10_maps, dtype=np.float64)
    single = x.ndim == 2
    x = x[None] if single else x
    n = x.shape[-1]
    lam, mean = log10_spectrum(float(omega_m), float(sigma_8), int(native_resolution or n), n, method)
    gk = np.fft.fft2(x - mean)
    quad = (np.abs(gk) ** 2 / lam).sum(axis=(-2, -1)) / (n * n)
    ll = -0.5 * (quad + np.log(lam).sum())
    return ll[0] if single else ll
