"""2D power spectra of periodic density maps, in the paper's and in Pylians' conventions.

Both conventions share the estimator of one Fourier mode. For an N x N map of a periodic box
of side L (Mpc/h) the overdensity is ``delta = field / mean(field) - 1`` (mean per map), its
real FFT ``delta_k = np.fft.rfft2(delta)`` (unnormalised, numpy's sign convention), and each
mode carries ``P_mode = |delta_k|^2 L^2 / N^4`` in (Mpc/h)^2. A field of white noise with
variance sigma^2 per pixel has ``P = sigma^2 (L/N)^2`` at every k. Wavenumbers are integer
multiples of the fundamental ``k_F = 2 pi / L``: the first axis carries kx = i for
i <= N//2 and i - N above (so the Nyquist row is +N/2, as in both references), the rfft axis
carries ky = 0 .. N//2. All arithmetic is float64. The conventions differ only in which modes
go into which bin and with what weight.

``convention="paper"``: Mudur, Cuesta-Lazaro & Finkbeiner (2023)
    Followed from the authors' public code, github.com/nmudur/diffusion-hmc,
    ``annotated/utils.py``: ``power(x)`` ("adapted from Carol's repo", itself after
    nbodykit's FFTPower), called through ``calc_1dps_img2d(..., normalize=True)``, which is
    what ``annotated/evaluate.py::get_powspec_for_samples`` uses for every power-spectrum
    figure and chi-square in the paper. What that code does:

    * the map is divided by its sum (``img / img.sum()``) and ``torch.fft.rfftn``
      transformed; |F|^2 times ``box_size**2`` is then exactly ``|delta_k|^2 L^2 / N^4`` for
      every k != 0, i.e. the normalisation above;
    * **ceil binning**: ``kbin = ceil(|k| / k_F)``, so bin n holds the modes with
      ``n - 1 < |k|/k_F <= n`` (bin 1 holds only the four modes with |k| = k_F). Not rounding
      and not floor;
    * the DC bin 0 is dropped and bins are cut at ``kmax = N // 2``: bins 1 .. N//2, i.e.
      128 bins at N = 256; the corner modes with |k| > (N/2) k_F are discarded;
    * **half-plane weights**: every rfft mode has weight 2 except the ky = 0 column and, for
      even N, the ky = N/2 column, which have weight 1. Because those two columns hold all
      kx (positive and negative), this counts every mode of the *full* N x N FFT plane
      exactly once (self-conjugate modes included, each once);
    * the bin's k is the weight-averaged |k| of its modes (returned by the authors in units
      of k_F; ``evaluate.plot_ps_samples`` multiplies by 2 pi / 25), and P the
      weight-averaged ``P_mode``.

    Their code works in float32 on torch and averages over a batch before binning; here the
    same binning is applied per map, in float64.

``convention="pylians"``: ``Pk_library.Pk_plane(delta, BoxSize, MAS='None')``
    Followed from Pylians3, ``library/Pk_library/Pk_library.pyx``, class ``Pk_plane``:

    * loop over the rfft half plane kxx = 0 .. N-1 (kx = kxx, or kxx - N when kxx > N//2),
      kyy = 0 .. N//2. On the ky = 0 column and, for even N, the ky = N/2 (Nyquist) column it
      skips kx < 0, because ``delta(-k) = conj(delta(k))`` there; kx = 0 and kx = +N/2 are
      kept. Every *independent* mode is therefore counted exactly once with weight 1,
      including the four self-conjugate modes (0,0), (N/2,0), (0,N/2), (N/2,N/2) (Pylians
      checks the total against (N^2 - 4)/2 + 4). Compared with the paper's full-plane
      counting, a self-conjugate mode therefore weighs twice as much relative to the others;
    * **floor binning**: ``k_index = int(sqrt(kx^2 + ky^2))``, bins 0 .. kmax with
      ``kmax = int(sqrt(2) * (N//2))``; the DC bin 0 is dropped, leaving bins 1 .. kmax
      (181 at N = 256, up to the (N/2, N/2) corner). No bin in that range is ever empty for
      N >= 2 (checked for N <= 1024), so Pylians' ``Pk/Nmodes`` never divides by zero and
      no bin is dropped;
    * k per bin = mean |k| of its counted modes times k_F; P = mean |delta_k|^2 times
      ``(BoxSize / N^2)^2``, i.e. the normalisation above. ``MAS='None'`` applies no
      mass-assignment correction. Pylians FFTs in float32; here float64.

The bin layout of a grid size is computed once per (N, convention) and cached; a stack of
maps is binned with a single ``np.bincount`` per chunk of maps.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

#: Conventions understood by :func:`power_spectrum`.
CONVENTIONS = ("paper", "pylians")

# Maps per chunk: bounds the complex128 FFT buffer to ~40 MB at N = 256.
_CHUNK_ELEMENTS = 2**21


def _isqrt_floor(q):
    """Exact floor(sqrt(q)) for an array of non-negative integers."""
    r = np.floor(np.sqrt(q.astype(np.float64))).astype(np.int64)
    r -= (r * r > q).astype(np.int64)
    r += ((r + 1) * (r + 1) <= q).astype(np.int64)
    return r


@lru_cache(maxsize=32)
def _binning(n: int, convention: str):
    """Bin layout of the rfft2 plane of an n x n map.

    Returns ``(bins, weights, counts, k_mean, nbins)``, flattened over the rfft plane of shape
    ``(n, n//2 + 1)``: ``bins`` the 0-based bin of each mode (``nbins`` for a discarded mode),
    ``weights`` its weight (0 when discarded), ``counts`` the summed weight per bin, ``k_mean``
    the weight-averaged |k| per bin in units of k_F. Arrays are read-only (they are cached).
    """
    half = n // 2
    kx = np.arange(n, dtype=np.int64)
    kx = np.where(kx > half, kx - n, kx)  # +N/2 stays positive, as in both references
    ky = np.arange(half + 1, dtype=np.int64)
    q = kx[:, None] ** 2 + ky[None, :] ** 2  # |k|^2 / k_F^2, exact integers
    kmag = np.sqrt(q.astype(np.float64))
    floor_k = _isqrt_floor(q)
    even = n % 2 == 0

    if convention == "paper":
        nbins = half
        w = np.full(q.shape, 2.0)
        w[:, 0] = 1.0
        if even:
            w[:, -1] = 1.0
        b = floor_k + (floor_k * floor_k < q)  # exact ceil(sqrt(q))
        keep = (b >= 1) & (b <= nbins)
    elif convention == "pylians":
        nbins = math.isqrt(2 * half * half)
        w = np.ones(q.shape)
        special = np.zeros(half + 1, dtype=bool)
        special[0] = True
        if even:
            special[half] = True
        w[(kx[:, None] < 0) & special[None, :]] = 0.0  # conjugates of counted modes
        b = floor_k
        keep = (b >= 1) & (w > 0)
    else:  # pragma: no cover - checked by the caller
        raise ValueError(convention)

    bins = np.where(keep, b - 1, nbins).ravel()
    weights = np.where(keep, w, 0.0).ravel()
    counts = np.bincount(bins, weights=weights, minlength=nbins + 1)[:nbins]
    ksum = np.bincount(bins, weights=weights * kmag.ravel(), minlength=nbins + 1)[:nbins]
    k_mean = ksum / counts
    for a in (bins, weights, counts, k_mean):
        a.setflags(write=False)
    return bins, weights, counts, k_mean, nbins


def power_spectrum(field, box_size=25.0, convention="paper"):
    """Azimuthally binned power spectrum of one map or of a stack of maps.

    Args:
        field:      Positive density map(s), array-like of shape (N, N) or (..., N, N), float32
                    or float64 (computed in float64). Each map is turned into its overdensity
                    ``field / mean(field) - 1`` with its own mean, which must be finite and > 0.
                    A stack is processed vectorised, map by map independently.
        box_size:   Side of the periodic box in Mpc/h (CAMELS: 25). Sets the fundamental mode
                    ``k_F = 2 pi / box_size`` and the normalisation ``L^2 / N^4``; must be
                    finite and > 0.
        convention: Binning, one of ``"paper"`` (Mudur et al. 2023: ceil(|k|/k_F) bins
                    1..N/2, every mode of the full FFT plane counted once) or ``"pylians"``
                    (Pylians3 ``Pk_plane``: floor(|k|/k_F) bins 1..int(sqrt(2) N/2), every
                    independent mode counted once). See the module docstring.

    Returns:
        (k, P): ``k`` of shape (nbins,) in h/Mpc, the mean |k| of the modes in each bin;
        ``P`` of shape (..., nbins) in (Mpc/h)^2 (the leading shape of ``field``).
        nbins = N//2 for "paper" (128 at N = 256) and int(sqrt(2) (N//2)) for "pylians"
        (181 at N = 256).

    Raises:
        ValueError: for an unknown convention, a non-positive box size, input that is not a
            (stack of) square 2D map(s) with N >= 2, complex input, or a map whose mean is
            <= 0 or not finite.
    """
    if convention not in CONVENTIONS:
        raise ValueError(
            f"unknown convention {convention!r}; allowed conventions are "
            + ", ".join(repr(c) for c in CONVENTIONS)
        )
    try:
        box = float(box_size)
    except (TypeError, ValueError):
        raise ValueError(f"box_size must be a positive number, got {box_size!r}") from None
    if not (math.isfinite(box) and box > 0):
        raise ValueError(f"box_size must be finite and > 0, got {box_size!r}")

    arr = np.asarray(field)
    if arr.ndim < 2:
        raise ValueError(
            f"field must be a 2D map of shape (N, N) or a stack (..., N, N); got shape {arr.shape}"
        )
    if arr.shape[-1] != arr.shape[-2]:
        raise ValueError(
            f"field must be square in its last two axes (N, N); got shape {arr.shape}"
        )
    n = arr.shape[-1]
    if n < 2:
        raise ValueError(f"maps must be at least 2 x 2 pixels; got shape {arr.shape}")
    if np.iscomplexobj(arr) or not (
        np.issubdtype(arr.dtype, np.floating)
        or np.issubdtype(arr.dtype, np.integer)
        or arr.dtype == np.bool_
    ):
        raise ValueError(f"field must be a real-valued numeric array; got dtype {arr.dtype}")

    lead = arr.shape[:-2]
    maps = arr.reshape((-1, n, n))
    m_total = maps.shape[0]

    bins, weights, counts, k_mean, nbins = _binning(n, convention)
    k = k_mean * (2.0 * np.pi / box)
    norm = box**2 / float(n) ** 4
    out = np.empty((m_total, nbins), dtype=np.float64)

    chunk = max(1, _CHUNK_ELEMENTS // (n * n))
    nmodes = bins.size
    for start in range(0, m_total, chunk):
        block = np.asarray(maps[start : start + chunk], dtype=np.float64)
        m = block.shape[0]
        mean = block.mean(axis=(-2, -1))
        bad = ~(np.isfinite(mean) & (mean > 0))
        if bad.any():
            i = start + int(np.flatnonzero(bad)[0])
            raise ValueError(
                f"map {i} of the input has mean {mean[bad][0]!r}; the mean of every map must "
                "be finite and > 0 to form the overdensity field / mean - 1"
            )
        delta = block / mean[:, None, None] - 1.0
        fk = np.fft.rfft2(delta)
        p_mode = (fk.real**2 + fk.imag**2).reshape(m, nmodes)
        ids = (np.arange(m, dtype=np.int64)[:, None] * (nbins + 1) + bins[None, :]).ravel()
        sums = np.bincount(
            ids, weights=(p_mode * weights[None, :]).ravel(), minlength=m * (nbins + 1)
        ).reshape(m, nbins + 1)[:, :nbins]
        out[start : start + m] = sums / counts * norm

    return k, out.reshape(lead + (nbins,))
