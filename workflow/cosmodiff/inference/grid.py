"""Grid posteriors on (Omega_m, sigma_8) from a potential, under a flat prior.

:func:`grid_posterior` evaluates a potential on a grid and returns a :class:`GridPosterior`
(normalised posterior, marginals, means, stds, equal-tailed intervals, 2D highest-density
levels, HDF5 output). The scans: :func:`grid_around` (the authors' +-0.1 window clipped to
the prior), :func:`coarse_to_fine` (the whole prior coarsely, then a fine grid sized from the
coarse posterior), :func:`local_scan` (a cheap coarse grid, then a few well-estimated points
around its posterior, splined: the posterior for at most 10,000 network evaluations) and
:func:`scan_field` (one field as the workflow scans it, from its
:class:`~cosmodiff.inference.InferenceSettings`); :func:`exact_lognormal_posterior` is the
reference and :func:`compare` the distance to it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

import numpy as np

from ..cosmology import BOX_SIZE, PRIOR
from ..synthetic import lognormal_log_likelihood
from .settings import InferenceSettings

PARAMS = ("omega_m", "sigma_8")
#: Probability masses of the reported intervals and 2D highest-density regions.
MASSES = (0.68, 0.95)


def _trapezoid_weights(x):
    """Integration weights of a 1D grid: half the distance to each neighbour (cell widths)."""
    x = np.asarray(x, dtype=np.float64)
    d = np.diff(x)
    w = np.zeros_like(x)
    w[:-1] += d / 2
    w[1:] += d / 2
    return w


def _cdf(x, pdf):
    """CDF of a piecewise-linear density at the nodes x (trapezoid rule), ending at 1."""
    c = np.concatenate([[0.0], np.cumsum(np.diff(x) * (pdf[1:] + pdf[:-1]) / 2)])
    return c / c[-1]


def _quantile(x, pdf, q):
    """Quantile(s) q in (0, 1) of a piecewise-linear density on nodes x (CDF interpolated
    linearly): inside the first cell whose CDF reaches q, so that a run of empty cells (a
    density that underflows to 0 far from the mode) never stretches the interval."""
    c = _cdf(x, pdf)
    q = np.asarray(q, dtype=np.float64)
    j = np.clip(np.searchsorted(c, q, side="left"), 1, len(c) - 1)  # c[j - 1] < q <= c[j]
    dc = c[j] - c[j - 1]
    frac = np.divide(q - c[j - 1], dc, out=np.zeros_like(dc), where=dc > 0)
    return x[j - 1] + np.clip(frac, 0.0, 1.0) * (x[j] - x[j - 1])


@dataclass
class GridPosterior:
    """A posterior on a (Omega_m, sigma_8) grid from a potential U, under a flat prior.

    omega_m, sigma_8:   the grid axes (n_om,), (n_s8,), increasing.
    potential:          U on the grid (n_om, n_s8), nats (indexing "ij").
    log_post:           -(U - min U): the unnormalised log posterior, 0 at the mode.
    log_density:        normalised log posterior density (integrates to 1 with the cells).
    density:            exp(log_density).
    prob:               mass of each node's cell: density * cell area; sums to 1. Cells are
                        the trapezoid-rule cells (half cells on the grid's edges).
    marginals:          {"omega_m": (n_om,), "sigma_8": (n_s8,)} 1D densities.
    mean, std:          (2,) marginal means and standard deviations; cov (2, 2).
    intervals:          {0.68: (2, 2), 0.95: (2, 2)}: per parameter (row) the equal-tailed
                        interval [q_(1-m)/2, q_(1+m)/2] of the marginal CDF (linear in each cell).
    levels:             {0.68: d, 0.95: d}: the density whose superlevel set holds that mass
                        (the 2D highest-density contours).
    evaluations:        network evaluations that produced U (None if unknown).
    meta:               free-form provenance (scan settings, stages, truth, ...).
    """

    omega_m: np.ndarray
    sigma_8: np.ndarray
    potential: np.ndarray
    log_post: np.ndarray
    log_density: np.ndarray
    density: np.ndarray
    prob: np.ndarray
    marginals: dict
    mean: np.ndarray
    std: np.ndarray
    cov: np.ndarray
    intervals: dict
    levels: dict
    evaluations: int | None = None
    meta: dict = field(default_factory=dict)

    @classmethod
    def from_potential(
        cls,
        omega_m,            # Grid axis of Omega_m (n_om,), increasing, >= 2 points.
        sigma_8,            # Grid axis of sigma_8 (n_s8,), increasing, >= 2 points.
        potential,          # U (n_om, n_s8) in nats; +inf allowed (zero posterior), no NaN.
        evaluations = None, # Network evaluations spent (recorded in the summary).
        meta        = None, # Provenance dict.
    ):
        om = np.asarray(omega_m, dtype=np.float64)
        s8 = np.asarray(sigma_8, dtype=np.float64)
        U = np.asarray(potential, dtype=np.float64).reshape(om.size, s8.size)
        for name, ax in (("omega_m", om), ("sigma_8", s8)):
            if ax.ndim != 1 or ax.size < 2 or np.any(np.diff(ax) <= 0):
                raise ValueError(f"{name} grid must be 1D, increasing, with >= 2 points")
        if np.isnan(U).any() or not np.isfinite(U).any() or (U == -np.inf).any():
            raise ValueError("potential must be finite or +inf (no NaN), with a finite value somewhere")
        log_post = -(U - U[np.isfinite(U)].min())
        w_om, w_s8 = _trapezoid_weights(om), _trapezoid_weights(s8)
        area = w_om[:, None] * w_s8[None, :]
        log_z = math.log(float((np.exp(log_post) * area).sum()))
        log_density = log_post - log_z
        density = np.exp(log_density)
        prob = density * area
        prob = prob / prob.sum()  # rounding only
        m_om = density @ w_s8
        m_s8 = w_om @ density
        pm_om, pm_s8 = prob.sum(axis=1), prob.sum(axis=0)
        mean = np.array([pm_om @ om, pm_s8 @ s8])
        d_om, d_s8 = om - mean[0], s8 - mean[1]
        cov = np.array(
            [[pm_om @ d_om**2, float(d_om @ prob @ d_s8)], [float(d_om @ prob @ d_s8), pm_s8 @ d_s8**2]]
        )
        std = np.sqrt(np.diag(cov))
        intervals = {}
        for m in MASSES:
            q = [(1 - m) / 2, (1 + m) / 2]
            intervals[m] = np.array([_quantile(om, m_om, q), _quantile(s8, m_s8, q)])
        flat_d, flat_p = density.ravel(), prob.ravel()
        order = np.argsort(flat_d)[::-1]
        cum = np.cumsum(flat_p[order])
        levels = {m: float(np.interp(m, cum, flat_d[order])) for m in MASSES}
        return cls(
            omega_m=om, sigma_8=s8, potential=U, log_post=log_post, log_density=log_density,
            density=density, prob=prob, marginals={"omega_m": m_om, "sigma_8": m_s8},
            mean=mean, std=std, cov=cov, intervals=intervals, levels=levels,
            evaluations=None if evaluations is None else int(evaluations), meta=dict(meta or {}),
        )

    @property
    def shape(self):
        return self.potential.shape

    @property
    def mode(self):
        """The grid node of highest posterior (Omega_m, sigma_8)."""
        i, j = np.unravel_index(np.argmax(self.log_post), self.shape)
        return np.array([self.omega_m[i], self.sigma_8[j]])

    def density_at(
        self,
        point,              # (Omega_m, sigma_8).
    ):
        """Posterior density at a point by bilinear interpolation (0 outside the grid)."""
        from scipy.interpolate import RegularGridInterpolator

        f = RegularGridInterpolator((self.omega_m, self.sigma_8), self.density, bounds_error=False, fill_value=0.0)
        return float(f(np.asarray(point, dtype=np.float64).reshape(1, 2))[0])

    def hpd_mass(
        self,
        point,              # (Omega_m, sigma_8), e.g. the truth.
    ):
        """Mass of the smallest highest-density region containing ``point`` (1 outside the
        grid): the point is inside the m-HPD region iff hpd_mass(point) <= m."""
        d = self.density_at(point)
        return float(self.prob[self.density >= d].sum()) if d > 0 else 1.0

    def summary(
        self,
        truth = None,       # Optional true (Omega_m, sigma_8): adds truth, z-scores, hpd_mass.
    ):
        """One tidy row (dict of floats): per parameter mean, std, mode and 68/95% interval
        bounds; the HPD levels; grid size and evaluations; with a truth its z-scores."""
        row = {}
        for k, name in enumerate(PARAMS):
            row[f"{name}_mean"] = float(self.mean[k])
            row[f"{name}_std"] = float(self.std[k])
            row[f"{name}_mode"] = float(self.mode[k])
            for m in MASSES:
                tag = round(100 * m)
                row[f"{name}_lo{tag}"] = float(self.intervals[m][k, 0])
                row[f"{name}_hi{tag}"] = float(self.intervals[m][k, 1])
        row["corr"] = float(self.cov[0, 1] / (self.std[0] * self.std[1]))
        for m in MASSES:
            row[f"level{round(100 * m)}"] = self.levels[m]
        row["n_omega_m"], row["n_sigma_8"] = int(self.shape[0]), int(self.shape[1])
        row["evaluations"] = -1 if self.evaluations is None else int(self.evaluations)
        if truth is not None:
            truth = np.asarray(truth, dtype=np.float64)
            for k, name in enumerate(PARAMS):
                row[f"{name}_truth"] = float(truth[k])
                row[f"{name}_z"] = float((self.mean[k] - truth[k]) / self.std[k])
            row["hpd_mass_truth"] = self.hpd_mass(truth)
        return row

    def to_hdf5(
        self,
        path,               # Output .h5 (written to a temporary name, then renamed).
        attrs = None,       # Extra attributes (field id, truth, estimator, ...); non-scalars as JSON.
    ):
        """Write the grid, U, the normalised log density and the marginals; the summary and
        ``attrs`` (and ``meta``) as attributes."""
        import h5py

        from ..files import atomic_output

        with atomic_output(path) as tmp, h5py.File(tmp, "w") as f:
            f.create_dataset("omega_m", data=self.omega_m)
            f.create_dataset("sigma_8", data=self.sigma_8)
            f.create_dataset("potential", data=self.potential)
            f.create_dataset("log_density", data=self.log_density)
            f.create_dataset("marginal_omega_m", data=self.marginals["omega_m"])
            f.create_dataset("marginal_sigma_8", data=self.marginals["sigma_8"])
            extra = {**({"meta": self.meta} if self.meta else {}), **dict(attrs or {})}
            for k, v in {**self.summary(), **extra}.items():
                if isinstance(v, (dict, list, tuple)) or v is None or isinstance(v, np.ndarray):
                    v = json.dumps(np.asarray(v).tolist() if isinstance(v, np.ndarray) else v, default=_jsonable)
                f.attrs[k] = v

    @classmethod
    def from_hdf5(cls, path):
        """Rebuild from a file written by :meth:`to_hdf5` (returns the posterior, attrs)."""
        import h5py

        with h5py.File(path, "r") as f:
            attrs = dict(f.attrs)
            ev = int(attrs.get("evaluations", -1))
            post = cls.from_potential(f["omega_m"][:], f["sigma_8"][:], f["potential"][:], None if ev < 0 else ev)
        return post, attrs


def _jsonable(o):
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, np.generic):
        return o.item()
    raise TypeError(f"not JSON serialisable: {type(o)}")


def _evaluate(potential, theta):
    """U at theta (M, 2) and the network evaluations it cost (M if the callable does not count)."""
    before = getattr(potential, "evaluations", None)
    U = np.asarray(potential(theta), dtype=np.float64).reshape(-1)
    if U.size != len(theta):
        raise ValueError(f"potential returned {U.size} values for {len(theta)} points")
    after = getattr(potential, "evaluations", None)
    spent = after - before if isinstance(before, (int, np.integer)) and isinstance(after, (int, np.integer)) else len(theta)
    return U, int(spent)


def grid_posterior(
    potential,          # Potential, or any callable theta (M, 2) -> U (M,) in nats.
    omega_m_grid,       # Omega_m axis (n_om,), increasing.
    sigma_8_grid,       # sigma_8 axis (n_s8,), increasing.
    meta = None,        # Provenance stored in the result's meta.
):
    """Evaluate U on the grid (all points in one call: the potential batches them) and
    return the flat-prior :class:`GridPosterior` exp(-(U - min U)). ``evaluations`` is the
    potential's counter difference, or the number of points for a plain callable."""
    om = np.asarray(omega_m_grid, dtype=np.float64)
    s8 = np.asarray(sigma_8_grid, dtype=np.float64)
    theta = np.stack(np.meshgrid(om, s8, indexing="ij"), axis=-1).reshape(-1, 2)
    U, spent = _evaluate(potential, theta)
    return GridPosterior.from_potential(om, s8, U.reshape(om.size, s8.size), spent, meta)


def grid_around(
    truth,              # Centre (Omega_m, sigma_8).
    half_width = 0.1,   # Half width of the window in both parameters (or a pair), the authors' 0.1.
    n          = 100,   # Points per axis (or a pair), the authors' 100.
    prior      = PRIOR, # {"omega_m": (lo, hi), "sigma_8": (lo, hi)}: the window is clipped to it.
):
    """The authors' grid: (omega_m_grid, sigma_8_grid), each linspace over centre +- half_width
    clipped to the prior."""
    hw = np.broadcast_to(np.asarray(half_width, dtype=np.float64), (2,))
    nn = np.broadcast_to(np.asarray(n, dtype=np.int64), (2,))
    axes = []
    for k, name in enumerate(PARAMS):
        lo, hi = prior[name]
        a, b = max(lo, truth[k] - hw[k]), min(hi, truth[k] + hw[k])
        if not a < b:
            raise ValueError(f"window of {name} around {truth[k]} is empty inside the prior {prior[name]}")
        axes.append(np.linspace(a, b, int(nn[k])))
    return axes[0], axes[1]


def coarse_to_fine(
    potential,          # Potential, or any callable theta (M, 2) -> U (M,).
    n_coarse   = 11,    # Points per axis of the coarse grid over the whole prior.
    n_fine     = 21,    # Points per axis of each fine grid.
    n_sigma    = 5.0,   # Fine window: coarse mean +- n_sigma coarse std (per parameter).
    min_cells  = 1.5,   # ... but at least +- min_cells spacings of the previous grid (a posterior narrower than a coarse cell has a useless coarse std).
    max_refine = 2,     # Fine grids at most (each sized from the previous posterior).
    prior      = PRIOR, # {"omega_m": (lo, hi), "sigma_8": (lo, hi)}.
):
    """Coarse grid over the prior, then fine grids around the posterior until the window is
    stable. Each fine grid spans mean +- max(n_sigma std, min_cells spacing) of the previous
    posterior, clipped to the prior; refinement stops when the new window would be within
    a factor 1.5 of the current one (the current grid already resolves the posterior with
    margin) or after ``max_refine`` fine grids. Returns the last GridPosterior with
    ``evaluations`` the total over all stages and ``meta["stages"]`` each stage's grid
    window, points and evaluations."""
    axes = [np.linspace(*prior[name], int(n_coarse)) for name in PARAMS]
    post = grid_posterior(potential, axes[0], axes[1])
    stages = [_stage(post, "coarse")]
    total = post.evaluations
    for _ in range(int(max_refine)):
        window = _window(post, n_sigma, min_cells, prior)
        cur = [(post.omega_m[0], post.omega_m[-1]), (post.sigma_8[0], post.sigma_8[-1])]
        if len(stages) > 1 and all(_similar(w, c) for w, c in zip(window, cur)):
            break
        post = grid_posterior(potential, *(np.linspace(a, b, int(n_fine)) for a, b in window))
        total += post.evaluations
        stages.append(_stage(post, "fine"))
    post.evaluations = total
    post.meta.update(
        scan="coarse_to_fine", stages=stages, n_points=int(sum(s["points"] for s in stages)),
        n_coarse=int(n_coarse), n_fine=int(n_fine), n_sigma=float(n_sigma),
    )
    return post


def local_scan(
    coarse_potential,   # Cheap potential (few noise draws) of the field: only places the fine grid.
    fine_potential,     # Well-estimated potential (many noise draws) of the same field: the posterior's U.
    n_coarse   = 5,     # Points per axis of the coarse grid over the whole prior.
    n_fine     = 5,     # Points per axis of the fine grid (>= 4: a bicubic spline through them).
    n_sigma    = 3.5,   # Fine window: coarse mean +- n_sigma coarse std (per parameter), clipped to the prior.
    min_cells  = 1.0,   # ... but at least +- min_cells coarse spacings.
    n_interp   = 41,    # Points per axis of the grid the spline of U is evaluated on (the returned posterior's).
    coarse_refine = 0,  # Fine grids of the cheap potential after its coarse grid (coarse_to_fine, n_coarse points per axis): a posterior narrower than a coarse cell needs them.
    prior      = PRIOR, # {"omega_m": (lo, hi), "sigma_8": (lo, hi)}.
):
    """The cheap posterior: ``n_coarse``^2 points of the cheap potential locate the posterior
    (then ``coarse_refine`` narrower grids of it, as :func:`coarse_to_fine`),
    ``n_fine``^2 points of the fine potential span it, and a bicubic spline of U through them
    (``scipy.interpolate.RectBivariateSpline``) gives U on an ``n_interp``^2 grid. The budget
    goes where the posterior is and into noise draws, not into grid points: with CRN, U is
    smooth in theta and its noise, not the grid, moves the posterior. Measured on the
    exact denoiser of the bench's 32^2 fields (README, "Beyond the grid scan"): the spline
    through 5 x 5 exact-likelihood points over +-3.5 sigma moves the mean by a median 0.02
    sigma and the width by 1%. Returns a GridPosterior with ``evaluations`` the total of both
    stages and ``meta["stages"]`` their windows, points and evaluations."""
    if int(n_fine) < 4:
        raise ValueError(f"n_fine must be >= 4 (a bicubic spline), got {n_fine}")
    coarse = coarse_to_fine(coarse_potential, n_coarse=n_coarse, n_fine=n_coarse, max_refine=int(coarse_refine),
                            prior=prior)
    window = _window(coarse, n_sigma, min_cells, prior)
    fine = grid_posterior(fine_potential, *(np.linspace(a, b, int(n_fine)) for a, b in window))
    if not np.isfinite(fine.potential).all():
        raise ValueError("the fine potential is not finite on the fine grid: a spline needs finite U")
    post = splined(fine, n_interp)
    post.evaluations = coarse.evaluations + fine.evaluations
    post.meta = dict(scan="local", stages=[*coarse.meta["stages"], _stage(fine, "fine")],
                     n_points=int(coarse.meta["n_points"] + fine.potential.size), n_coarse=int(n_coarse),
                     n_fine=int(n_fine), n_sigma=float(n_sigma), n_interp=int(n_interp),
                     coarse_refine=int(coarse_refine))
    return post


def splined(
    post,               # GridPosterior with finite U (e.g. an exact posterior's fine grid); >= 4 nodes per axis for a bicubic spline.
    n_interp = 81,      # Points per axis of the new grid.
):
    """The same posterior with U splined (bicubic) onto an ``n_interp``^2 grid of the same
    window: moments and intervals without the trapezoid rule's error on a coarse grid."""
    from scipy.interpolate import RectBivariateSpline

    # bicubic; a grid of 3 nodes on an axis (a smoke run's) takes a quadratic there
    kx, ky = min(3, post.omega_m.size - 1), min(3, post.sigma_8.size - 1)
    spline = RectBivariateSpline(post.omega_m, post.sigma_8, post.potential, kx=kx, ky=ky)
    om = np.linspace(post.omega_m[0], post.omega_m[-1], int(n_interp))
    s8 = np.linspace(post.sigma_8[0], post.sigma_8[-1], int(n_interp))
    return GridPosterior.from_potential(om, s8, spline(om, s8), post.evaluations, {**post.meta, "splined": int(n_interp)})


def _stage(post, kind):
    return {
        "kind": kind,
        "omega_m": [float(post.omega_m[0]), float(post.omega_m[-1])],
        "sigma_8": [float(post.sigma_8[0]), float(post.sigma_8[-1])],
        "points": int(post.potential.size),
        "evaluations": int(post.evaluations),
    }


def _window(post, n_sigma, min_cells, prior):
    out = []
    for k, (name, ax) in enumerate(zip(PARAMS, (post.omega_m, post.sigma_8))):
        spacing = float(np.max(np.diff(ax)))
        h = max(n_sigma * post.std[k], min_cells * spacing)
        lo, hi = prior[name]
        c = float(np.clip(post.mean[k], lo, hi))
        out.append((max(lo, c - h), min(hi, c + h)))
    return out


def _similar(new, cur):
    wn, wc = new[1] - new[0], cur[1] - cur[0]
    shift = max(abs(new[0] - cur[0]), abs(new[1] - cur[1]))
    return wc / 1.5 <= wn <= wc * 1.5 and shift <= 0.25 * wc


def exact_lognormal_posterior(
    field_physical,     # Map(s) in (Msun/h)/(Mpc/h)^2: (N, N) or (n, N, N).
    omega_m_grid,       # Omega_m axis.
    sigma_8_grid,       # sigma_8 axis.
    box_size = BOX_SIZE,  # Side of the periodic box, Mpc/h.
):
    """The exact posterior of lognormal maps (flat prior) from
    :func:`cosmodiff.synthetic.lognormal_log_likelihood`: a GridPosterior, or a list of them
    for (n, N, N) (each spectrum is computed once for all maps)."""
    maps = np.asarray(field_physical, dtype=np.float64)
    single = maps.ndim == 2
    maps = maps[None] if single else maps
    om = np.asarray(omega_m_grid, dtype=np.float64)
    s8 = np.asarray(sigma_8_grid, dtype=np.float64)
    U = np.empty((maps.shape[0], om.size, s8.size))
    for i, a in enumerate(om):
        for j, b in enumerate(s8):
            U[:, i, j] = -lognormal_log_likelihood(maps, a, b, box_size=box_size)
    posts = [GridPosterior.from_potential(om, s8, u, 0, {"scan": "exact_lognormal"}) for u in U]
    return posts[0] if single else posts


def compare(
    post,               # GridPosterior to judge.
    ref,                # Reference GridPosterior (e.g. the exact one) on the same grid.
):
    """How far ``post`` is from ``ref``: per parameter the mean shift in units of ref's std
    (``shift_<p>``, signed) and the width ratio post.std / ref.std (``width_<p>``); and
    KL(ref || post) in nats on the grid (``kl``, NaN if the grids differ)."""
    out = {}
    for k, name in enumerate(PARAMS):
        out[f"shift_{name}"] = float((post.mean[k] - ref.mean[k]) / ref.std[k])
        out[f"width_{name}"] = float(post.std[k] / ref.std[k])
    same = post.shape == ref.shape and np.allclose(post.omega_m, ref.omega_m) and np.allclose(post.sigma_8, ref.sigma_8)
    if same:
        with np.errstate(invalid="ignore"):
            d = np.where(ref.prob > 0, ref.log_density - post.log_density, 0.0)
        out["kl"] = float((ref.prob * d).sum())
    else:
        out["kl"] = float("nan")
    return out


def scan_field(
    potential,          # Potential (or any callable theta (M, 2) -> U (M,)) of one field.
    settings,           # InferenceSettings: scan, and n_coarse, n_fine, max_refine or half_width, n_grid.
    truth    = None,    # (Omega_m, sigma_8): the centre of the authors' "around_truth" window.
    coarse   = None,    # scan "local": the cheap potential of its coarse grid; None: ``potential.with_options`` of settings.coarse_estimator (``potential`` itself for a plain callable).
):
    """The grid posterior of one field as the workflow scans it: :func:`coarse_to_fine`
    over the prior, :func:`local_scan` (``coarse`` places the fine grid of ``potential``), or
    the authors' window :func:`grid_around` the truth."""
    if not isinstance(settings, InferenceSettings):
        raise TypeError(f"scan_field takes InferenceSettings (InferenceSettings.from_dict of the config section), "
                        f"not {type(settings).__name__}")
    if settings.scan == "coarse_to_fine":
        return coarse_to_fine(potential, **settings.coarse_to_fine_options())
    if settings.scan == "local":
        if coarse is None:
            coarse = potential.with_options(**settings.coarse_estimator_options()) if hasattr(potential, "with_options") \
                else potential
        return local_scan(coarse, potential, **settings.local_options())
    if truth is None:
        raise ValueError("the around_truth scan needs the field's true parameters")
    return grid_posterior(potential, *grid_around(truth, settings.half_width, settings.n_grid))


__all__ = [
    "MASSES",
    "PARAMS",
    "GridPosterior",
    "coarse_to_fine",
    "compare",
    "exact_lognormal_posterior",
    "grid_around",
    "grid_posterior",
    "local_scan",
    "scan_field",
    "splined",
]
