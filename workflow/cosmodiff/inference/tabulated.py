"""The Wiener oracle with its spectrum interpolated in theta: an exact denoiser that is
differentiable in (Omega_m, sigma_8), for gradient-based samplers.

:class:`~cosmodiff.inference.oracle.WienerOracle` looks its spectra up in numpy (pyccl's
halofit), so its output carries no gradient with respect to ``cond``. :class:`TabulatedOracle`
computes the same per-mode quantities (log of the N x N eigenvalues of the normalised field's
covariance, and its mean) once, on a regular (Omega_m, sigma_8) table, and interpolates them
with a tensor-product cubic spline written in torch, so that ``Potential.torch_call`` gets
dU/dtheta through it exactly as through a network. It is the exact optimal denoiser of the
*tabulated* model (a Gaussian log field whose spectrum is the spline), and ``spectrum`` (so
``nll``, ``mmse``, ``expected_bound``) describe that model; ``exact_spectrum`` is the
generator's.

The spline: uniform cubic B-splines along each axis with not-a-knot ends (cubics are
reproduced exactly; C2 everywhere; error O(h^4) for smooth functions), coefficients solved
once in numpy. The mean is tabulated without its log10(Omega_m - Omega_b) part (the mean
surface density), which is added back exactly. Caveat: the generator's spectrum has kinks in
theta where a corner mode (|k| > ~4 h/Mpc at 32^2) reaches the Gaussian power floor
(``synthetic.GAUSSIAN_FLOOR``) and its log rises steeply just above it; the spline smooths
those, so the tabulated model differs from the generator most there (up to ~1 in log lambda
for such modes at 5-7 nodes per 0.24; :meth:`TabulatedOracle.table_error` measures it).
"""

from __future__ import annotations

import numpy as np
import torch

from ..cosmology import BOX_SIZE, OMEGA_B, PRIOR
from .oracle import WienerOracle, circulant_nll


def spline_operator(
    n,                  # Nodes of the axis (>= 4).
):
    """The (n + 2, n) matrix taking values at n uniform nodes to the coefficients of their
    interpolating uniform cubic B-spline, not-a-knot ends (third derivative continuous at the
    second and second-to-last nodes: fourth differences of the coefficients vanish there)."""
    n = int(n)
    if n < 4:
        raise ValueError(f"a not-a-knot cubic spline needs >= 4 nodes per axis, got {n}")
    A = np.zeros((n + 2, n + 2))
    for k in range(n):
        A[k, k : k + 3] = (1 / 6, 4 / 6, 1 / 6)  # value at node k
    A[n, :5] = (1, -4, 6, -4, 1)
    A[n + 1, -5:] = (1, -4, 6, -4, 1)
    return np.linalg.solve(A, np.eye(n + 2)[:, :n])


def bspline_weights(
    s,                  # Position inside a cell, in [0, 1] (numpy array or tensor).
):
    """The four uniform cubic B-spline weights of the coefficients around a cell, (..., 4)."""
    w = ((1 - s) ** 3 / 6, (3 * s**3 - 6 * s**2 + 4) / 6, (-3 * s**3 + 3 * s**2 + 3 * s + 1) / 6, s**3 / 6)
    return torch.stack(w, -1) if isinstance(s, torch.Tensor) else np.stack(w, -1)


class TabulatedOracle(WienerOracle):
    """The exact E[eps | x_t, theta] of the lognormal maps with the spectrum interpolated in
    theta (differentiable in ``cond``), for N x N fields inside a (Omega_m, sigma_8) box.

    Built from ``nodes[0] x nodes[1]`` exact spectra (pyccl, ~0.25 s each). Theta outside
    the box raises. Used as a network: ``Potential(TabulatedOracle(...), ...)``; its
    ``torch_call`` then has gradients.

    Interpolation error, 32 x 32, normalisation (11.5, 11.75), one field at (0.3, 0.8), points
    within 0.025 of it (exact NLL of the tabulated model minus the generator's; the exact
    posterior's sigma is 0.022-0.030 here): 9 x 9 nodes on the whole prior: log lambda
    0.16, NLL -1.2..+0.16 nats, dNLL/dtheta off by up to 7 nats per unit theta (of 4-83;
    sigma times that, ~0.2, is the posterior shift it can cause in sigma units); 5 x 5 on
    (0.2, 0.4) x (0.7, 0.9): 0.03, -0.25..+0.07, 3.5 (~0.1 sigma); 9 x 9 on that box: 1e-4,
    < 1e-3 nats, 0.05."""

    def __init__(
        self,
        diffusion,          # The GaussianDiffusion whose alphas_cumprod define x_t.
        normalisation,      # (lo, hi) of the log10 maps: x0 = 2 (log10 - lo) / (hi - lo) - 1.
        resolution,         # Pixels per side N of the fields (the table holds N x N spectra).
        omega_m  = PRIOR["omega_m"],  # (lo, hi) of the table in Omega_m (inside the prior).
        sigma_8  = PRIOR["sigma_8"],  # (lo, hi) of the table in sigma_8.
        nodes    = 9,       # Nodes per axis, an int or (n_om, n_s8), each >= 4.
        box_size = BOX_SIZE,  # Side of the periodic box, Mpc/h.
        native_resolution = None,  # Resolution the maps were generated at (None: N).
        method   = "bicubic",  # Downsampling of prepare, when native_resolution is larger.
    ):
        super().__init__(diffusion, normalisation, box_size, native_resolution, method)
        self.resolution = int(resolution)
        nn = np.broadcast_to(np.asarray(nodes, dtype=np.int64), (2,))
        self.axes = tuple(np.linspace(float(a), float(b), int(n)) for (a, b), n in zip((omega_m, sigma_8), nn))
        lo, hi = self.normalisation
        self._slope = 2.0 / (hi - lo)  # d mu / d log10 Sigma
        values = np.array([[self._node_values(a, b) for b in self.axes[1]] for a in self.axes[0]])
        coef = np.einsum("ai,bj,ijp->abp", spline_operator(nn[0]), spline_operator(nn[1]), values)
        self.register_buffer("coef", torch.from_numpy(coef))  # (n_om + 2, n_s8 + 2, N^2 + 1)

    def exact_spectrum(self, omega_m, sigma_8, resolution):
        """The generator's (lambda, mu) (:meth:`WienerOracle.spectrum`): what the table holds at its nodes."""
        return WienerOracle.spectrum(self, omega_m, sigma_8, resolution)

    def _node_values(self, omega_m, sigma_8):
        lam, mu = self.exact_spectrum(omega_m, sigma_8, self.resolution)
        resid = mu - self._slope * np.log10(omega_m - OMEGA_B)  # the mean surface density's part, added back exactly
        return np.concatenate([np.log(lam.numpy()).ravel(), [resid]])

    def _interpolate(self, theta):
        """Spline values (R, N^2 + 1) at theta (R, 2) float64 on coef's device; autograd flows."""
        cells = []
        for k, ax in enumerate(self.axes):
            x = theta[:, k]
            tol = 1e-9 * (ax[-1] - ax[0])
            if bool(((x < ax[0] - tol) | (x > ax[-1] + tol)).any()):
                raise ValueError(f"theta[:, {k}] leaves the table [{ax[0]}, {ax[-1]}]: {x.detach().cpu().numpy()}")
            u = (x - ax[0]) / (ax[1] - ax[0])
            i = u.detach().floor().long().clamp(0, len(ax) - 2)
            cells.append((i, bspline_weights(u - i)))
        (i, wx), (j, wy) = cells
        off = torch.arange(4, device=theta.device)
        c = self.coef[(i[:, None, None] + off[None, :, None]), (j[:, None, None] + off[None, None, :])]
        return torch.einsum("ra,rb,rabp->rp", wx, wy, c)  # c: (R, 4, 4, N^2 + 1)

    def _batch_spectra(self, cond, resolution, device):
        """(lambda (B, 1, N, N), mu (B, 1, 1, 1)) float64 on ``device``, differentiable in cond.
        Without grad, each distinct row is interpolated once."""
        if int(resolution) != self.resolution:
            raise ValueError(f"the table is for {self.resolution}^2 fields, got {resolution}^2")
        theta = cond.reshape(-1, 2).to(self.coef.device, torch.float64)
        if theta.requires_grad:
            vals = self._interpolate(theta)
        else:
            uniq, inv = torch.unique(theta, dim=0, return_inverse=True)
            vals = self._interpolate(uniq)[inv.reshape(-1)]
        n = self.resolution
        lam = vals[:, :-1].exp().reshape(-1, 1, n, n)
        mu = vals[:, -1] + self._slope * torch.log10(theta[:, 0] - OMEGA_B)
        return lam.to(device), mu.reshape(-1, 1, 1, 1).to(device)

    def spectrum(self, omega_m, sigma_8, resolution):
        """(lambda (N, N) float64 tensor, mu float) of the tabulated model at one point."""
        with torch.no_grad():
            lam, mu = self._batch_spectra(torch.tensor([[omega_m, sigma_8]], dtype=torch.float64), resolution, "cpu")
        return lam[0, 0], float(mu)

    def table_error(
        self,
        theta,              # Parameter points (M, 2) inside the table, e.g. between its nodes.
        field = None,       # Optional normalised field (N, N): also the error of its exact NLL.
    ):
        """How far the table is from the generator at theta, one dict per point: the largest
        |error| of log lambda over the modes, the error of mu and, with a field, the error of
        its Gaussian NLL (``nll``, nats). One exact spectrum per point (pyccl)."""
        rows = []
        for om, s8 in np.asarray(theta, dtype=np.float64).reshape(-1, 2):
            lam_t, mu_t = self.spectrum(om, s8, self.resolution)
            lam_e, mu_e = self.exact_spectrum(om, s8, self.resolution)
            row = {"omega_m": om, "sigma_8": s8, "log_lambda": float((lam_t / lam_e).log().abs().max()), "mu": mu_t - mu_e}
            if field is not None:
                row["nll"] = float(circulant_nll(field, lam_t.numpy(), mu_t) - circulant_nll(field, lam_e.numpy(), mu_e))
            rows.append(row)
        return rows


__all__ = ["TabulatedOracle", "bspline_weights", "spline_operator"]
