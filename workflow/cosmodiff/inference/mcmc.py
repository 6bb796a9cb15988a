"""Gradient-based posterior sampling: NUTS (pyro-ppl) on exp(-U(theta)) under the flat box
prior of the grid scans.

:func:`nuts` draws (Omega_m, sigma_8) from exp(-U(theta)) with pyro's No-U-Turn sampler on a
potential with a differentiable ``torch_call`` (:class:`~cosmodiff.inference.Potential` of a
network, or of :class:`~cosmodiff.inference.TabulatedOracle` for tests). The box prior is
handled by sampling z = logit((theta - lo) / (hi - lo)) per parameter: pyro's potential
energy is U(theta(z)) - log|dtheta/dz|, with log|dtheta/dz| = sum log((hi - lo) s (1 - s)),
s = sigmoid(z). Step size (dual averaging) and a dense mass matrix are adapted during warmup.

Chains run one after another in this process (pyro's parallel chains would fork the network
and lose the evaluation counters). The result (:class:`NUTSResult`) holds the physical
samples, mean and covariance, effective sample sizes and split R-hat
(:mod:`pyro.ops.stats`, over all chains; with one chain R-hat compares its two halves),
divergences, acceptance, potential and network evaluations (forward, and backward in
``gradient_evaluations``), seconds, and network evaluations per effective sample.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from pyro.infer import MCMC, NUTS
from pyro.ops.stats import effective_sample_size, split_gelman_rubin

from ..cosmology import PRIOR
from .grid import PARAMS, grid_posterior


@dataclass
class NUTSResult:
    """The chains of :func:`nuts` and what they cost.

    samples:              (n_chains, n_samples, 2) physical (Omega_m, sigma_8).
    mean, std, cov:       (2,), (2,), (2, 2) over all chains.
    ess, r_hat:           (2,) effective sample size (all chains) and split R-hat per parameter.
    divergences:          divergent transitions after warmup, all chains.
    acceptance:           per chain, the fraction of post-warmup iterations that moved (pyro's "acceptance rate").
    step_size:            adapted step size (unconstrained space), per chain.
    potential_calls:      calls of U by pyro (initial grid excluded); gradient_calls of them with a gradient.
    network_evaluations:  network (denoiser) evaluations, forward, including the initial grid's.
    gradient_evaluations: of them, those also backpropagated.
    init_evaluations:     network evaluations of the coarse grid that chose the start (0 if given).
    seconds:              wall-clock time, initial grid included.
    meta:                 the settings.
    """

    samples: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    cov: np.ndarray
    ess: np.ndarray
    r_hat: np.ndarray
    divergences: int
    acceptance: list
    step_size: list
    potential_calls: int
    gradient_calls: int
    network_evaluations: int
    gradient_evaluations: int
    init_evaluations: int
    seconds: float
    meta: dict = field(default_factory=dict)

    @property
    def evaluations_per_ess(self):
        """Network evaluations (forward) per effective sample of the worse parameter."""
        return self.network_evaluations / float(self.ess.min())

    def summary(self):
        """One tidy row (dict of floats): per parameter mean, std, ESS and R-hat; the cost."""
        row = {}
        for k, name in enumerate(PARAMS):
            row.update({f"{name}_mean": float(self.mean[k]), f"{name}_std": float(self.std[k]),
                        f"{name}_ess": float(self.ess[k]), f"{name}_r_hat": float(self.r_hat[k])})
        row["corr"] = float(self.cov[0, 1] / (self.std[0] * self.std[1]))
        row.update(n_chains=int(self.samples.shape[0]), n_samples=int(self.samples.shape[1]),
                   divergences=int(self.divergences), acceptance=float(np.mean(self.acceptance)),
                   potential_calls=int(self.potential_calls), gradient_calls=int(self.gradient_calls),
                   evaluations=int(self.network_evaluations), gradient_evaluations=int(self.gradient_evaluations),
                   seconds=float(self.seconds), evaluations_per_ess=float(self.evaluations_per_ess))
        return row


    def interval_summary(
        self,
        truth,              # True (Omega_m, sigma_8) of the field.
    ):
        """Per parameter the central 68% / 95% intervals of the pooled samples and the
        z-score of the truth, in the grid scans' column names."""
        flat = self.samples.reshape(-1, 2)
        row = {}
        for k, name in enumerate(PARAMS):
            lo68, hi68, lo95, hi95 = np.quantile(flat[:, k], [0.16, 0.84, 0.025, 0.975])
            row.update({f"{name}_lo68": float(lo68), f"{name}_hi68": float(hi68), f"{name}_lo95": float(lo95),
                        f"{name}_hi95": float(hi95), f"{name}_truth": float(truth[k]),
                        f"{name}_z": float((self.mean[k] - truth[k]) / self.std[k])})
        return row


class _Energy:
    """pyro's potential energy in the unconstrained space, U(theta(z)) - log|dtheta/dz|,
    counting its calls (and those with a gradient)."""

    def __init__(self, potential, lo, hi):
        self.potential, self.lo, self.hi = potential, lo, hi
        self.calls = self.gradient_calls = 0

    def theta(self, z):
        return self.lo + (self.hi - self.lo) * torch.sigmoid(z)

    def __call__(self, params):
        z = params["z"]
        self.calls += 1
        self.gradient_calls += int(z.requires_grad)
        log_jac = (torch.log(self.hi - self.lo) + F.logsigmoid(z) + F.logsigmoid(-z)).sum()
        return self.potential.torch_call(self.theta(z)).reshape(()) - log_jac


def _initial(potential, initial, n_chains, n_coarse, prior, seed):
    """Starting points (n_chains, 2) physical, and the network evaluations spent finding them:
    the first chain at a coarse grid's mode, the others at points of that grid drawn from its
    posterior and moved uniformly within their cells (seeded by ``seed``), so that chains
    from different starts make R-hat a test of convergence."""
    if initial is not None:
        return np.broadcast_to(np.asarray(initial, dtype=np.float64), (n_chains, 2)).copy(), 0
    axes = [np.linspace(*prior[p], int(n_coarse)) for p in PARAMS]
    post = grid_posterior(potential, *axes)
    rng = np.random.default_rng(int(seed))
    nodes = np.unravel_index(rng.choice(post.prob.size, size=n_chains - 1, p=post.prob.ravel()), post.prob.shape)
    cells = [(a[1] - a[0]) * rng.uniform(-0.5, 0.5, n_chains - 1) for a in axes]
    others = np.column_stack([axes[k][nodes[k]] + cells[k] for k in range(2)]).reshape(-1, 2)
    return np.vstack([post.mode[None], others]), int(post.evaluations)


def _to_z(theta, lo, hi):
    """logit of the position in the box, kept 1% of the width away from its edges (a coarse
    grid's mode can sit on one)."""
    p = ((torch.from_numpy(theta) - lo) / (hi - lo)).clamp(0.01, 0.99)
    return torch.log(p) - torch.log1p(-p)


def nuts(
    potential,          # Potential, or anything with a differentiable torch_call(theta) -> U and a numpy __call__ (initial grid).
    n_warmup  = 300,    # Warmup iterations per chain (step size and mass matrix adaptation), discarded.
    n_samples = 500,    # Kept iterations per chain.
    n_chains  = 1,      # Chains, run one after another in this process.
    seed      = 0,      # Chain c draws from torch seed ``seed + c``; the global RNG state is restored afterwards.
    initial   = None,   # Start (Omega_m, sigma_8) or one per chain (n_chains, 2); None: a coarse grid's mode (chain 0), its posterior (others).
    n_coarse  = 11,     # initial=None: points per axis of that grid (n_coarse^2 potential evaluations).
    max_tree_depth = 8, # NUTS: at most 2**max_tree_depth leapfrog steps per iteration.
    target_accept  = 0.8,  # Step size adaptation: target mean acceptance probability.
    step_size = 0.1,    # Initial leapfrog step in the unconstrained space (adapted if adapt_step_size).
    adapt_step_size = True,  # Dual-averaging adaptation of the step size during warmup.
    full_mass = True,   # Adapt a dense 2 x 2 mass matrix (Omega_m and sigma_8 are correlated); False: diagonal.
    prior     = PRIOR,  # {"omega_m": (lo, hi), "sigma_8": (lo, hi)}: the flat box prior.
    progress  = False,  # pyro's progress bar.
):
    """NUTS chains drawing theta from exp(-U(theta)) inside the box ``prior``: a
    :class:`NUTSResult` (physical samples, moments, ESS, R-hat, costs)."""
    t0 = time.perf_counter()
    lo = torch.tensor([prior[p][0] for p in PARAMS], dtype=torch.float64)
    hi = torch.tensor([prior[p][1] for p in PARAMS], dtype=torch.float64)
    ev0 = getattr(potential, "evaluations", 0)
    gev0 = getattr(potential, "gradient_evaluations", 0)
    starts, init_ev = _initial(potential, initial, int(n_chains), n_coarse, prior, seed)
    energy = _Energy(potential, lo, hi)
    chains, divergences, acceptance, steps = [], 0, [], []
    for c in range(int(n_chains)):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed) + c)
            kernel = NUTS(potential_fn=energy, step_size=float(step_size), adapt_step_size=bool(adapt_step_size),
                          adapt_mass_matrix=True, full_mass=bool(full_mass), target_accept_prob=float(target_accept),
                          max_tree_depth=int(max_tree_depth))
            mcmc = MCMC(kernel, num_samples=int(n_samples), warmup_steps=int(n_warmup),
                        initial_params={"z": _to_z(starts[c], lo, hi)}, disable_progbar=not progress)
            mcmc.run()
        diag = mcmc.diagnostics()
        chains.append(energy.theta(mcmc.get_samples()["z"].detach()))
        divergences += len(diag["divergences"]["chain 0"])
        acceptance.append(float(diag["acceptance rate"]["chain 0"]))
        steps.append(float(kernel.step_size))
    samples = torch.stack(chains)  # (n_chains, n_samples, 2)
    flat = samples.reshape(-1, 2).numpy()
    cov = np.cov(flat.T)
    meta = {"n_warmup": int(n_warmup), "n_samples": int(n_samples), "n_chains": int(n_chains), "seed": int(seed),
            "initial": starts.tolist(), "max_tree_depth": int(max_tree_depth), "target_accept": float(target_accept),
            "full_mass": bool(full_mass), "prior": {p: list(prior[p]) for p in PARAMS}}
    return NUTSResult(
        samples=samples.numpy(), mean=flat.mean(axis=0), std=np.sqrt(np.diag(cov)), cov=cov,
        ess=effective_sample_size(samples, chain_dim=0, sample_dim=1).numpy(),
        r_hat=split_gelman_rubin(samples, chain_dim=0, sample_dim=1).numpy(),
        divergences=divergences, acceptance=acceptance, step_size=steps,
        potential_calls=energy.calls, gradient_calls=energy.gradient_calls,
        network_evaluations=int(getattr(potential, "evaluations", 0) - ev0),
        gradient_evaluations=int(getattr(potential, "gradient_evaluations", 0) - gev0),
        init_evaluations=init_ev, seconds=time.perf_counter() - t0, meta=meta,
    )


__all__ = ["NUTSResult", "nuts"]
