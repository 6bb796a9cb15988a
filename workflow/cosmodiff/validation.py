"""Emulator validation: per-checkpoint chi-squared tables and checkpoint selection.

For each validation point (a simulation of the validation split, all its 15 maps), a
checkpoint generates maps at the simulation's (Omega_m, sigma_8); the table row holds
(:func:`point_statistics`):

* ``chi2_samples`` / ``chi2_sims``: the paper's reduced chi-squared of P(k) of
  field / mean - 1 against the simulation's maps (:func:`cosmodiff.stats.reduced_chi2`,
  averaged over the generated maps), and its leave-one-out reference for the simulated maps;
* ``chi2_log_samples`` / ``chi2_log_sims``: the same statistic for P(k) of the log10 field
  minus its mean. On maps with a wide one-point PDF (the lognormal demo maps: 0.8 dex) the
  spectrum of field / mean - 1 is set by a few bright pixels and is nearly white, so
  uncorrelated noise passes the paper's chi-squared; the log field's spectrum does not;
* ``density_z``: the mean log-density of the samples against the simulations in units of
  the simulations' scatter, which neither spectrum sees (Omega_m lives there);
* ``pdf_w1_dex``: the Wasserstein-1 distance between the pixel PDFs of log10 maps.

:func:`select` picks per stage the checkpoint with the lowest mean of one of them
(config ``validation.select_by``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from . import stats
from .cosmology import BOX_SIZE, MAPS_PER_SIM
from .powerspec import power_spectrum
from .prepare import open_prepared

STAT_COLUMNS = ["chi2_samples", "chi2_sims", "chi2_log_samples", "chi2_log_sims", "density_z", "pdf_w1_dex"]
TABLE_COLUMNS = ["point", "sim", "omega_m", "sigma_8", *STAT_COLUMNS]
#: select_by (config) -> the summary column whose lowest value wins; "last" keeps the last
#: checkpoint and reports chi2_log beside it (for runs whose statistics stop ranking the
#: checkpoints once the samples are as good as the simulations, while the bound still improves).
SELECT_BY = {"chi2": "chi2_samples", "chi2_log": "chi2_log_samples", "pdf_w1": "pdf_w1_dex", "density_z": "abs_density_z",
             "last": "chi2_log_samples"}


def choose_points(data_path, n_points, seed, split="val", fiducial=None):
    """Simulations of a split used as validation points: n_points distinct ones, seeded.

    fiducial: None, or an (Omega_m, sigma_8) point whose nearest simulation of the split is
              always one of the points (the authors' validation set holds the fiducial
              cosmology (0.30, 0.82): evaluate.py asserts it); the other n_points - 1 are drawn.
    Returns a sorted list of simulation indices (as stored in the file's /<split>/sim).
    """
    with open_prepared(data_path) as f:
        sim_of_map, params = f[split]["sim"][:], f[split]["params"][:, :2]
    sims, first = np.unique(sim_of_map, return_index=True)
    if n_points > len(sims):
        raise ValueError(f"asked for {n_points} validation points but the {split} split has {len(sims)} simulations")
    rng = np.random.default_rng(seed)
    if fiducial is None:
        return sorted(int(s) for s in rng.choice(sims, size=n_points, replace=False))
    nearest = int(np.argmin(np.hypot(*(params[first] - np.asarray(fiducial, dtype=np.float64)).T)))
    rest = np.delete(sims, nearest)
    return sorted([int(sims[nearest])] + [int(s) for s in rng.choice(rest, size=n_points - 1, replace=False)])


def simulation_maps(data_path, sim, split="val"):
    """log10 maps (15, N, N) and (Omega_m, sigma_8) of one simulation of a prepared file."""
    with open_prepared(data_path) as f:
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


def log_field_power(log_maps, convention="paper"):
    """P(k) of the log10 field minus its mean, dex^2 (Mpc/h)^2: (k, P (n, N_k)).

    ``power_spectrum`` takes field / mean - 1; the field ``x - mean(x) + 1`` has mean 1, so
    that is exactly x - mean(x).
    """
    x = np.asarray(log_maps, dtype=np.float64)
    return power_spectrum(x - x.mean(axis=(-2, -1), keepdims=True) + 1.0, box_size=BOX_SIZE, convention=convention)


def point_statistics(log_gen, log_sim):
    """The statistics of one parameter point (the :data:`STAT_COLUMNS`), as a dict.

    log_gen: (m, N, N) generated log10 maps; log_sim: (n >= 4, N, N) simulated log10 maps of
    the same point.
    """
    out = {}
    for name, spectrum in (("chi2", log_power), ("chi2_log", log_field_power)):
        _, pk_sim = spectrum(log_sim)
        _, pk_gen = spectrum(log_gen)
        out[f"{name}_samples"] = float(stats.reduced_chi2(pk_gen, pk_sim).mean())
        out[f"{name}_sims"] = float(stats.loo_chi2(pk_sim).mean())
    out["density_z"] = stats.mean_density_zscore(log_gen, log_sim)
    out["pdf_w1_dex"] = stats.pdf_distance(log_gen, log_sim)[0]
    return out


def validate(emulator, data_path, sims, settings, *, split="val", progress=False):
    """The chi-squared table of one checkpoint (pandas DataFrame, one row per point).

    emulator:   :class:`cosmodiff.emulator.Emulator` of the checkpoint.
    data_path:  prepared file at the checkpoint's resolution.
    sims:       simulation indices of the validation points (see :func:`choose_points`).
    settings:   :class:`cosmodiff.sampling.SamplerSettings`: ``n_samples`` generated maps
                per point (paper: 50) with its sampler (as :meth:`Emulator.sample`); point i
                uses the seed ``settings.seed + i``, so every checkpoint sees the same noise.
    """
    from tqdm.auto import tqdm

    from .sampling import SamplerSettings

    if not isinstance(settings, SamplerSettings):
        raise TypeError(f"settings must be a cosmodiff.sampling.SamplerSettings, got {settings!r}")
    rows = []
    for i, sim in enumerate(tqdm(sims, desc="validation points", disable=not progress)):
        log_sim, (om, s8) = simulation_maps(data_path, sim, split)
        log_gen = emulator.sample(om, s8, settings.n_samples, settings, seed=settings.seed + i, resolution=log_sim.shape[-1])
        rows.append({"point": i, "sim": int(sim), "omega_m": float(om), "sigma_8": float(s8), **point_statistics(log_gen, log_sim)})
    return pd.DataFrame(rows, columns=TABLE_COLUMNS)


def table_means(table):
    """A validation table (:func:`validate`) summed up over its points: the mean of each
    statistic, with the mean |density z| as ``abs_density_z`` in place of the signed one."""
    means = {c: float(table[c].mean()) for c in STAT_COLUMNS if c != "density_z"}
    return {**means, "abs_density_z": float(table["density_z"].abs().mean())}


#: The columns of :func:`sampler_costs`: a sampler setting, its cost and the validation
#: statistics averaged over the points (``abs_density_z``: the mean |density z|).
COST_COLUMNS = ["sampler", "spacing", "evaluations", "seconds_per_map", "chi2_samples", "chi2_sims",
                "chi2_log_samples", "chi2_log_sims", "abs_density_z", "pdf_w1_dex"]


def sampler_costs(emulator, data_path, sims, settings, samplers, *, split="val", progress=False):
    """Fidelity against cost: :func:`validate` once per sampler setting, same points and seeds.

    settings: :class:`cosmodiff.sampling.SamplerSettings` giving everything but the sampler
              (maps per point, seed, batch size, clamp); each entry of ``samplers`` replaces
              its sampler, steps and spacing.
    samplers: (name, steps, spacing) triples, e.g. ("ancestral", 1000, "linear"),
              ("dpm2m", 25, "quadratic"); ancestral takes T steps whatever ``steps`` says.
    Returns a DataFrame with :data:`COST_COLUMNS`, one row per setting, in the given order;
    ``evaluations`` are network evaluations per map, ``seconds_per_map`` the wall time of
    the setting's sampling and statistics divided by the maps it drew.
    """
    import dataclasses
    import time

    rows = []
    for name, steps, spacing in samplers:
        trial = dataclasses.replace(settings, sampler=name, steps=int(steps), spacing=spacing)
        t0 = time.perf_counter()
        table = validate(emulator, data_path, sims, trial, split=split, progress=progress)
        seconds = (time.perf_counter() - t0) / (len(sims) * trial.n_samples)
        rows.append({"sampler": name, "spacing": "-" if name == "ancestral" else spacing,
                     "evaluations": emulator.evaluations(name, steps), "seconds_per_map": seconds, **table_means(table)})
    return pd.DataFrame(rows, columns=COST_COLUMNS)


def select(tables, select_by="chi2"):
    """Pick the checkpoint with the lowest mean, over the validation points, of one statistic.

    tables:    mapping checkpoint path -> (iteration, DataFrame of :func:`validate`).
    select_by: a key of :data:`SELECT_BY`: "chi2" (the paper's), "chi2_log", "pdf_w1",
               "density_z" (the mean |z|), or "last" (the last checkpoint, whatever its statistics).
    Returns (choice dict with ``select_by`` and ``criterion`` (its summary column), summary
    DataFrame with one row per checkpoint, sorted by iteration).
    """
    if select_by not in SELECT_BY:
        raise ValueError(f"unknown select_by {select_by!r}; choose one of {sorted(SELECT_BY)}")
    rows = []
    for path, (iteration, df) in tables.items():
        missing = sorted(set(STAT_COLUMNS) - set(df.columns))
        if missing:
            raise ValueError(f"the validation table of {path} lacks {missing}: rerun validate_checkpoint")
        means = table_means(df)
        abs_z = means.pop("abs_density_z")
        rows.append({"checkpoint": str(path), "iteration": int(iteration), **means,
                     "chi2_samples_median": float(df["chi2_samples"].median()), "abs_density_z": abs_z})
    summary = pd.DataFrame(rows).sort_values("iteration").reset_index(drop=True)
    criterion = SELECT_BY[select_by]
    best = summary.iloc[-1] if select_by == "last" else summary.loc[summary[criterion].idxmin()]
    choice = {k: (v.item() if hasattr(v, "item") else v) for k, v in best.items()}
    choice.update(select_by=select_by, criterion=criterion)
    return choice, summary
