"""Typed settings of inference: the workflow config's section ``inference``, validated once.

:class:`InferenceSettings` is built from the section (``InferenceSettings.from_dict(json.loads(...))``
in the scripts, which get it as one JSON argument) and hands out the keyword arguments of each
library call: :meth:`~InferenceSettings.potential_options` for
:class:`cosmodiff.inference.Potential`, :meth:`~InferenceSettings.coarse_to_fine_options` for
:func:`cosmodiff.inference.coarse_to_fine`, and :func:`cosmodiff.inference.scan_field` reads
the scan settings itself. This is the one place that knows which option goes where.

Kept free of torch (like :mod:`cosmodiff.layout`): the rules read it while Snakemake parses
the workflow.
"""

from __future__ import annotations

import numbers
from dataclasses import asdict, dataclass, replace

from ..config import settings_from
from .estimators import ESTIMATORS, default_draws, draws

#: The grid scans of one field (:func:`cosmodiff.inference.scan_field`).
SCANS = ("coarse_to_fine", "local", "around_truth")
#: The cheap estimator of the local scan's coarse grid (30 evaluations per theta): it only
#: places the fine grid.
COARSE_ESTIMATOR = {"t_exact": 10, "n_strata": 20, "n_noise": 1}
STAGES = ("pretrain", "finetune")
SPLITS = ("test", "val")
WEIGHTS = ("ema", "raw")


@dataclass(frozen=True)
class InferenceSettings:
    """Settings of the posterior scans (config: inference). Defaults are the library's
    (those of :class:`~cosmodiff.inference.Potential`, :func:`~cosmodiff.inference.coarse_to_fine`
    and :func:`~cosmodiff.inference.grid_around`), so a partial section keeps them.

    Which checkpoint and fields (read by the rules and the posterior script):

    stage:        "pretrain" or "finetune": whose selected checkpoint.
    split:        "test" (fields of the test simulations) or "val" (the authors').
    weights:      "ema" or "raw" weights of the checkpoint.
    n_fields:     fields of the split, one posterior job each (None: not a workflow run).

    The estimator of U (:meth:`estimator_options`):

    estimator:    "full" (unbiased stratified estimate of the whole bound), "truncated"
                  (the authors' t <= t_max) or "exact" (all T timesteps).
    t_max:        truncated: last timestep summed (the authors' 10).
    t_exact:      full: timesteps 0..t_exact-1 summed exactly.
    n_strata:     full: strata of [t_exact, T), one sampled t each.
    n_noise:      noise draws per timestep: an int, {t_end: draws}, or None for the library
                  default (:data:`~cosmodiff.inference.FULL_DRAWS` for "full", 1 otherwise).
    noise_seed:   common random numbers; test field i uses noise_seed + i.

    The grid scan (:func:`~cosmodiff.inference.scan_field`):

    scan:         "coarse_to_fine" (the whole prior, then fine grids), "local" (a cheap
                  coarse grid, then n_fine^2 well-estimated points splined: the cheap
                  posterior) or "around_truth" (the authors': truth +- half_width).
    n_coarse:     coarse_to_fine, local: points per axis of the coarse grid.
    n_fine:       coarse_to_fine, local: points per axis of each fine grid.
    max_refine:   coarse_to_fine: fine grids at most.
    n_sigma:      local: the fine grid spans the coarse mean +- n_sigma coarse std.
    n_interp:     local: points per axis of the splined posterior grid.
    coarse_refine: local: narrower grids of the cheap estimator after its coarse grid (each
                  n_coarse^2 points; for posteriors narrower than a coarse cell).
    coarse_estimator: local: estimator keywords of the coarse grid (t_exact, n_strata, n_noise)
                  replacing the section's; None: :data:`COARSE_ESTIMATOR`.
    half_width:   around_truth: half width of the window (the authors' 0.1).
    n_grid:       around_truth: points per axis (the authors' 100).

    batch_size:   network inputs per call.
    """

    stage: str = "pretrain"
    split: str = "test"
    weights: str = "ema"
    n_fields: int | None = None
    estimator: str = "full"
    t_max: int = 10
    t_exact: int = 20
    n_strata: int = 80
    n_noise: int | dict | None = None
    noise_seed: int = 0
    scan: str = "coarse_to_fine"
    n_coarse: int = 11
    n_fine: int = 21
    max_refine: int = 2
    n_sigma: float = 3.5
    n_interp: int = 41
    coarse_refine: int = 0
    coarse_estimator: dict | None = None
    half_width: float = 0.1
    n_grid: int = 100
    batch_size: int = 256

    # ---- construction and validation

    @classmethod
    def from_dict(
        cls,
        section,            # The config section `inference`, or part of it (the rest keeps the defaults).
    ):
        """The settings of a config section (e.g. ``json.loads`` of a rule's ``--settings``);
        an unknown key or a bad value is a ValueError naming it."""
        return settings_from(cls, section, "inference")

    def to_dict(self):
        """The settings as a plain dict (the section's keys)."""
        return asdict(self)

    def __post_init__(self):
        for name, allowed in (("stage", STAGES), ("split", SPLITS), ("weights", WEIGHTS),
                              ("estimator", ESTIMATORS), ("scan", SCANS)):
            value = getattr(self, name)
            if value not in allowed:
                raise ValueError(f"inference setting '{name}': {value!r} is not allowed; expected one of {allowed}")
        minimum = {"t_max": 0, "t_exact": 0, "n_strata": 1, "n_coarse": 2, "n_fine": 2, "max_refine": 0, "n_grid": 2,
                   "batch_size": 1, "n_interp": 2,
                   "coarse_refine": 0}
        for name, lo in minimum.items():
            _check_int(name, getattr(self, name), lo)
        _check_int("noise_seed", self.noise_seed, None)
        if self.n_fields is not None:
            _check_int("n_fields", self.n_fields, 0)
        for name in ("half_width", "n_sigma"):
            value = getattr(self, name)
            if not _is_number(value) or not value > 0:
                raise ValueError(f"inference setting '{name}': {value!r} is not allowed; expected a number > 0")
        if self.scan == "local" and self.n_fine < 4:
            raise ValueError(f"inference setting 'n_fine': {self.n_fine!r} is not allowed with scan 'local'; expected an "
                             "integer >= 4 (a bicubic spline through the fine grid)")
        if self.coarse_estimator is not None:
            unknown = set(self.coarse_estimator) - set(COARSE_ESTIMATOR)
            if unknown:
                raise ValueError(f"inference setting 'coarse_estimator': unknown key(s) {sorted(unknown)}; expected "
                                 f"some of {sorted(COARSE_ESTIMATOR)}")
        if isinstance(self.n_noise, dict):
            for t_end, n in self.n_noise.items():
                _check_int(f"n_noise[{t_end!r}]", n, 1)
        elif self.n_noise is not None:
            _check_int("n_noise", self.n_noise, 1)

    # ---- keywords of the library calls

    def noise_seed_of(
        self,
        field,              # Test field index.
    ):
        """The noise seed of test field ``field``: noise_seed + field."""
        return int(self.noise_seed) + int(field)

    def estimator_options(
        self,
        field = 0,          # Test field index: its noise seed is noise_seed + field.
    ):
        """The :class:`~cosmodiff.inference.Potential` keywords of the estimator for one field:
        estimator, t_max, t_exact, n_strata, n_noise and noise_seed."""
        return {"estimator": self.estimator, "t_max": self.t_max, "t_exact": self.t_exact, "n_strata": self.n_strata,
                "n_noise": self.n_noise, "noise_seed": self.noise_seed_of(field)}

    def potential_options(
        self,
        field = 0,          # Test field index: its noise seed is noise_seed + field.
    ):
        """All :class:`~cosmodiff.inference.Potential` keywords of one field: the estimator's
        and batch_size."""
        return {**self.estimator_options(field), "batch_size": self.batch_size}

    def coarse_estimator_options(self):
        """The estimator keywords the local scan's coarse grid changes (t_exact, n_strata,
        n_noise): :data:`COARSE_ESTIMATOR` updated by ``coarse_estimator``."""
        return {**COARSE_ESTIMATOR, **(self.coarse_estimator or {})}

    def coarse_settings(self):
        """These settings with the local scan's coarse estimator (:meth:`coarse_estimator_options`)."""
        return replace(self, **self.coarse_estimator_options())

    def local_options(self):
        """The :func:`~cosmodiff.inference.grid.local_scan` keywords: n_coarse, n_fine, n_sigma, n_interp."""
        return {"n_coarse": self.n_coarse, "n_fine": self.n_fine, "n_sigma": self.n_sigma, "n_interp": self.n_interp,
                "coarse_refine": self.coarse_refine}

    def coarse_to_fine_options(self):
        """The :func:`~cosmodiff.inference.coarse_to_fine` keywords: n_coarse, n_fine, max_refine."""
        return {"n_coarse": self.n_coarse, "n_fine": self.n_fine, "max_refine": self.max_refine}

    @classmethod
    def oracle_section(
        cls,
        section,            # The config section `inference`.
    ):
        """The part of the section the oracle check reads: the estimator keywords but
        ``estimator`` (it scans its own), so that editing any other setting does not rerun it."""
        keys = [k for k in cls().estimator_options() if k != "estimator"]
        return {k: section[k] for k in keys}

    # ---- costs

    def evaluations_per_theta(
        self,
        timesteps = 1000,   # T of the diffusion.
    ):
        """Network evaluations per parameter point (as ``Potential.evaluations_per_theta``; for
        "full" every stratum counts one draw, as beyond :data:`~cosmodiff.inference.FULL_DRAWS`)."""
        n_noise = default_draws(self.n_noise, self.estimator)
        if self.estimator == "truncated":
            ts = range(int(self.t_max) + 1)
        elif self.estimator == "exact":
            ts = range(timesteps)
        else:  # full: t < t_exact, then one t per stratum (all above t_exact: one draw beyond FULL_DRAWS)
            ts = list(range(int(self.t_exact))) + [timesteps - 1] * int(self.n_strata)
        return sum(draws(n_noise, int(t)) for t in ts)

    def evaluations_per_field(
        self,
        timesteps = 1000,   # T of the diffusion.
    ):
        """Network evaluations of one posterior scan (coarse_to_fine: its upper bound); for
        the local scan its coarse grids at the coarse estimator's cost (with coarse_refine:
        an upper bound) plus its fine grid."""
        if self.scan != "local":
            return self.grid_points() * self.evaluations_per_theta(timesteps)
        coarse = self.coarse_settings()
        return ((1 + int(self.coarse_refine)) * int(self.n_coarse) ** 2 * coarse.evaluations_per_theta(timesteps)
                + int(self.n_fine) ** 2 * self.evaluations_per_theta(timesteps))

    def grid_points(self):
        """Parameter points of one posterior scan (coarse_to_fine: its upper bound)."""
        if self.scan == "around_truth":
            return int(self.n_grid) ** 2
        if self.scan == "local":
            return (1 + int(self.coarse_refine)) * int(self.n_coarse) ** 2 + int(self.n_fine) ** 2
        return int(self.n_coarse) ** 2 + int(self.max_refine) * int(self.n_fine) ** 2


def _is_int(value):
    """An integer, or a float with an integer value (as JSON Schema's "integer" allows)."""
    if isinstance(value, bool):
        return False
    return isinstance(value, numbers.Integral) or (isinstance(value, float) and value.is_integer())


def _is_number(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _check_int(name, value, lo):
    if not _is_int(value) or (lo is not None and value < lo):
        expected = "an integer" if lo is None else f"an integer >= {lo}"
        raise ValueError(f"inference setting '{name}': {value!r} is not allowed; expected {expected}")


__all__ = ["COARSE_ESTIMATOR", "SCANS", "InferenceSettings"]
