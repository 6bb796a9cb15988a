"""How far a network's likelihood is from the exact one, and where it goes wrong.

Two questions, one module:

* **Does the bound give the likelihood?** :func:`posterior_metrics` turns per-field
  comparisons of the network's posterior with the exact one (``vs_exact_shift_<p>``: the
  mean shift in exact sigmas, ``vs_exact_width_<p>``: the width ratio) and the network's
  own calibration (68/95% coverage, z-scores) into the figures of merit of :data:`TARGETS`,
  each with a pass/fail.
* **Where does it go wrong?** On lognormal data the exact denoiser (the Wiener oracle) is
  known, so on the same field and the same noise the network's bound can be split by
  timestep and by scale against the oracle's:

  - :func:`score_by_timestep`: per-timestep contributions to dU/dtheta and to the
    curvature d^2U/dtheta^2 at theta (central differences with common random numbers). The
    contributions add up to the derivatives of the bound (tested on the oracle, whose bound
    gives the exact score). The network-minus-oracle score of a band of t, times the exact
    posterior sigma, is the shift of the posterior mean (in exact sigmas) that band causes.
  - :func:`excess_by_scale`: the network's excess bound over the oracle's, per timestep and
    per band of |k|. Every bound term depends on the network only through
    ``w_t |x0 - x0_hat|^2`` with ``w_t = coef1_t^2 / (2 var_p(t))``, so by Parseval the excess
    splits exactly over Fourier modes; the oracle's error is the floor (it is the Bayes
    estimate), so the excess is the network's own denoising error, in nats.

  :func:`band_table` sums either over bands of t (and k) for the CSVs and figures.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .cosmology import BOX_SIZE, PRIOR
from .diffusion import crn_noise
from .prepare import normalise

PARAMS = ("omega_m", "sigma_8")
#: Edges of the timestep bands of the tables (0-based t; the last edge is T).
T_EDGES = (0, 1, 3, 10, 30, 100, 300, 1000)
#: Edges of the |k| bands in units of the fundamental mode 2 pi / L (the last one is open).
K_EDGES = (0.5, 2.5, 4.5, 8.5, 16.5, math.inf)

#: The figures of merit of a network's likelihood against the exact one, per parameter, as
#: (name, statistic over fields, allowed range). Shifts and widths are measured against the
#: exact posterior of each field on the same estimator settings; coverage and z against the
#: truth.
TARGETS = (
    ("median_abs_shift", "median |mean shift| / exact sigma", (0.0, 0.3)),
    ("max_abs_shift", "largest |mean shift| / exact sigma", (0.0, 1.5)),
    ("median_width", "median network sigma / exact sigma", (0.8, 1.25)),
    ("coverage68", "truth inside the 68% interval", (0.58, 0.78)),
    ("coverage95", "truth inside the 95% interval", (0.88, 0.99)),
    ("mean_abs_z", "mean |(mean - truth) / sigma|", (0.0, 1.0)),
)


def posterior_metrics(
    rows,               # Per field: dicts with <p>_mean, <p>_std, <p>_lo68/hi68/lo95/hi95, <p>_truth, vs_exact_shift_<p>, vs_exact_width_<p>.
):
    """{<p>_<target>: value, <p>_<target>_pass: bool} for every parameter and target of
    :data:`TARGETS`, plus ``n`` (fields) and ``all_pass``."""
    if not rows:
        raise ValueError("posterior_metrics needs at least one field")
    out = {"n": len(rows)}
    for p in PARAMS:
        shift = np.abs([r[f"vs_exact_shift_{p}"] for r in rows])
        truth = np.array([r[f"{p}_truth"] for r in rows])
        z = (np.array([r[f"{p}_mean"] for r in rows]) - truth) / np.array([r[f"{p}_std"] for r in rows])
        inside = {
            m: np.mean([(r[f"{p}_lo{m}"] <= t <= r[f"{p}_hi{m}"]) for r, t in zip(rows, truth)]) for m in (68, 95)
        }
        values = {
            "median_abs_shift": np.median(shift),
            "max_abs_shift": shift.max(),
            "median_width": np.median([r[f"vs_exact_width_{p}"] for r in rows]),
            "coverage68": inside[68],
            "coverage95": inside[95],
            "mean_abs_z": np.abs(z).mean(),
        }
        for name, _, (lo, hi) in TARGETS:
            out[f"{p}_{name}"] = float(values[name])
            out[f"{p}_{name}_pass"] = bool(lo <= values[name] <= hi)
    out["all_pass"] = all(v for k, v in out.items() if k.endswith("_pass"))
    return out


def emulation_metrics(
    validation,         # A validation table (pandas DataFrame, one row per validation point).
    chi2_factor = 1.3,  # chi2_log of samples may be at most this times the simulations' leave-one-out value.
    max_mean_abs_z = 1.0,  # Largest allowed mean |density z|.
):
    """The emulation targets at one checkpoint: the worst ratio chi2_log_samples /
    chi2_log_sims over validation points, the mean |density_z|, and whether both pass."""
    ratio = float((validation["chi2_log_samples"] / validation["chi2_log_sims"]).max())
    z = float(validation["density_z"].abs().mean())
    return {
        "worst_chi2_log_ratio": ratio,
        "mean_abs_density_z": z,
        "emulation_pass": bool(ratio <= chi2_factor and z <= max_mean_abs_z),
    }


def scan_against_exact(
    model,              # Network (or the Wiener oracle): model(x_t, t, cond).
    diffusion,          # Its GaussianDiffusion.
    normalisation,      # (lo, hi) the model sees as [-1, 1].
    data,               # Prepared .h5 at the model's resolution (test fields: prepare.inference_field).
    exact_paths,        # field_<i>_exact.h5 of fields 0, 1, ... (the posterior rule's exact posteriors).
    settings,           # cosmodiff.inference.InferenceSettings (the workflow config's `inference` section).
    progress = True,    # A progress bar over the fields.
):
    """Scan fields 0..len(exact_paths)-1 exactly as the posterior rule does (same estimator,
    noise seeds and grids) and compare each with its exact posterior: one row per field with
    the GridPosterior summary (truth included), ``vs_exact_shift_<p>``, ``vs_exact_width_<p>``
    and ``seconds``: the input of :func:`posterior_metrics`."""
    import time

    from tqdm.auto import tqdm

    from .inference.grid import GridPosterior, compare, scan_field
    from .inference.potential import Potential
    from .prepare import inference_field

    rows = []
    for i, path in enumerate(tqdm(exact_paths, desc="fields", disable=not progress)):
        field, truth, sim, _ = inference_field(data, i)
        potential = Potential(model, diffusion, field, normalisation, **settings.potential_options(i))
        t0 = time.perf_counter()
        post = scan_field(potential, settings, truth)
        vs = compare(post, GridPosterior.from_hdf5(path)[0])
        rows.append({"field": i, "sim": sim, "seconds": time.perf_counter() - t0, **post.summary(truth=truth),
                     **{f"vs_exact_{k}": v for k, v in vs.items() if k != "kl"}})
    return rows


# --------------------------------------------------------------------------------------------
# where the likelihood goes wrong
# --------------------------------------------------------------------------------------------


def score_by_timestep(
    potential,          # A cosmodiff.inference.Potential (network or oracle) of one field.
    theta,              # The point (Omega_m, sigma_8) at which to differentiate.
    step     = 0.005,   # Central-difference step in both parameters.
):
    """Per-timestep contributions at ``potential.timesteps``: ``grad`` (K, 2), the weighted
    terms' contributions to dU/dtheta, and ``curv`` (K, 2), to d^2U/dtheta^2 (diagonal), by
    central differences of :meth:`Potential.terms` on common random numbers (every theta sees
    the same x_t). Their sums over K are the derivatives of the potential itself."""
    theta = np.asarray(theta, dtype=np.float64).reshape(2)
    h = float(step)
    pts = [theta]
    for i in range(2):
        for s in (1.0, -1.0):
            pts.append(theta + s * h * np.eye(2)[i])
    terms = potential.terms(np.array(pts)) * potential.weights[None, :]  # (5, K)
    grad = np.stack([(terms[1 + 2 * i] - terms[2 + 2 * i]) / (2 * h) for i in range(2)], axis=1)
    curv = np.stack([(terms[1 + 2 * i] - 2 * terms[0] + terms[2 + 2 * i]) / h**2 for i in range(2)], axis=1)
    return {"timesteps": np.asarray(potential.timesteps), "grad": grad, "curv": curv}


def _k_bands(n, box_size):
    """Band index (n, n) of every Fourier mode of an n x n grid by |k| / k_F in K_EDGES
    (the DC mode, below the first edge, gets -1)."""
    k1 = np.fft.fftfreq(n, d=1.0 / n)
    kk = np.hypot(k1[:, None], k1[None, :])
    return np.digitize(kk, K_EDGES) - 1


@torch.no_grad()
def excess_by_scale(
    model,              # The network: model(x_t, t, cond) in the diffusion's parametrisation.
    oracle,             # The exact denoiser (cosmodiff.inference.WienerOracle) of the same diffusion.
    diffusion,          # The GaussianDiffusion of both.
    field_log10,        # One prepared field, log10 (N, N).
    normalisation,      # (lo, hi) of the training maps.
    theta,              # Conditioning (Omega_m, sigma_8), usually the truth.
    timesteps = None,   # Timesteps (default: all 0..T-1).
    noise_seed = 0,     # crn_noise seed: the noise of the bound at each t.
    batch_size = 64,    # Inputs per network call.
    box_size = BOX_SIZE,  # Side of the box, Mpc/h (only for the k of the bands).
):
    """Per timestep and |k| band, the network's bound excess over the oracle's (nats) and
    the oracle's own weighted error (the floor): ``{"timesteps" (K,), "excess" (K, B),
    "oracle" (K, B), "k_edges" (B+1,) in h/Mpc}``; the DC mode is its own first band. Rows
    of ``excess`` add up to vb_terms(network) - vb_terms(oracle) on the same x_t."""
    ts = np.arange(diffusion.T) if timesteps is None else np.asarray(timesteps, dtype=np.int64)
    x0 = torch.from_numpy(normalise(np.asarray(field_log10, np.float64), normalisation))[None, None]
    n = x0.shape[-1]
    band = torch.from_numpy(_k_bands(n, box_size) + 1)  # 0: DC
    nb = len(K_EDGES)
    w = diffusion.posterior_mean_coef1**2 / (2 * diffusion.model_variance)
    from .inference.potential import default_device_dtype

    wdtype = default_device_dtype(model, None, None)[1]  # the network's own dtype (float64 for the oracle)
    excess, floor = np.zeros((len(ts), nb)), np.zeros((len(ts), nb))
    cond = torch.tensor(np.asarray(theta, np.float64).reshape(1, 2))
    for lo in range(0, len(ts), batch_size):
        tb = torch.from_numpy(ts[lo : lo + batch_size])
        noise = torch.stack([crn_noise(noise_seed, int(t), tuple(x0.shape[1:])) for t in tb]).to(torch.float64)
        x0b = x0.expand(len(tb), -1, -1, -1)
        x_t = diffusion.q_sample(x0b, tb, noise)
        c = cond.expand(len(tb), 2)
        _, xn = diffusion.model_predictions(model, x_t.to(wdtype), tb, c.to(wdtype))
        _, xo = diffusion.model_predictions(oracle, x_t, tb, c)
        en = torch.fft.fft2((x0b - xn.to(torch.float64))[:, 0]).abs() ** 2 / n**2
        eo = torch.fft.fft2((x0b - xo)[:, 0]).abs() ** 2 / n**2
        wt = torch.from_numpy(np.asarray(w)[tb.numpy()])[:, None]
        for b in range(nb):
            m = band == b
            excess[lo : lo + len(tb), b] = (wt * (en[:, m].sum(-1, keepdim=True) - eo[:, m].sum(-1, keepdim=True)))[:, 0].numpy()
            floor[lo : lo + len(tb), b] = (wt * eo[:, m].sum(-1, keepdim=True))[:, 0].numpy()
    kf = 2 * np.pi / box_size
    return {"timesteps": ts, "excess": excess, "oracle": floor,
            "k_edges": np.array([0.0, *(kf * e for e in K_EDGES)])}


def diagnose_field(
    model,              # The network: model(x_t, t, cond).
    oracle,             # The Wiener oracle of the same diffusion and normalisation.
    diffusion,          # Their GaussianDiffusion.
    field_log10,        # One prepared lognormal field (N, N).
    normalisation,      # (lo, hi) of the training maps.
    truth,              # (Omega_m, sigma_8) of the field: where the scores are taken.
    exact_potential,    # theta (M, 2) -> exact -log p (M,) (cosmodiff.inference.exact_log10_potential).
    noise_seed = 0,     # Common random numbers of both bounds.
    step     = 0.005,   # Central-difference step.
    batch_size = 64,    # Network inputs per call.
):
    """Both tables of one field: ``score`` rows (t band, parameter: network and oracle
    contributions to dU/dtheta and d^2U/dtheta^2, and the shift of the posterior mean in
    exact sigmas that the band's network-minus-oracle score causes, -delta grad * sigma)
    and ``excess`` rows (t band, k band: the network's excess bound over the oracle's and
    the oracle's weighted error, nats). The exact sigma is 1 / sqrt of the exact curvature."""
    from .inference.potential import Potential

    # the stencil theta +- step stays inside the prior (a truth within step of an edge moves
    # inward by less than step: the scores are of a point next to it)
    lo = np.array([PRIOR[p][0] for p in PARAMS]) + step
    hi = np.array([PRIOR[p][1] for p in PARAMS]) - step
    truth = np.clip(np.asarray(truth, np.float64), lo, hi)
    kw = dict(estimator="exact", noise_seed=noise_seed, batch_size=batch_size)
    net = score_by_timestep(Potential(model, diffusion, field_log10, normalisation, **kw), truth, step)
    orc = score_by_timestep(Potential(oracle, diffusion, field_log10, normalisation, **kw), truth, step)
    t0 = np.asarray(truth, np.float64)
    pts = np.array([t0] + [t0 + s * step * np.eye(2)[i] for i in range(2) for s in (1.0, -1.0)])
    u = exact_potential(pts)
    exact_curv = np.array([(u[1 + 2 * i] - 2 * u[0] + u[2 + 2 * i]) / step**2 for i in range(2)])
    exact_grad = np.array([(u[1 + 2 * i] - u[2 + 2 * i]) / (2 * step) for i in range(2)])
    # the exact sigma from the local curvature; NaN where the exact -log p is not convex there
    # (a truth at a prior edge can sit on a flat or curving-down likelihood)
    sigma = np.where(exact_curv > 0, 1.0 / np.sqrt(np.abs(exact_curv)), np.nan)
    labels, g_net = band_table(net["timesteps"], net["grad"])
    _, g_orc = band_table(orc["timesteps"], orc["grad"])
    _, c_net = band_table(net["timesteps"], net["curv"])
    _, c_orc = band_table(orc["timesteps"], orc["curv"])
    score = [
        {"t_band": lab, "param": p, "grad_network": g_net[b, i], "grad_oracle": g_orc[b, i],
         "curv_network": c_net[b, i], "curv_oracle": c_orc[b, i], "exact_grad": exact_grad[i],
         "exact_curv": exact_curv[i], "exact_sigma": sigma[i],
         "shift_sigma": -(g_net[b, i] - g_orc[b, i]) * sigma[i]}
        for b, lab in enumerate(labels) for i, p in enumerate(PARAMS)
    ]
    ex = excess_by_scale(model, oracle, diffusion, field_log10, normalisation, truth,
                         noise_seed=noise_seed, batch_size=batch_size)
    _, e_net = band_table(ex["timesteps"], ex["excess"])
    _, e_orc = band_table(ex["timesteps"], ex["oracle"])
    kb = ["DC"] + [f"{a:.2f}-{b:.2f}" for a, b in zip(ex["k_edges"][1:-1], ex["k_edges"][2:])]
    excess = [
        {"t_band": lab, "k_band": kb[j], "excess_nats": e_net[b, j], "oracle_nats": e_orc[b, j]}
        for b, lab in enumerate(labels) for j in range(len(kb))
    ]
    return score, excess


def diagnose_fields(
    emulator,           # The network as a cosmodiff.emulator.Emulator (model, diffusion, normalisation).
    data_path,          # Prepared file at the network's resolution (its test split).
    exact,              # {native_resolution, method}: how the prepared fields were made from the native ones.
    n_fields,           # The first test fields.
    noise_seed = 0,     # Common random numbers of field i: noise_seed + i.
    batch_size = 64,    # Network inputs per call.
    progress = False,   # Show a progress bar over the fields.
):
    """:func:`diagnose_field` for the first ``n_fields`` test fields against the Wiener
    oracle of the same diffusion and normalisation: (score, excess) DataFrames with the
    columns ``field`` and ``sim`` in front."""
    import pandas as pd
    from tqdm.auto import tqdm

    from .inference.oracle import WienerOracle
    from .inference.potential import exact_log10_potential
    from .prepare import inference_field

    oracle = WienerOracle(emulator.diffusion, emulator.normalisation, native_resolution=exact["native_resolution"],
                          method=exact["method"])
    scores, excess = [], []
    for i in tqdm(range(n_fields), desc="fields", disable=not progress):
        field, truth, sim, _ = inference_field(data_path, i)
        sc, exc = diagnose_field(emulator.model, oracle, emulator.diffusion, field, emulator.normalisation, truth,
                                 exact_log10_potential(field, exact["native_resolution"], exact["method"]),
                                 noise_seed=noise_seed + i, batch_size=batch_size)
        scores += [{"field": i, "sim": sim, **r} for r in sc]
        excess += [{"field": i, "sim": sim, **r} for r in exc]
    return pd.DataFrame(scores), pd.DataFrame(excess)


def band_table(
    timesteps,          # (K,) the timesteps of the rows of ``values``.
    values,             # (K, ...) per-timestep values.
    edges = T_EDGES,    # Band edges in t.
):
    """(labels, sums): per band [e_i, e_{i+1}) of t the sum of ``values`` over its
    timesteps (bands with no timestep give 0)."""
    timesteps = np.asarray(timesteps)
    values = np.asarray(values, dtype=np.float64)
    labels, sums = [], []
    for a, b in zip(edges[:-1], edges[1:]):
        m = (timesteps >= a) & (timesteps < b)
        labels.append(f"{a}-{b - 1}" if b - a > 1 else f"{a}")
        sums.append(values[m].sum(axis=0))
    return labels, np.array(sums)


__all__ = [
    "K_EDGES",
    "PARAMS",
    "TARGETS",
    "T_EDGES",
    "band_table",
    "diagnose_field",
    "diagnose_fields",
    "emulation_metrics",
    "excess_by_scale",
    "posterior_metrics",
    "scan_against_exact",
    "score_by_timestep",
]
