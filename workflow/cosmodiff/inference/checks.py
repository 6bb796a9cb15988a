"""Is the field one the model could have made? A model-misspecification check on the bound.

A posterior from the bound is only as good as the model: a field of other physics, with
noise the training maps did not have, in the wrong units or from parameters outside the
prior still gets a posterior, often a narrow and confident one. What gives it away is the
value of the potential itself. At the posterior mode theta_hat, U(theta_hat | x_o) per pixel
of a field the model describes is typical of fields drawn from the model at theta_hat; a
shifted field is far less likely under every theta, and its U per pixel sits far above (or,
for a field smoother than the model's, below) theirs.

:func:`misspecification` compares the observed U per pixel with that of reference fields
(drawn from the model at theta_hat: :meth:`cosmodiff.emulator.Emulator.sample`, or from the
generator in tests), each evaluated at theta_hat with its own potential of the same
estimator settings, and flags a z-score beyond ``threshold``. The reference fields are
evaluated at theta_hat, the observed field at its own best fit; that favours the observed
field by about one nat per parameter, nothing against the spread of U (about
N / sqrt(2) nats for an N x N Gaussian field).

``python -m cosmodiff infer`` runs it after the scan (``--check-samples``) and prints a
warning when the field is flagged.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DEFAULT_THRESHOLD = 5.0


@dataclass(frozen=True)
class MisspecificationCheck:
    """Observed U per pixel at theta_hat against the reference fields' (nats per pixel).

    observed:   U(theta_hat | x_o) / N^2.
    reference:  (K,) U(theta_hat | x_k) / N^2 of the reference fields.
    theta:      theta_hat, (Omega_m, sigma_8).
    threshold:  |z| above which the field is flagged.
    """

    observed: float
    reference: np.ndarray
    theta: tuple
    threshold: float = DEFAULT_THRESHOLD

    @property
    def z(self):
        """(observed - mean(reference)) / std(reference), the std with one degree of freedom
        removed (K >= 2 references)."""
        return float((self.observed - self.reference.mean()) / self.reference.std(ddof=1))

    @property
    def flagged(self):
        return bool(abs(self.z) > self.threshold)

    def message(self):
        """A one-line verdict: the numbers, and what a flagged field means."""
        ref = self.reference
        head = (f"U per pixel at the posterior mode (Omega_m, sigma_8) = ({self.theta[0]:.3f}, {self.theta[1]:.3f}) is "
                f"{self.observed:.4f} nats, against {ref.mean():.4f} +- {ref.std(ddof=1):.4f} for {ref.size} fields "
                f"drawn from the model there (z = {self.z:+.1f})")
        if not self.flagged:
            return head + ": the field is typical of the model"
        return (head + f": |z| > {self.threshold:g}, the model does not describe this field (other physics or "
                "parameters outside the prior, added noise, other units or resolution) and its posterior cannot be "
                "trusted")

    def to_dict(self):
        return {"observed": self.observed, "reference_mean": float(self.reference.mean()),
                "reference_std": float(self.reference.std(ddof=1)), "n_reference": int(self.reference.size),
                "z": self.z, "flagged": self.flagged, "threshold": self.threshold,
                "omega_m": float(self.theta[0]), "sigma_8": float(self.theta[1])}


def misspecification(
    make_potential,     # field (N, N) log10 -> a potential U(theta) (M, 2) -> (M,) of that field (same estimator settings for all).
    theta,              # theta_hat, the observed field's posterior mode (Omega_m, sigma_8).
    observed,           # The observed log10 field (N, N).
    references,         # Reference log10 fields (K, N, N), K >= 2, drawn from the model at theta_hat.
    threshold = DEFAULT_THRESHOLD,  # |z| above which the field is flagged.
    observed_u = None,  # U(theta_hat | observed) if already known (the scan's value at its mode); None: evaluated.
):
    """The :class:`MisspecificationCheck` of ``observed`` at ``theta``."""
    references = np.asarray(references, dtype=np.float64)
    observed = np.asarray(observed, dtype=np.float64)
    if references.ndim != 3 or references.shape[0] < 2 or references.shape[1:] != observed.shape:
        raise ValueError(f"references must be (K >= 2, N, N) like the observed field {observed.shape}, "
                         f"got {references.shape}")
    point = np.asarray(theta, dtype=np.float64).reshape(1, 2)
    pixels = observed.size
    if observed_u is None:
        observed_u = float(make_potential(observed)(point)[0])
    ref = np.array([float(make_potential(x)(point)[0]) for x in references]) / pixels
    return MisspecificationCheck(observed_u / pixels, ref, tuple(float(v) for v in point[0]), float(threshold))


def check_posterior(
    emulator,           # The cosmodiff.emulator.Emulator whose bound was scanned.
    field,              # The observed log10 field (N, N).
    settings,           # Its InferenceSettings (the reference fields are scored with the same estimator).
    post,               # The field's GridPosterior: its mode is theta_hat, its smallest U the observed U.
    n_samples = 8,      # Reference fields drawn from the model at the mode (>= 2).
    threshold = DEFAULT_THRESHOLD,  # |z| above which the field is flagged.
    seed      = 0,      # Seed of the reference fields' sampler.
    batch_size = 32,    # Maps per sampler call.
    field_index = 0,    # The field's index (its noise seed is settings.noise_seed + field_index).
):
    """:func:`misspecification` of a scanned field: ``n_samples`` fields drawn from the model
    at the posterior mode (DPM-Solver++(2M), 25 quadratic steps, unclamped), each scored there
    with the field's estimator settings; the observed U is the scan's smallest (under the
    flat prior the grid's mode)."""
    from ..sampling import SamplerSettings
    from .potential import Potential

    mode = tuple(float(v) for v in post.mode)
    sampler = SamplerSettings(sampler="dpm2m", steps=25, spacing="quadratic", clip=False, batch_size=int(batch_size))
    references = emulator.sample(*mode, int(n_samples), sampler, seed=int(seed))
    options = settings.potential_options(field_index)
    return misspecification(lambda x: Potential.from_emulator(emulator, x, **options), mode, field, references,
                            threshold=threshold, observed_u=float(post.potential.min()))


__all__ = ["DEFAULT_THRESHOLD", "MisspecificationCheck", "check_posterior", "misspecification"]
