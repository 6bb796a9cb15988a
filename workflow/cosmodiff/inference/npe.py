"""The neural-posterior baseline: NPE (``sbi``, a normalising flow) on summary statistics.

Mudur et al. ask whether the field-level posterior of the diffusion bound can compete with
dedicated methods; their code has an NPE on P(k). :class:`NPEBaseline` trains one with
``sbi`` (pinned: the ``baselines`` extra) on the training split's summaries and draws the
posterior of any field from them:

* :func:`summaries`: the power spectrum of the log10 field (log of each bin of
  :func:`cosmodiff.validation.log_field_power`) and quantiles of its pixel PDF (the one-point
  statistics carry the mean density, which P(k) of a contrast cannot see). For the lognormal
  synthetic maps the log field is Gaussian and these are close to sufficient: a calibrated NPE
  should approach the exact posterior's width from above, and only a field-level method can
  do better on maps that carry more than P(k).
* :meth:`NPEBaseline.fit`: ``sbi.inference.NPE`` (a neural spline flow) under the box
  prior, with ``sbi``'s own z-scoring of the summaries and early stopping on a validation
  fraction.
* :meth:`NPEBaseline.summary`: posterior mean, std, 68% / 95% intervals and z of the truth, in
  the columns of the grid scans (:meth:`cosmodiff.inference.grid.GridPosterior.summary`).
* :meth:`NPEBaseline.calibration`: ``sbi``'s simulation-based calibration
  (:func:`sbi.diagnostics.run_sbc`, ranks of the truth among posterior draws) over held-out
  fields: the empirical coverage of central 68% / 95% intervals and the KS p-value of the ranks.
"""

from __future__ import annotations

import numpy as np
import torch

from ..cosmology import PRIOR
from ..validation import log_field_power
from .grid import PARAMS

#: Pixel-PDF quantiles of the log10 field used as summaries.
QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


def summaries(
    log10_maps,         # (n, N, N) or (N, N) log10 surface densities (prepared maps).
):
    """(n, N/2 + len(QUANTILES)) float32: log P(k) of the log10 field minus its mean, then
    the quantiles of its pixel values."""
    x = np.asarray(log10_maps, dtype=np.float64)
    x = x[None] if x.ndim == 2 else x
    _, pk = log_field_power(x)
    if np.any(pk <= 0) or not np.all(np.isfinite(pk)):
        raise ValueError("a map has a zero or non-finite power-spectrum bin (a constant map?)")
    q = np.quantile(x.reshape(len(x), -1), QUANTILES, axis=1).T
    return np.concatenate([np.log(pk), q], axis=1).astype(np.float32)


def box_prior(prior=PRIOR):
    """``sbi``'s uniform prior on (Omega_m, sigma_8) over the box."""
    from sbi.utils import BoxUniform

    lo = torch.tensor([prior[p][0] for p in PARAMS], dtype=torch.float32)
    hi = torch.tensor([prior[p][1] for p in PARAMS], dtype=torch.float32)
    return BoxUniform(low=lo, high=hi)


class _NoTracker:
    """sbi's training tracker, doing nothing: its default writes TensorBoard logs into
    ./sbi-logs of whatever folder the process runs in."""

    log_dir = None

    def log_metric(self, *args, **kwargs):
        pass

    def log_metrics(self, *args, **kwargs):
        pass

    def log_params(self, *args, **kwargs):
        pass

    def add_figure(self, *args, **kwargs):
        pass

    def flush(self):
        pass


class NPEBaseline:
    """An NPE posterior q(theta | s(x)) trained on (theta, summaries) pairs.

    Deterministic for a given seed (torch's global generator is seeded in :meth:`fit` and in
    every draw)."""

    def __init__(
        self,
        density_estimator = "nsf",  # sbi's flow: "nsf" (neural spline flow; better calibrated here than "maf") | "maf" | "mdn".
        prior = PRIOR,              # {"omega_m": (lo, hi), "sigma_8": (lo, hi)}: the box prior.
        seed = 0,                   # Seed of training and of every draw.
    ):
        self.density_estimator = density_estimator
        self.prior = prior
        self.seed = int(seed)
        self.posterior = None
        self.epochs = 0

    def fit(
        self,
        theta,              # (n, 2) physical (Omega_m, sigma_8) of the training maps.
        x,                  # (n, d) their summaries (:func:`summaries`).
        max_epochs = 500,   # sbi's max_num_epochs (early stopping usually ends it sooner).
        batch_size = 128,   # sbi's training_batch_size.
        validation_fraction = 0.1,  # Held out for early stopping.
        progress = False,   # sbi's progress output.
    ):
        """Train the flow; returns self."""
        from sbi.inference import NPE

        theta = torch.as_tensor(np.asarray(theta, dtype=np.float32))
        x = torch.as_tensor(np.asarray(x, dtype=np.float32))
        if theta.ndim != 2 or theta.shape[1] != 2 or len(theta) != len(x):
            raise ValueError(f"need theta (n, 2) and summaries (n, d) of the same n, got {tuple(theta.shape)} and "
                             f"{tuple(x.shape)}")
        torch.manual_seed(self.seed)
        trainer = NPE(prior=box_prior(self.prior), density_estimator=self.density_estimator, show_progress_bars=progress,
                      tracker=_NoTracker())
        estimator = trainer.append_simulations(theta, x).train(
            max_num_epochs=int(max_epochs), training_batch_size=int(batch_size),
            validation_fraction=float(validation_fraction), show_train_summary=False)
        self.epochs = int(trainer.summary["epochs_trained"][-1])
        self.posterior = trainer.build_posterior(estimator)
        return self

    def sample(
        self,
        x,                  # (d,) summaries of one field.
        n = 2000,           # Posterior draws.
    ):
        """(n, 2) posterior draws for one field."""
        if self.posterior is None:
            raise ValueError("fit the NPE first")
        torch.manual_seed(self.seed)
        xo = torch.as_tensor(np.asarray(x, dtype=np.float32)).reshape(1, -1)
        return self.posterior.sample((int(n),), x=xo, show_progress_bars=False).numpy().astype(np.float64)

    def summary(
        self,
        x,                  # (d,) summaries of one field.
        truth = None,       # (Omega_m, sigma_8) of the field, for z-scores.
        n = 2000,           # Posterior draws.
    ):
        """Posterior mean, std, central 68% / 95% intervals (and z of the truth) per
        parameter, in the grid scans' column names."""
        draws = self.sample(x, n)
        row = {}
        for k, name in enumerate(PARAMS):
            d = draws[:, k]
            lo68, hi68, lo95, hi95 = np.quantile(d, [0.16, 0.84, 0.025, 0.975])
            row.update({f"{name}_mean": d.mean(), f"{name}_std": d.std(ddof=1), f"{name}_lo68": lo68,
                        f"{name}_hi68": hi68, f"{name}_lo95": lo95, f"{name}_hi95": hi95})
            if truth is not None:
                row[f"{name}_z"] = (d.mean() - truth[k]) / d.std(ddof=1)
        return {k: float(v) for k, v in row.items()}

    def calibration(
        self,
        theta,              # (m, 2) truths of held-out fields.
        x,                  # (m, d) their summaries.
        n = 500,            # Posterior draws per field.
    ):
        """sbi's SBC over held-out fields: per parameter the coverage of the central 68% and
        95% intervals (from the ranks of the truth) and the KS p-value of rank uniformity."""
        from scipy.stats import kstest
        from sbi.diagnostics import run_sbc

        torch.manual_seed(self.seed)
        ranks, _ = run_sbc(torch.as_tensor(np.asarray(theta, dtype=np.float32)),
                           torch.as_tensor(np.asarray(x, dtype=np.float32)), self.posterior,
                           num_posterior_samples=int(n), show_progress_bar=False)
        u = ranks.numpy() / float(n)  # the truth's quantile in its posterior
        out = {"n_fields": int(len(u))}
        for k, name in enumerate(PARAMS):
            out[f"{name}_coverage68"] = float(np.mean(np.abs(u[:, k] - 0.5) < 0.34))
            out[f"{name}_coverage95"] = float(np.mean(np.abs(u[:, k] - 0.5) < 0.475))
            out[f"{name}_ks_pvalue"] = float(kstest(u[:, k], "uniform").pvalue)
        return out


__all__ = ["NPEBaseline", "QUANTILES", "box_prior", "summaries"]
