"""The exact optimal denoiser of the lognormal data, and the inference machinery checked with it.

:class:`WienerOracle` is the exact E[eps | x_t, theta] of the lognormal synthetic maps (a
Wiener filter in Fourier space): in place of a network it lets everything here be tested
against the exact likelihood without training. :class:`OracleBoundPotential` is its whole
bound without noise, in closed form, and :func:`oracle_check` scans one field with the exact
likelihood, that bound and Monte Carlo estimators side by side.
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch

from ..cosmology import BOX_SIZE
from ..prepare import normalise
from ..synthetic import log10_spectrum
from .grid import coarse_to_fine, compare, grid_posterior
from .potential import BasePotential, Potential, exact_log10_potential


class WienerOracle(torch.nn.Module):
    """The exact E[eps | x_t, theta] of the lognormal synthetic maps, in normalised units.

    With g ~ N(0, C_g) (C_g circulant, eigenvalues ``lognormal_spectrum(...).gaussian``), a
    map Sigma = exp(log_mean + g - sigma_g^2 / 2) normalises to x0 = A g + mu, with
    A = 2 / ((hi - lo) ln 10) and mu = 2 ((log_mean - sigma_g^2/2) / ln 10 - lo) / (hi - lo) - 1.
    Then x_t = sqrt(abar) x0 + sqrt(1 - abar) eps is Gaussian and
    E[eps | x_t] = sqrt(1 - abar) Sigma_t^{-1} (x_t - sqrt(abar) mu),
    Sigma_t = abar A^2 C_g + (1 - abar) I, diagonal in Fourier space (applied with FFTs).
    Spectra are cached per (Omega_m, sigma_8, N). Computed in float64 (returned in x_t's dtype).

    Prepared fields: with ``native_resolution`` larger than the fields' N, the maps are taken
    to be made at that resolution and downsampled by ``prepare.downsample(..., N, method)``,
    which is linear in log10 Sigma and commutes with shifts, so the field stays Gaussian with
    the aliased spectrum of :func:`cosmodiff.synthetic.log10_spectrum` (the same one that
    gives the exact likelihood of the workflow's prepared fields).
    """

    def __init__(
        self,
        diffusion,          # The GaussianDiffusion whose alphas_cumprod define x_t.
        normalisation,      # (lo, hi) of the log10 maps: x0 = 2 (log10 - lo) / (hi - lo) - 1.
        box_size = BOX_SIZE,  # Side of the periodic box, Mpc/h (that of the maps).
        native_resolution = None,  # Resolution the maps were generated at (None: that of the fields).
        method   = "bicubic",  # Downsampling of prepare, when native_resolution is larger.
    ):
        super().__init__()
        self.diffusion = diffusion
        self.normalisation = tuple(float(v) for v in normalisation)
        self.box_size = float(box_size)
        self.native_resolution = None if native_resolution is None else int(native_resolution)
        self.method = str(method)
        self._cache = {}

    def spectrum(
        self,
        omega_m,            # Parameter point.
        sigma_8,
        resolution,         # Pixels per side N.
    ):
        """(lambda, mu): the eigenvalues (N, N) float64 tensor of the covariance of x0,
        A^2 C_g (log10 units: (2 / (hi - lo))^2 times those of log10 Sigma), and its mean mu
        (a float), cached."""
        key = (float(omega_m), float(sigma_8), int(resolution))
        hit = self._cache.get(key)
        if hit is None:
            native = max(key[2], self.native_resolution or 0)
            lam10, mean10 = log10_spectrum(key[0], key[1], native, key[2], self.method, self.box_size)
            lo, hi = self.normalisation
            hit = (torch.from_numpy((2.0 / (hi - lo)) ** 2 * lam10), float(normalise(mean10, self.normalisation)))
            self._cache[key] = hit
        return hit

    def _batch_spectra(self, cond, resolution, device):
        c = np.asarray(cond.detach().to("cpu", torch.float64).numpy()).reshape(-1, 2)
        uniq, inv = np.unique(c, axis=0, return_inverse=True)
        specs = [self.spectrum(om, s8, resolution) for om, s8 in uniq]
        inv = torch.from_numpy(np.asarray(inv).reshape(-1)).to(device)
        lam = torch.stack([s[0] for s in specs]).to(device)[inv]
        mu = torch.tensor([s[1] for s in specs], dtype=torch.float64, device=device)[inv]
        return lam[:, None], mu.view(-1, 1, 1, 1)

    def _abar(self, t, device):
        return torch.from_numpy(self.diffusion.alphas_cumprod)[t.detach().cpu().long()].to(device).view(-1, 1, 1, 1)

    def forward(self, x_t, t, cond):
        """The network output of the diffusion's parametrisation (eps_hat for
        ``prediction="eps"``), (B, 1, N, N), for x_t (B, 1, N, N), timesteps t (B,), cond (B, 2)."""
        dt = torch.float32 if x_t.device.type == "mps" else torch.float64
        x = x_t.to(dt)
        lam, mu = self._batch_spectra(cond, x.shape[-1], x.device)
        a = self._abar(t, x.device)
        lam, mu, a = lam.to(dt), mu.to(dt), a.to(dt)
        filt = (1.0 - a).sqrt() / (a * lam + 1.0 - a)
        eps = torch.fft.ifft2(filt * torch.fft.fft2(x - a.sqrt() * mu)).real
        return self.diffusion.model_output_from_eps(x, t, eps).to(x_t.dtype)

    def mmse(
        self,
        t,                  # Timestep (an int).
        theta,              # One parameter point (Omega_m, sigma_8).
        resolution,         # Pixels per side N.
    ):
        """The minimum mean squared error per pixel of any noise predictor at t:
        1 - (1 - abar) mean_k 1 / (abar lambda_k + 1 - abar) (the posterior variance of eps)."""
        lam, _ = self.spectrum(theta[0], theta[1], resolution)
        a = self.diffusion.alphas_cumprod[int(t)]
        return float(1.0 - (1.0 - a) * (1.0 / (a * lam.numpy() + 1.0 - a)).mean())

    def expected_bound(
        self,
        x0,                 # Normalised fields (B, 1, N, N) or (B, N, N) (numpy or torch).
        theta,              # One parameter point (Omega_m, sigma_8).
        diffusion,          # The GaussianDiffusion whose bound (model variances) is meant.
        return_terms = False,  # Also return the expected terms (B, T).
    ):
        """The expectation over the forward noise of the whole bound of this oracle,
        ``E[nll_bound(self, x0, theta)]`` (all T terms + prior_kl), in closed form, per field
        (B,) float64: the noise-free reference of every Monte Carlo estimator.

        In the orthonormal real Fourier basis the fields, the noise and the denoiser
        decouple into independent real degrees of freedom with variances s_k^2 = A^2 lambda_k,
        and the optimal denoiser's error is x0_hat - x0 = -y b^2 / v + a b s^2 / v eps
        (a^2 = abar_t, b^2 = 1 - abar_t, v = a^2 s^2 + b^2, y the deviation from the mean), so
        E (x0_hat - x0)^2 = y^2 b^4 / v^2 + a^2 b^2 s^4 / v^2 per degree of freedom; summing
        over the degrees of freedom is summing over all N^2 FFT coefficients with
        y^2 -> |fft(x0 - mu)_k|^2 / N^2 (conjugate pairs hold two real ones). Then
        E KL_t = 0.5 (log(var_p / var_q) + var_q / var_p - 1) + coef1^2 E err^2 / (2 var_p) for
        t >= 1 and E[-log N(x0; x0_hat, beta_0)] = 0.5 log(2 pi beta_0) + E err^2 / (2 beta_0)."""
        x = np.asarray(torch.as_tensor(x0).detach().cpu().double().numpy())
        x = x.reshape(x.shape[0], x.shape[-2], x.shape[-1])
        n = x.shape[-1]
        lam, mu = self.spectrum(theta[0], theta[1], n)
        s2 = lam.numpy().ravel()
        y2 = (np.abs(np.fft.fft2(x - mu)) ** 2).reshape(x.shape[0], -1) / (n * n)  # (B, N^2)
        abar = np.asarray(diffusion.alphas_cumprod)
        var_p = np.asarray(diffusion.model_variance)
        var_q = np.asarray(diffusion.posterior_variance)
        coef1 = np.asarray(diffusion.posterior_mean_coef1)
        terms = np.empty((x.shape[0], abar.size))
        step = max(1, 2**22 // s2.size)
        for lo in range(0, abar.size, step):
            hi = min(abar.size, lo + step)
            a2, b2 = abar[lo:hi, None], 1.0 - abar[lo:hi, None]
            v = a2 * s2[None] + b2
            w_y = b2**2 / v**2                                   # (t, k): coefficient of y^2
            c = (a2 * b2 * s2[None] ** 2 / v**2).sum(axis=1)     # (t,): noise part, summed over k
            err2 = y2 @ w_y.T + c[None]                          # (B, t)
            vp, vq, c1 = var_p[lo:hi], var_q[lo:hi], coef1[lo:hi]
            with np.errstate(divide="ignore", invalid="ignore"):
                kl_const = 0.5 * (np.log(vp / vq) + vq / vp - 1.0) * s2.size
            terms[:, lo:hi] = kl_const[None] + c1[None] ** 2 * err2 / (2.0 * vp[None])
            if lo == 0:
                terms[:, 0] = 0.5 * math.log(2 * math.pi * var_p[0]) * s2.size + err2[:, 0] / (2.0 * var_p[0])
        prior = diffusion.prior_kl(torch.from_numpy(x[:, None])).numpy()
        total = terms.sum(axis=1) + prior
        return (total, terms) if return_terms else total

    def nll(
        self,
        x0,                 # Normalised fields (B, 1, N, N) or (B, N, N) (numpy or torch).
        theta,              # One parameter point (Omega_m, sigma_8).
    ):
        """Exact -log N(x0; mu, A^2 C_g) per field (B,) float64, nats of the normalised field."""
        x = np.asarray(torch.as_tensor(x0).detach().cpu().double().numpy())
        x = x.reshape(x.shape[0], x.shape[-2], x.shape[-1])
        lam, mu = self.spectrum(theta[0], theta[1], x.shape[-1])
        return circulant_nll(x, lam.numpy(), mu)


def circulant_nll(
    x,                  # Normalised fields (..., N, N).
    lam,                # Eigenvalues (N, N) of the circulant covariance C (its spectrum on the FFT grid).
    mu,                 # The mean (a number).
):
    """-log N(x; mu, C) per field (...,) float64, nats, for C circulant (diagonal in Fourier space)."""
    x = np.asarray(x, dtype=np.float64)
    pixels = x.shape[-2] * x.shape[-1]
    quad = (np.abs(np.fft.fft2(x - mu)) ** 2 / lam).sum(axis=(-2, -1)) / pixels
    return 0.5 * (quad + np.log(lam).sum() + pixels * math.log(2 * math.pi))


# --------------------------------------------------------------------------------------------
# the oracle's bound as a potential, and the oracle check: the whole machinery against the
# exact posterior, no network
# --------------------------------------------------------------------------------------------


class OracleBoundPotential(BasePotential):
    """U(theta): the oracle's whole bound of one field without noise, in closed form
    (:meth:`WienerOracle.expected_bound`): what every Monte Carlo estimator estimates.
    ``evaluations`` counts the parameter points."""

    def __init__(
        self,
        oracle,             # The WienerOracle.
        x0,                 # The normalised field (1, N, N).
        diffusion,          # The GaussianDiffusion whose bound is meant.
    ):
        self.oracle, self.x0, self.diffusion = oracle, x0, diffusion
        self.evaluations = 0

    def __call__(
        self,
        theta,              # Parameter points (M, 2): physical (Omega_m, sigma_8).
    ):
        """U (M,) float64, nats of the normalised field."""
        U = np.array([self.oracle.expected_bound(self.x0, th, self.diffusion)[0] for th in theta])
        self.evaluations += len(U)
        return U


def oracle_check(
    field_log10,        # A prepared lognormal field: log10 surface density (N, N).
    diffusion,          # The GaussianDiffusion of the workflow (schedule, model variance).
    normalisation,      # (lo, hi) of the training maps, as the network would see the field.
    estimators,         # {label: Potential keywords (estimator, t_max, t_exact, n_strata, n_noise, noise_seed, ...)}: the Monte Carlo scans.
    native_resolution = None,  # Resolution the field was generated at (None: N).
    method   = "bicubic",      # Downsampling of prepare.
    n_grid   = 11,      # Points per axis of the common grid.
    n_coarse = 5,       # Points per axis of the coarse grid that finds the exact posterior.
):
    """Posteriors of one lognormal field on one grid with the network replaced by the exact
    denoiser (:class:`WienerOracle`): ``exact`` (lognormal_log10_likelihood), ``bound`` (the
    oracle's whole bound without noise, in closed form: what every estimator estimates), and
    one :class:`Potential` scan per entry of ``estimators`` (Monte Carlo with common random
    numbers, exactly as a network is scanned). The common grid is the last one of
    :func:`coarse_to_fine` on the exact posterior (its mean +- 5 sigma, within the prior):
    it resolves the reference wherever it lies, not only near the truth.

    Returns ({label: GridPosterior}, [row per label]) with ``method``, ``evaluations``
    (denoiser calls), ``seconds`` and :func:`compare` against ``exact``. A difference from
    ``exact`` can only come from the bound itself (``bound``: the decoder variance beta_0
    hides modes of x0 whose variance is below it) or from an estimator's noise and
    truncation: none from a network."""
    field = np.asarray(field_log10, dtype=np.float64)
    native = int(native_resolution or field.shape[-1])
    oracle = WienerOracle(diffusion, normalisation, native_resolution=native, method=method)
    x0 = normalise(field, oracle.normalisation)[None]
    t0 = time.perf_counter()
    ref = coarse_to_fine(exact_log10_potential(field, native, method), n_coarse=n_coarse, n_fine=n_grid, max_refine=2)
    posts, rows = {"exact": ref}, [{"method": "exact", "evaluations": 0, "seconds": time.perf_counter() - t0,
                                    **compare(ref, ref)}]
    scans = {"bound": OracleBoundPotential(oracle, x0, diffusion)}
    for label, options in estimators.items():
        options = {"batch_size": 512, **options}
        scans[label] = Potential(oracle, diffusion, field, normalisation, dtype=torch.float64, **options)
    for label, fn in scans.items():
        t0 = time.perf_counter()
        posts[label] = post = grid_posterior(fn, ref.omega_m, ref.sigma_8)
        rows.append({
            "method": label,
            "evaluations": int(post.evaluations) if isinstance(fn, Potential) else 0,
            "seconds": time.perf_counter() - t0,
            **compare(post, ref),
        })
    return posts, rows


__all__ = ["OracleBoundPotential", "WienerOracle", "circulant_nll", "oracle_check"]
