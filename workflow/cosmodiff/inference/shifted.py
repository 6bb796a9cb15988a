"""Fields the model never saw: the out-of-distribution sets of the baselines comparison.

Mudur et al. leave open how the model behaves beyond its training distribution. The
workflow's rule ``out_of_distribution`` scans, with the same trained network, three kinds of
shifted field, each prepared exactly as the training maps are (generated at the native
resolution, floored, log10, downsampled with the configured method):

* :func:`generated_fields` with ``generator="nbody"``: particle-mesh maps at the test
  parameters, a different field statistic (non-Gaussian log field) at the same cosmology;
* :func:`generated_fields` with ``generator="lognormal"`` at parameters outside the training
  box (and the scan's prior), where the model has never been conditioned;
* :func:`with_white_noise`: test fields with Gaussian white noise added to the log10 field,
  whose reference is the exact posterior of the noise-free field.

No torch here except through the N-body generator.
"""

from __future__ import annotations

import numpy as np

from ..prepare import downsample, log_transform
from ..synthetic import generate_maps, lognormal_maps


def generated_fields(
    generator,          # "lognormal" or "nbody" (cosmodiff.synthetic.generate_maps).
    params,             # (n, 2) (Omega_m, sigma_8), one field each.
    seed,               # Seed of the set: field i uses its own stream of it.
    native,             # Resolution the maps are generated at (the data's).
    resolution,         # Resolution of the fields (the scanned network's).
    method   = "bicubic",  # Downsampling (prepare.downsample).
    log_floor = 1.0e4,  # prepare.log_floor.
    options  = None,    # Generator options (nbody: n_particles, n_mesh, n_steps, a_start).
):
    """(n, resolution, resolution) float64 log10 fields, the first map of a simulation at
    each parameter point, prepared as the workflow prepares its maps. Lognormal fields may lie
    outside the CAMELS prior (the model's spectrum is analytic); N-body ones may not."""
    params = np.asarray(params, dtype=np.float64).reshape(-1, 2)
    seeds = np.random.SeedSequence([int(seed), 0x00D]).spawn(len(params))
    out = []
    for (om, s8), ss in zip(params, seeds):
        if generator == "lognormal" and not options:
            maps = lognormal_maps(float(om), float(s8), 1, ss, resolution=int(native), in_prior=False)
        else:
            maps = generate_maps(generator, float(om), float(s8), ss, resolution=int(native), **dict(options or {}))
        out.append(downsample(log_transform(maps[:1], log_floor), int(resolution), method)[0])
    return np.asarray(out, dtype=np.float64)


def with_white_noise(
    field,              # log10 field (N, N).
    sigma,              # Noise standard deviation per pixel, in dex (log10 units).
    seed,               # Seed of the noise.
):
    """The field plus Gaussian white noise of ``sigma`` dex per pixel."""
    field = np.asarray(field, dtype=np.float64)
    if not sigma >= 0:
        raise ValueError(f"noise sigma must be >= 0 dex, got {sigma}")
    return field + float(sigma) * np.random.default_rng([int(seed), 0x0015E]).standard_normal(field.shape)


__all__ = ["generated_fields", "with_white_noise"]
