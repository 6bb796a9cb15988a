"""A small particle-mesh (PM) N-body solver that makes CAMELS-like CDM maps with a cosmic web.

This is the generator behind the particle-mesh maps of :mod:`cosmodiff.synthetic`. It is a
deliberately small FastPM-style code (Feng et al. 2016, arXiv:1603.00476), pure numpy:

1. **Initial conditions (2LPT).** A Gaussian linear density field delta_0(q) is drawn on the
   n_particles^3 Lagrangian grid from the *linear* P(k) at z = 0 (pyccl Eisenstein-Hu via
   :func:`cosmodiff.cosmology.matter_power`), white noise from
   ``numpy.random.default_rng(seed)``. Particles are displaced to a_start with second-order
   Lagrangian perturbation theory::

       x = q + D1 Psi1 + D2 Psi2,        Psi1 = -grad inv-lap delta_0,   Psi2 = grad phi2,
       lap phi2 = sum_{i<j} [phi1_ii phi1_jj - phi1_ij^2],   lap phi1 = delta_0,
       D2 = -3/7 D1^2 Omega_m(a)^(-1/143),                 f2 = 2 Omega_m(a)^(6/11),

   i.e. the initial density is delta_0 scaled by D(a_start) (plus its second-order
   correction). The realisation depends on n_particles (the white noise is drawn on the
   particle lattice): the same seed at 32^3 and 128^3 gives different large-scale modes. 2LPT rather than Zel'dovich because with a_start = 0.1 and a 25 Mpc/h box
   the grid scale is already mildly nonlinear at a_start; 2LPT cuts the transients.

2. **Time integration.** Units H0 = 1, comoving x in Mpc/h, canonical momentum
   p = a^2 dx/dt = a^3 E dx/da (E = H/H0). The equations of motion are::

       dx/da = p / (a^3 E),     dp/da = -grad phi / (a E),     lap phi = 1.5 Omega_m delta / a.

   Linear theory: x = q + D Psi0, so p = a^3 E (dD/da) Psi0 = a^2 E f D Psi0 = G_p(a) Psi0
   with G_p(a) = a^2 E f D. The growth equation d(a^3 E dD/da)/da = 1.5 Omega_m D / (a^2 E)
   gives dG_p/da = 1.5 Omega_m D / (a^2 E). Write the force as -grad phi = 1.5 Omega_m F / a
   with F = -grad inv-lap delta (computed on the mesh). If delta grows linearly over a step,
   F(a) = F(a_k) D(a) / D(a_k), hence the FastPM kick::

       dp = int -grad phi/(a E) da = F(a_k)/D(a_k) int 1.5 Omega_m D/(a^2 E) da
          = F(a_k) [G_p(a1) - G_p(a0)] / D(a_k)          (the 1.5 Omega_m cancels)

   and, with p = G_p Psi0 constant along the step in Psi0, the FastPM drift::

       dx = p [D(a1) - D(a0)] / G_p(a_mid).

   Both are exact in linear theory, so large scales grow as D(a) with any step count. The
   scheme is kick-drift-kick with **steps linear in a** from a_start to 1 and half steps at
   the arithmetic midpoints; the two half kicks between drifts use the same force.

3. **Forces.** Cloud-in-cell (CIC) mass assignment onto an n_mesh^3 periodic mesh (with
   ``np.bincount``), FFT, F_k = i k delta_k / k^2 (spectral gradient, Nyquist planes of the
   gradient zeroed), inverse FFT, CIC interpolation back to the particles. The CIC window
   W(k) = prod_i sinc^2(k_i d / 2) **is deconvolved twice** (once for the assignment, once
   for the interpolation, as in Gadget-2's PM): without it the fundamental mode of a 64^3
   mesh grows 0.4% too little in power (3% on 32^3); with it a plane wave along an axis grows
   as D(a) to 1e-5 and the 2D maps barely change (2.7% vs 2.4% empty pixels at 128^3).
   The Lagrangian lattice is offset half a mesh cell from the mesh points
   (:func:`lattice_offset`): a particle sitting exactly on a mesh point sits on the kinks of
   the CIC kernel and responds to small displacements non-linearly, which mixes modes at
   early times. Gravity is sourced by the total matter Omega_m (all particles trace the total
   matter); the maps carry the CDM mass only (see below).

4. **Maps.** Each particle carries the CDM mass rho_crit (Omega_m - Omega_b) L^3 / N_p. For
   each of the 3 axes the box is cut into ``box_size / slab`` slabs along that axis (a
   particle belongs to the slab that holds its coordinate: an exact partition of the mass),
   and the particles of each slab are deposited with a periodic 2D CIC onto
   resolution x resolution pixels and divided by the pixel area -> surface density in
   (Msun/h)/(Mpc/h)^2. Mass is conserved exactly, so the mean of the maps equals
   :func:`cosmodiff.cosmology.mean_surface_density` and the 5 maps of one axis sum to the
   column density of the full box.

   **Map order and orientation:** axis-major, ``maps[5 * axis + slab]``: axis 0 slabs 0..4,
   then axis 1 slabs 0..4, then axis 2 slabs 0..4; slab j covers [j*slab, (j+1)*slab) along
   the projection axis. The two remaining axes keep increasing order (axis 0 -> (y, z),
   axis 1 -> (x, z), axis 2 -> (x, y)); the first is the row index, the second the column.
   Pixel (i, j) is centred at ((i + 1/2) d, (j + 1/2) d), d = box_size / resolution.

Timing of :func:`simulate_maps` on 2 CPU cores (numpy only, n_steps = 10), n_mesh = n_particles:
32^3: 0.08 s, 64^3: 0.65 s, 128^3: 8 s (the default), for 64^2 or 256^2 pixels alike (the
projection takes 0.3 s at 128^3). At 128^3 the time splits into CIC interpolation (~35%), CIC
weights and deposit (~30%), FFTs (~15%) and the 2LPT initial conditions (~20%).
"""

from __future__ import annotations

import numpy as np

from .cosmology import (
    BOX_SIZE,
    OMEGA_B,
    RHO_CRIT,
    SLAB_THICKNESS,
    growth,
    matter_power,
)

__all__ = [
    "cic_density",
    "evolve",
    "initial_conditions",
    "lattice_offset",
    "mesh_power",
    "particle_mass",
    "project_slabs",
    "run_pm",
    "simulate_maps",
]


# ----------------------------------------------------------------------------------------
# input validation


def _positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        # ValueError (not TypeError): one exception type for every bad argument value
        raise ValueError(f"{name} must be a positive integer, got {value!r}")  # noqa: TRY004
    if value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value}")
    return int(value)


def _check_cosmology(omega_m, sigma_8):
    omega_m = float(omega_m)
    sigma_8 = float(sigma_8)
    if not np.isfinite(omega_m) or omega_m <= OMEGA_B:
        raise ValueError(f"omega_m must exceed Omega_b = {OMEGA_B} (a CDM density > 0), got {omega_m}")
    if omega_m > 1.0:
        raise ValueError(f"omega_m must be at most 1 (flat LCDM with Omega_Lambda >= 0), got {omega_m}")
    if not np.isfinite(sigma_8) or sigma_8 <= 0:
        raise ValueError(f"sigma_8 must be positive and finite, got {sigma_8}")
    return omega_m, sigma_8


def _check_box(box_size):
    box_size = float(box_size)
    if not np.isfinite(box_size) or box_size <= 0:
        raise ValueError(f"box_size must be a positive length in Mpc/h, got {box_size}")
    return box_size


def _check_pm_args(n_particles, n_mesh, n_steps, a_start, box_size):
    n_particles = _positive_int("n_particles", n_particles)
    n_mesh = _positive_int("n_mesh", n_mesh)
    n_steps = _positive_int("n_steps", n_steps)
    a_start = float(a_start)
    if not (np.isfinite(a_start) and 0.0 < a_start < 1.0):
        raise ValueError(f"a_start must lie in (0, 1) (the run ends at a = 1), got {a_start}")
    return n_particles, n_mesh, n_steps, a_start, _check_box(box_size)


def _n_slabs(box_size, slab):
    slab = float(slab)
    if not np.isfinite(slab) or slab <= 0:
        raise ValueError(f"slab must be a positive thickness in Mpc/h, got {slab}")
    n = box_size / slab
    n_round = round(n)
    if n_round < 1 or abs(n - n_round) > 1e-9 * max(n, 1.0):
        raise ValueError(
            f"box_size={box_size} is not divisible into slabs of thickness slab={slab} "
            f"(box_size / slab = {n:g} is not a positive integer)"
        )
    return n_round


# ----------------------------------------------------------------------------------------
# mesh helpers


def _kvectors(n, box_size, real_last=True):
    """1D wavenumbers (h/Mpc) of an n^3 FFT grid: (kx, ky, kz) broadcastable, kz rfft-sized."""
    kf = 2.0 * np.pi / box_size
    k = np.fft.fftfreq(n, d=1.0 / n) * kf
    kz = np.fft.rfftfreq(n, d=1.0 / n) * kf if real_last else k
    return k[:, None, None], k[None, :, None], kz[None, None, :]


def _grad_kvectors(n, box_size):
    """Like :func:`_kvectors` but with the Nyquist entries zeroed (for real-valued gradients)."""
    kx, ky, kz = (v.copy() for v in _kvectors(n, box_size))
    if n % 2 == 0:
        kx[n // 2] = 0.0
        ky[:, n // 2] = 0.0
        kz[..., n // 2] = 0.0
    return kx, ky, kz


def _cic_corners(xt, n, box_size):
    """The 8 CIC corners of each particle on a periodic n^3 mesh: [(flat index, weight)] * 8.

    ``xt`` holds the positions component-major, shape (3, n_p) (contiguous per axis: faster
    than (n_p, 3) for every per-axis operation). Mesh point i sits at x_i = i * box_size / n;
    the particle lattice of :func:`initial_conditions` is offset to lie between mesh points.
    Indices are int64 (bincount's native type), weights float32.
    """
    scale = n / box_size
    idx, frac = [], []
    for c in range(3):
        u = xt[c] * scale
        i0 = np.floor(u)
        d = (u - i0).astype(np.float32)
        i0 = i0.astype(np.int64)
        i0 %= n  # u may round up to n, or be negative for unwrapped input
        i1 = i0 + 1
        i1[i1 == n] = 0
        stride = n ** (2 - c)
        if stride != 1:
            i0 *= stride
            i1 *= stride
        idx.append((i0, i1))
        frac.append((1.0 - d, d))
    corners = []
    for a in (0, 1):
        for b in (0, 1):
            fxy = idx[0][a] + idx[1][b]
            wxy = frac[0][a] * frac[1][b]
            for c in (0, 1):
                corners.append((fxy + idx[2][c], wxy * frac[2][c]))
    return corners


def _deposit(corners, n):
    """Particle counts per cell (flat, float64) from CIC corners."""
    size = n**3
    rho = np.bincount(corners[0][0], weights=corners[0][1], minlength=size)
    for flat, w in corners[1:]:
        rho += np.bincount(flat, weights=w, minlength=size)
    return rho


def cic_density(positions, n_mesh, box_size=BOX_SIZE):
    """Density contrast delta (n_mesh^3, float64) of equal-mass particles by periodic CIC.

    Args:
        positions:  (n_p, 3) comoving positions in Mpc/h (any real values; wrapped periodically).
        n_mesh:     Mesh cells per side.
        box_size:   Side of the periodic box in Mpc/h.
    """
    n_mesh = _positive_int("n_mesh", n_mesh)
    xt = np.ascontiguousarray(np.asarray(positions, dtype=np.float64).T)
    return _density_contrast(_deposit(_cic_corners(xt, n_mesh, box_size), n_mesh), xt.shape[1], n_mesh)


def _density_contrast(counts, n_p, n):
    counts *= n**3 / n_p
    counts -= 1.0
    return counts.reshape(n, n, n)


def _cic_interpolate(fields, corners):
    """CIC-interpolate each flattened mesh in ``fields`` to the particles -> (len(fields), n_p)."""
    out = np.zeros((len(fields), len(corners[0][0])), dtype=np.float32)
    for flat, w in corners:
        for c, f in enumerate(fields):
            out[c] += f[flat] * w
    return out


#: Power of the CIC window W(k) = prod_i sinc^2(k_i d / 2) divided out of the force. 2 makes
#: the linear growth of the fundamental mode exact to 0.1% on a 64^3 mesh (0.4% without);
#: the maps' small-scale statistics barely change (2.7% vs 2.4% empty pixels at 128^3).
_DECONVOLVE = 2


def _force_meshes(delta, box_size, deconvolve=None):
    """F = -grad inv-lap delta on the mesh (3 flat float32 arrays); F_k = i k delta_k / k^2.

    ``deconvolve`` = power of the CIC window W(k) = prod_i sinc^2(k_i d / 2) divided out
    (2: once for the mass assignment, once for the force interpolation, as in Gadget-2's PM).
    """
    deconvolve = _DECONVOLVE if deconvolve is None else deconvolve
    n = delta.shape[0]
    dk = np.fft.rfftn(delta)
    kx, ky, kz = _kvectors(n, box_size)
    k2 = kx**2 + ky**2 + kz**2
    k2[0, 0, 0] = 1.0
    dk /= k2
    if deconvolve:
        h = 0.5 * box_size / n / np.pi  # numpy sinc(x) = sin(pi x)/(pi x)
        w = (np.sinc(kx * h) * np.sinc(ky * h) * np.sinc(kz * h)) ** 2
        dk /= w**deconvolve
    dk[0, 0, 0] = 0.0
    gx, gy, gz = _grad_kvectors(n, box_size)
    return [np.fft.irfftn(1j * g * dk, s=delta.shape, axes=(0, 1, 2)).astype(np.float32).reshape(-1) for g in (gx, gy, gz)]


def mesh_power(positions, n_mesh, box_size=BOX_SIZE, n_bins=None):
    """Spherically averaged 3D power spectrum of the CIC density contrast of the particles.

    No window deconvolution and no shot-noise subtraction (use ratios at low k).

    Args:
        positions:  (n_p, 3) positions in Mpc/h.
        n_mesh:     Mesh cells per side.
        box_size:   Side of the periodic box in Mpc/h.
        n_bins:     Number of k bins; None -> one bin per integer multiple of the fundamental
                    frequency k_f = 2 pi / box_size up to the mesh Nyquist (bin m holds
                    (m - 1/2) k_f <= |k| < (m + 1/2) k_f, m = 1, 2, ...).

    Returns:
        (k, P, n_modes): mean |k| (h/Mpc), power (Mpc/h)^3 and number of modes of each bin.
    """
    delta = cic_density(positions, n_mesh, box_size)
    dk = np.fft.rfftn(delta)
    kx, ky, kz = _kvectors(n_mesh, box_size)
    kmag = np.sqrt(kx**2 + ky**2 + kz**2)
    # rfft halves: modes with 0 < kz < Nyquist stand for two modes (k and -k)
    weight = np.full(kmag.shape, 2.0)
    weight[..., 0] = 1.0
    if n_mesh % 2 == 0:
        weight[..., -1] = 1.0
    kf = 2.0 * np.pi / box_size
    p = np.abs(dk) ** 2 * box_size**3 / float(n_mesh) ** 6
    m = np.rint(kmag / kf).astype(np.int64)
    nmax = n_mesh // 2 if n_bins is None else int(n_bins)
    sel = (m >= 1) & (m <= nmax)
    nmodes = np.bincount(m[sel], weights=weight[sel], minlength=nmax + 1)[1:]
    psum = np.bincount(m[sel], weights=(weight * p)[sel], minlength=nmax + 1)[1:]
    ksum = np.bincount(m[sel], weights=(weight * kmag)[sel], minlength=nmax + 1)[1:]
    good = nmodes > 0
    return ksum[good] / nmodes[good], psum[good] / nmodes[good], nmodes[good]


# ----------------------------------------------------------------------------------------
# initial conditions


def _linear_density_k(omega_m, sigma_8, seed, n, box_size):
    """Fourier modes (rfftn layout) of the z = 0 linear density on an n^3 grid.

    numpy convention delta(x) = (1/N^3) sum_k delta_k exp(i k x): unit white noise w has
    <|w_k|^2> = N^3, so delta_k = w_k sqrt(P(k) N^3 / L^3) gives <|delta_k|^2> = N^6 P / L^3,
    i.e. P(k) = L^3 <|delta_k / N^3|^2>.
    """
    rng = np.random.default_rng(seed)
    white = rng.standard_normal((n, n, n))
    wk = np.fft.rfftn(white)
    del white
    kx, ky, kz = _kvectors(n, box_size)
    kmag = np.sqrt(kx**2 + ky**2 + kz**2)
    # P(k) on a log table, log-log interpolated (avoids 10^6 pyccl calls).
    kf = 2.0 * np.pi / box_size
    table_k = np.geomspace(kf * 0.99, kmag.max() * 1.01, 512)
    table_p = matter_power(omega_m, sigma_8, table_k, a=1.0, nonlinear=False)
    with np.errstate(divide="ignore"):
        logk = np.log(np.where(kmag > 0, kmag, kf))
    pk = np.exp(np.interp(logk, np.log(table_k), np.log(table_p)))
    pk[0, 0, 0] = 0.0
    wk *= np.sqrt(pk * n**3 / box_size**3)
    return wk


def _omega_m_of_a(omega_m, a, E):
    return omega_m * a**-3 / E**2


def lattice_offset(n_particles, n_mesh=None):
    """Offset c of the Lagrangian lattice q = (i + c) box_size / n_particles, in particle spacings.

    The CIC kernel has kinks at distances 0 and 1 cell; a particle sitting exactly on a mesh
    point responds to a small displacement like |displacement| (not linearly), which breaks
    linear theory at early times. c = 0.5 n_particles / n_mesh puts every particle halfway
    between two mesh points when n_mesh is a multiple of n_particles (c = 0.5 otherwise).
    """
    if n_mesh is not None and n_mesh % n_particles == 0:
        return 0.5 * n_particles / n_mesh
    return 0.5


def initial_conditions(
    omega_m, sigma_8, seed, n_particles=128, a_start=0.1, box_size=BOX_SIZE, lpt_order=2, n_mesh=None
):
    """Particle positions and momenta at a_start from 2LPT (or Zel'dovich) on a regular lattice.

    Args:
        omega_m:      Total matter density parameter Omega_m (gravity source).
        sigma_8:      Linear amplitude sigma_8 at z = 0.
        seed:         Seed of ``numpy.random.default_rng`` for the white noise.
        n_particles:  Particles per side; the lattice is q = (i + c) box_size / n_particles with
                      c = :func:`lattice_offset` (n_particles, n_mesh).
        a_start:      Scale factor of the initial conditions.
        box_size:     Side of the periodic box in Mpc/h.
        lpt_order:    1 = Zel'dovich, 2 = second-order LPT (default).
        n_mesh:       PM mesh cells per side the particles will be evolved on (only sets the
                      lattice offset; None -> half a particle spacing).

    Returns:
        (positions, momenta): (n_particles^3, 3) float64 positions in [0, box_size) and
        canonical momenta p = a^3 E dx/da (units H0 = 1, Mpc/h).
    """
    omega_m, sigma_8 = _check_cosmology(omega_m, sigma_8)
    n = _positive_int("n_particles", n_particles)
    box_size = _check_box(box_size)
    if lpt_order not in (1, 2):
        raise ValueError(f"lpt_order must be 1 (Zel'dovich) or 2 (2LPT), got {lpt_order!r}")
    dk = _linear_density_k(omega_m, sigma_8, seed, n, box_size)
    kx, ky, kz = _kvectors(n, box_size)
    k2 = kx**2 + ky**2 + kz**2
    k2[0, 0, 0] = 1.0
    phi1 = -dk / k2  # lap phi1 = delta_0  ->  phi1_k = -delta_k / k^2
    del dk
    gx, gy, gz = _grad_kvectors(n, box_size)
    grads = (gx, gy, gz)
    # Psi1 = -grad phi1 (so that delta = -div Psi1): Psi1_k = -i k phi1_k
    psi1 = np.stack([np.fft.irfftn(-1j * g * phi1, s=(n, n, n), axes=(0, 1, 2)).reshape(-1) for g in grads], axis=1)

    # growth() takes 1D arrays (pyccl rejects 0-d input)
    D, f, E = (float(v[0]) for v in growth(omega_m, sigma_8, np.array([a_start])))
    # p = a^3 E dx/da = a^2 E (a dx/da) = a^2 E (f1 D1 Psi1 + f2 D2 Psi2)
    disp = D * psi1
    mom = (a_start**2 * E * f * D) * psi1
    del psi1
    if lpt_order == 2:
        # second derivatives phi1_ij (k_i k_j with Nyquist kept: they are real-symmetric)
        kv = _kvectors(n, box_size)
        d2 = {}
        for i in range(3):
            for j in range(i, 3):
                d2[i, j] = np.fft.irfftn(-kv[i] * kv[j] * phi1, s=(n, n, n), axes=(0, 1, 2))
        src = (
            d2[0, 0] * d2[1, 1] + d2[0, 0] * d2[2, 2] + d2[1, 1] * d2[2, 2]
            - d2[0, 1] ** 2 - d2[0, 2] ** 2 - d2[1, 2] ** 2
        )
        del d2
        sk = np.fft.rfftn(src)
        del src
        phi2 = -sk / k2
        phi2[0, 0, 0] = 0.0
        psi2 = np.stack([np.fft.irfftn(1j * g * phi2, s=(n, n, n), axes=(0, 1, 2)).reshape(-1) for g in grads], axis=1)
        om_a = _omega_m_of_a(omega_m, a_start, E)
        D2 = -3.0 / 7.0 * D**2 * om_a ** (-1.0 / 143.0)
        f2 = 2.0 * om_a ** (6.0 / 11.0)
        disp += D2 * psi2
        mom += (a_start**2 * E * f2 * D2) * psi2
        del psi2

    cell = box_size / n
    idx = np.indices((n, n, n), dtype=np.float64).reshape(3, -1).T
    positions = np.mod((idx + lattice_offset(n, n_mesh)) * cell + disp, box_size)
    return positions, mom


def particle_mass(omega_m, n_particles, box_size=BOX_SIZE):
    """CDM mass of one particle, Msun/h: rho_crit (Omega_m - Omega_b) L^3 / n_particles^3."""
    return RHO_CRIT * (float(omega_m) - OMEGA_B) * float(box_size) ** 3 / float(n_particles) ** 3


# ----------------------------------------------------------------------------------------
# the PM run


def run_pm(
    omega_m,
    sigma_8,
    seed,
    n_particles=128,
    n_mesh=128,
    n_steps=10,
    a_start=0.1,
    box_size=BOX_SIZE,
    progress=False,
):
    """Evolve 2LPT initial conditions to a = 1 with a FastPM kick-drift-kick PM solver.

    Args:
        omega_m:      Total matter density Omega_m (sources gravity; Omega_b = 0.049 fixed).
        sigma_8:      Linear amplitude sigma_8 at z = 0 (no prior check: small values are
                      useful for linear-theory tests).
        seed:         Seed of ``numpy.random.default_rng`` for the initial white noise. The
                      realisation depends on n_particles (the noise is drawn on the lattice).
        n_particles:  Particles per side (n_particles^3 in all).
        n_mesh:       PM mesh cells per side for the force calculation.
        n_steps:      Number of kick-drift-kick steps, linear in a from a_start to 1.
        a_start:      Scale factor of the 2LPT initial conditions, in (0, 1).
        box_size:     Side of the periodic box in Mpc/h.
        progress:     Show a tqdm progress bar over the steps.

    Returns:
        positions: (n_particles^3, 3) float64 comoving positions in [0, box_size) at a = 1.
    """
    omega_m, sigma_8 = _check_cosmology(omega_m, sigma_8)
    n_particles, n_mesh, n_steps, a_start, box_size = _check_pm_args(n_particles, n_mesh, n_steps, a_start, box_size)

    x, p = initial_conditions(omega_m, sigma_8, seed, n_particles, a_start, box_size, lpt_order=2, n_mesh=n_mesh)
    return evolve(x, p, omega_m, sigma_8, n_mesh, n_steps, a_start, box_size, progress, final_kick=False)


def evolve(
    x, p, omega_m, sigma_8, n_mesh=128, n_steps=10, a_start=0.1, box_size=BOX_SIZE, progress=False, final_kick=True
):
    """FastPM kick-drift-kick from (x, p) at a_start to a = 1 (updates x and p in place).

    Args:
        x:          (n_p, 3) float64 positions in Mpc/h at a_start.
        p:          (n_p, 3) float64 momenta p = a^3 E dx/da at a_start (H0 = 1).
        omega_m:    Total matter density Omega_m.
        sigma_8:    sigma_8 (only selects the cached pyccl cosmology; growth does not depend on it).
        n_mesh:     PM mesh cells per side.
        n_steps:    Kick-drift-kick steps, linear in a.
        a_start:    Scale factor of (x, p).
        box_size:   Side of the periodic box in Mpc/h.
        progress:   Show a tqdm progress bar.
        final_kick: Compute the force at a = 1 for the last half kick. False saves one force
                    evaluation when only the positions are wanted (p then stays at the last
                    half step).

    Returns:
        x at a = 1, wrapped into [0, box_size).
    """
    a = np.linspace(a_start, 1.0, n_steps + 1)
    a_mid = 0.5 * (a[:-1] + a[1:])
    D, f, E = growth(omega_m, sigma_8, a)
    Dm, fm, Em = growth(omega_m, sigma_8, a_mid)
    Gp = a**2 * E * f * D  # G_p = a^3 E dD/da: p of a linear mode per unit Psi0
    Gpm = a_mid**2 * Em * fm * Dm

    n_p = x.shape[0]
    # component-major working copies: (3, n_p), contiguous per axis
    xt = np.ascontiguousarray(x.T)
    pt = np.ascontiguousarray(p.T)

    def force():
        corners = _cic_corners(xt, n_mesh, box_size)
        delta = _density_contrast(_deposit(corners, n_mesh), n_p, n_mesh)
        return _cic_interpolate(_force_meshes(delta, box_size), corners)

    steps = range(n_steps)
    if progress:
        from tqdm.auto import tqdm

        steps = tqdm(steps, desc="PM steps", unit="step")

    F = force()
    for i in steps:
        # kick a_i -> a_{i+1/2} with the force at a_i
        pt += F * ((Gpm[i] - Gp[i]) / D[i])
        # drift a_i -> a_{i+1} with p at a_{i+1/2}
        xt += pt * ((D[i + 1] - D[i]) / Gpm[i])
        np.mod(xt, box_size, out=xt)
        if final_kick or i < n_steps - 1:
            # force at a_{i+1}, kick a_{i+1/2} -> a_{i+1}
            F = force()
            pt += F * ((Gp[i + 1] - Gpm[i]) / D[i + 1])
    x[...] = xt.T
    p[...] = pt.T
    # guard against x == box_size after the float mod of tiny negative numbers
    x[x >= box_size] -= box_size
    return x


# ----------------------------------------------------------------------------------------
# projection


def project_slabs(positions, particle_mass, resolution, box_size=BOX_SIZE, slab=SLAB_THICKNESS):
    """Project particles into slab surface-density maps along the 3 axes (periodic 2D CIC).

    Args:
        positions:      (n_p, 3) comoving positions in Mpc/h (wrapped into [0, box_size)).
        particle_mass:  Mass of each particle in Msun/h (a scalar, or an (n_p,) array).
        resolution:     Pixels per side of each map.
        box_size:       Side of the periodic box in Mpc/h.
        slab:           Slab thickness in Mpc/h; box_size / slab must be an integer n_slab.

    Returns:
        (3 * n_slab, resolution, resolution) float64 surface density in (Msun/h)/(Mpc/h)^2,
        axis-major: ``maps[n_slab * axis + j]`` is slab j along axis ``axis`` (15 maps for
        the CAMELS 25 Mpc/h box with 5 Mpc/h slabs). Rows/columns follow the two remaining
        axes in increasing order; pixel (i, j) is centred at ((i + 1/2) d, (j + 1/2) d).
    """
    resolution = _positive_int("resolution", resolution)
    box_size = _check_box(box_size)
    n_slab = _n_slabs(box_size, slab)
    positions = np.asarray(positions, dtype=np.float64)
    if positions.ndim != 2 or positions.shape[1] != 3:
        raise ValueError(f"positions must have shape (n_particles, 3), got {positions.shape}")
    mass = np.asarray(particle_mass, dtype=np.float64)
    if mass.ndim == 0:
        scalar_mass = float(mass)
        weights_mass = None
    else:
        if mass.shape != (len(positions),):
            raise ValueError(f"particle_mass must be a scalar or have shape ({len(positions)},), got {mass.shape}")
        scalar_mass = 1.0
        weights_mass = mass
    pos = np.mod(positions, box_size)
    res = resolution
    pix = box_size / res
    npix = res * res
    size = n_slab * npix
    maps = np.empty((3, n_slab, res, res), dtype=np.float64)
    # slab index of each particle along each axis (exact partition of the mass)
    for axis in range(3):
        s = np.minimum((pos[:, axis] * (n_slab / box_size)).astype(np.int64), n_slab - 1)
        u_ax, v_ax = [ax for ax in range(3) if ax != axis]
        # pixel centres at (i + 1/2) pix: shift by half a pixel before flooring
        u = pos[:, u_ax] / pix - 0.5
        v = pos[:, v_ax] / pix - 0.5
        iu = np.floor(u)
        iv = np.floor(v)
        du = u - iu
        dv = v - iv
        iu = iu.astype(np.int64) % res
        iv = iv.astype(np.int64) % res
        iu1 = (iu + 1) % res
        iv1 = (iv + 1) % res
        base = s * npix
        out = np.zeros(size, dtype=np.float64)
        for ii, wu in ((iu, 1.0 - du), (iu1, du)):
            row = base + ii * res
            for jj, wv in ((iv, 1.0 - dv), (iv1, dv)):
                w = wu * wv
                if weights_mass is not None:
                    w = w * weights_mass
                out += np.bincount(row + jj, weights=w, minlength=size)
        maps[axis] = out.reshape(n_slab, res, res)
    maps *= scalar_mass / pix**2
    return maps.reshape(3 * n_slab, res, res)


def simulate_maps(
    omega_m,
    sigma_8,
    seed,
    resolution=256,
    n_particles=128,
    n_mesh=128,
    n_steps=10,
    a_start=0.1,
    box_size=BOX_SIZE,
    progress=False,
):
    """CAMELS-like CDM surface-density maps of one particle-mesh simulation.

    Runs :func:`run_pm` and projects the particles at z = 0 with :func:`project_slabs` into
    5 Mpc/h slabs along each axis (15 maps for the 25 Mpc/h box, axis-major order).

    Args:
        omega_m:      Total matter density Omega_m (gravity); the maps hold the CDM mass,
                      rho_crit (Omega_m - Omega_b) per unit volume on average.
        sigma_8:      Linear amplitude sigma_8 at z = 0.
        seed:         Seed of ``numpy.random.default_rng`` for the initial conditions.
        resolution:   Pixels per side of each map (256 in CMD).
        n_particles:  Particles per side of the simulation.
        n_mesh:       PM mesh cells per side.
        n_steps:      Kick-drift-kick steps, linear in a from a_start to 1.
        a_start:      Scale factor of the 2LPT initial conditions.
        box_size:     Side of the periodic box in Mpc/h; must be a multiple of the 5 Mpc/h
                      slab thickness.
        progress:     Show a tqdm progress bar over the PM steps.

    Returns:
        float32 array (3 * box_size / 5, resolution, resolution) -- (15, resolution,
        resolution) for the CAMELS box -- in (Msun/h)/(Mpc/h)^2. ``maps[5 * axis + slab]``.

    Timing (2 CPU cores, numpy): 0.08 s at 32^3, 0.65 s at 64^3, ~8 s at the default 128^3.
    At the default size about 2.6-2.7% of the pixels are empty (CMD maps: ~3%).
    """
    omega_m, sigma_8 = _check_cosmology(omega_m, sigma_8)
    resolution = _positive_int("resolution", resolution)
    n_particles, n_mesh, n_steps, a_start, box_size = _check_pm_args(n_particles, n_mesh, n_steps, a_start, box_size)
    _n_slabs(box_size, SLAB_THICKNESS)  # validate before the (expensive) run
    pos = run_pm(omega_m, sigma_8, seed, n_particles, n_mesh, n_steps, a_start, box_size, progress)
    maps = project_slabs(pos, particle_mass(omega_m, n_particles, box_size), resolution, box_size, SLAB_THICKNESS)
    return maps.astype(np.float32)
