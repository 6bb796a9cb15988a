"""Emulator validation: per-checkpoint chi-squared tables and checkpoint selection.

For each validation point (a simulation of the validation split, all its 15 maps), a
checkpoint generates maps at the simulation's (Omega_m, sigma_8); the table row holds the
reduced chi-squared of their P(k) against the simulation's maps (:func:`cosmodiff.stats.
reduced_chi2`, averaged over the generated maps), the leave-one-out reference of the
simulated maps themselves, and the mean log-density z-score that P(k) of field/mean - 1
cannot see.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from . import stats
from .cosmology import BOX_SIZE, MAPS_PER_SIM
from .powerspec import power_spectrum

TABLE_COLUMNS = ["point", "sim", "omega_m", "sigma_8", "chi2_samples", "chi2_sims", "density_z"]


def choose_points(data_path, n_points, seed, split="val"):
    """Simulations of a split used as validation points: n_points distinct ones, seeded.

    Returns a sorted list of simulation indices (as stored in the file's /<split>/sim).
    """
    import h5py

    with h5py.File(data_path, "r") as f:
        sims = np.unique(f[split]["sim"][:])
    if n_points > len(sims):
        raise ValueError(f"asked for {n_points} validation points but the {split} split has {len(sims)} simulations")
    rng = np.random.default_rng(seed)
    return sorted(int(s) for s in rng.choice(sims, size=n_points, replace=False))


def simulation_maps(data_path, sim, split="val"):
    """log10 maps (15, N, N) and (Omega_m, sigma_8) of one simulation of a prepared file."""
    import h5py

    with h5py.File(data_path, "r") as f:
        idx = np.flatnonzero(f[split]["sim"][:] == sim)
        if len(idx) != MAPS_PER_SIM:
            raise ValueError(f"simulation {sim} has {len(idx)} maps in the {split} split of {data_path}")
        return f[split]["maps"][idx[0] : idx[-1] + 1], f[split]["params"][idx[0], :2]


def log_power(log_maps, convention="paper"):
    """P(k) of 10**log_maps: (k, P (n, N_k)).

    P(k) of field / mean - 1 does not change when the field is multiplied by a constant, so
    each map is exponentiated relative to its own maximum: an under-trained network's
    samples, whose log10 values can run into the hundreds, still give a finite (bad)
    spectrum instead of overflowing.
    """
    x = np.asarray(log_maps, dtype=np.float64)
    peak = x.max(axis=(-2, -1), keepdims=True)
    return power_spectrum(10.0 ** (x - peak), box_size=BOX_SIZE, convention=convention)


def validate(emulator, data_path, sims, n_samples, sampler="ddim", steps=50, seed=0, batch_size=16, clip=True, split="val", progress=False):
    """The chi-squared table of one checkpoint (pandas DataFrame, one row per point).

    emulator:   :class:`cosmodiff.emulator.Emulator` of the checkpoint.
    data_path:  prepared file at the checkpoint's resolution.
    sims:       simulation indices of the validation points (see :func:`choose_points`).
    n_samples:  generated maps per point (paper: 50).
    sampler, steps, batch_size, clip: as :meth:`Emulator.sample`.
    seed:       base seed; point i uses seed + i, so every checkpoint sees the same noise.
    """
    from tqdm.auto import tqdm

    rows = []
    for i, sim in enumerate(tqdm(sims, desc="validation points", disable=not progress)):
        log_sim, (om, s8) = simulation_maps(data_path, sim, split)
        log_gen = emulator.sample(om, s8, n_samples, sampler=sampler, steps=steps, seed=seed + i, batch_size=batch_size, resolution=log_sim.shape[-1], clip=clip)
        _, pk_sim = log_power(log_sim)
        _, pk_gen = log_power(log_gen)
        rows.append(
            {
                "point": i,
                "sim": int(sim),
                "omega_m": float(om),
                "sigma_8": float(s8),
                "chi2_samples": float(stats.reduced_chi2(pk_gen, pk_sim).mean()),
                "chi2_sims": float(stats.loo_chi2(pk_sim).mean()),
                "density_z": stats.mean_density_zscore(log_gen, log_sim),
            }
        )
    return pd.DataFrame(rows, columns=TABLE_COLUMNS)


def select(tables):
    """Pick the checkpoint with the lowest mean chi-squared of its samples.

    tables: mapping checkpoint path -> (iteration, DataFrame of :func:`validate`).
    Returns (choice dict, summary DataFrame with one row per checkpoint, sorted by iteration).
    """
    rows = []
    for path, (iteration, df) in tables.items():
        rows.append(
            {
                "checkpoint": str(path),
                "iteration": int(iteration),
                "chi2_samples": float(df["chi2_samples"].mean()),
                "chi2_samples_median": float(df["chi2_samples"].median()),
                "chi2_sims": float(df["chi2_sims"].mean()),
                "abs_density_z": float(df["density_z"].abs().mean()),
            }
        )
    summary = pd.DataFrame(rows).sort_values("iteration").reset_index(drop=True)
    best = summary.loc[summary["chi2_samples"].idxmin()]
    choice = {k: (v.item() if hasattr(v, "item") else v) for k, v in best.items()}
    return choice, summary
