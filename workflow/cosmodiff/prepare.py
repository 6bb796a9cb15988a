"""From CMD maps to training sets: log transform, split by simulation, normalisation,
periodic downsampling, HDF5.

The raw maps are read through a memory map one block of simulations at a time, so preparing
the 15,000 CMD maps (3.9 GB) needs a few hundred MB of RAM at most.

HDF5 layout of one prepared file (one file per resolution)::

    /<split>/maps     float32 (n, N, N)  log10 of the surface density, (Msun/h)/(Mpc/h)^2
    /<split>/params   float64 (n, 6)     CAMELS parameters of each map's simulation
    /<split>/sim      int64   (n,)       simulation index (map i of the raw file: i // 15)
    attrs: box_size, units, param_names, resolution, native_resolution, log_floor,
           downsample, split fractions and simulation ranges, normalisation constants of the
           training split (norm_min, norm_max, norm_mean, norm_std), source (JSON)

with <split> in train / val / test.
"""

from __future__ import annotations

import contextlib
import json
import logging
from pathlib import Path

import numpy as np

from . import camels
from .cosmology import BOX_SIZE, MAP_UNITS, MAPS_PER_SIM, PARAM_NAMES
from .files import atomic_output

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")

#: Default floor of the surface density before log10, (Msun/h)/(Mpc/h)^2. CMD Mcdm maps never
#: go below 10^9.42, so the floor leaves real data untouched; it only catches empty pixels of
#: particle-based synthetic maps (a particle of the default 64^3 run spread over one 256^2
#: pixel is ~4e11), which it places clearly below every occupied pixel.
DEFAULT_LOG_FLOOR = 1.0e9

DOWNSAMPLE_METHODS = ("bicubic", "area")


def log_transform(maps, floor=DEFAULT_LOG_FLOOR):
    """log10(max(map, floor)) in float32.

    maps:  surface densities in (Msun/h)/(Mpc/h)^2, any shape.
    floor: smallest value kept before the logarithm (empty pixels), > 0.
    """
    if not floor > 0:
        raise ValueError(f"log floor must be positive, got {floor}")
    return np.log10(np.maximum(np.asarray(maps, dtype=np.float64), floor)).astype(np.float32)


def split_simulations(n_sims, fractions):
    """Contiguous simulation ranges per split, in index order (as the authors did).

    n_sims:    number of simulations.
    fractions: mapping train/val/test -> fraction; they must sum to 1. With 1000 simulations
               and 0.7/0.15/0.15: train 0-699, val 700-849, test 850-999.
    Returns {split: (first, stop)} with stop exclusive.
    """
    missing = set(SPLITS) - set(fractions)
    if missing:
        raise ValueError(f"split fractions miss {sorted(missing)}")
    total = sum(fractions[s] for s in SPLITS)
    if abs(total - 1) > 1e-6:
        raise ValueError(f"split fractions must sum to 1, got {total}")
    bounds = np.rint(np.cumsum([0] + [fractions[s] * n_sims for s in SPLITS])).astype(int)
    out = {s: (int(bounds[i]), int(bounds[i + 1])) for i, s in enumerate(SPLITS)}
    for s, (a, b) in out.items():
        if b <= a:
            raise ValueError(f"split {s!r} gets no simulation out of {n_sims}; raise n_sims or its fraction")
    return out


def downsample(log_maps, resolution, method="bicubic"):
    """Periodic downsampling of (log) maps from N x N to resolution x resolution.

    log_maps:   array (..., N, N); N must be a multiple of ``resolution``.
    resolution: output pixels per side.
    method:     "bicubic" - bicubic with antialiasing (the authors' choice, as in
                torchvision's resize), applied to a circularly padded copy so that the kernel
                wraps around the periodic box instead of clamping at the edges;
                "area" - the mean over each block of pixels (exactly periodic).
    Both are linear in the input and commute with shifts by one output pixel.
    """
    import torch

    x = np.asarray(log_maps, dtype=np.float32)
    n = x.shape[-1]
    if x.shape[-2] != n:
        raise ValueError(f"maps must be square, got {x.shape[-2:]}")
    if resolution == n:
        return x.copy()
    lead = x.shape[:-2]
    y = downsample_torch(torch.from_numpy(x.reshape(-1, 1, n, n)), resolution, method)
    return y.reshape(*lead, resolution, resolution).numpy()


def downsample_torch(t, resolution, method="bicubic"):
    """:func:`downsample` on a torch tensor (B, 1, N, N), differentiable."""
    import torch.nn.functional as F

    n = t.shape[-1]
    if resolution > n or n % resolution:
        raise ValueError(f"cannot downsample {n} pixels to {resolution}: it must divide {n}")
    if method not in DOWNSAMPLE_METHODS:
        raise ValueError(f"unknown downsample method {method!r}; choose one of {DOWNSAMPLE_METHODS}")
    factor = n // resolution
    if method == "area":
        return F.avg_pool2d(t, factor)
    # The antialiased bicubic kernel spans 2 * factor input pixels on each side; pad by a
    # whole number of output pixels so the output grid stays aligned, then crop.
    pad_out = 3
    pad = pad_out * factor
    t = F.pad(t, (pad, pad, pad, pad), mode="circular")
    y = F.interpolate(t, size=(resolution + 2 * pad_out,) * 2, mode="bicubic", antialias=True, align_corners=False)
    return y[..., pad_out:-pad_out, pad_out:-pad_out]


class _RunningStats:
    """min, max, mean, std over everything passed to update(), in float64."""

    def __init__(self):
        self.n, self.s, self.s2 = 0, 0.0, 0.0
        self.lo, self.hi = np.inf, -np.inf

    def update(self, x):
        x = np.asarray(x, dtype=np.float64)
        self.n += x.size
        self.s += x.sum()
        self.s2 += np.square(x).sum()
        self.lo = min(self.lo, float(x.min()))
        self.hi = max(self.hi, float(x.max()))

    def attrs(self):
        mean = self.s / self.n
        return {
            "norm_min": self.lo,
            "norm_max": self.hi,
            "norm_mean": mean,
            "norm_std": float(np.sqrt(max(self.s2 / self.n - mean**2, 0.0))),
        }


#: The keys of the config section ``prepare`` that :func:`prepare_configured` reads (the
#: rule leaves out low_resolution, which only names an output).
CONFIG_KEYS = ("log_floor", "split", "downsample", "norm_range", "max_nonpositive_fraction")


def prepare_configured(maps_path, params_path, outputs, section, native_resolution, source=None):
    """:func:`prepare_dataset` with the options of the config section ``prepare``
    (:data:`CONFIG_KEYS`; other keys are ignored) and the raw maps' resolution
    (config data.resolution)."""
    return prepare_dataset(maps_path, params_path, outputs, section["split"], log_floor=section["log_floor"],
                           method=section["downsample"], source=source, norm_range=section["norm_range"],
                           native_resolution=native_resolution,
                           max_nonpositive_fraction=section["max_nonpositive_fraction"])


def prepare_dataset(
    maps_path,
    params_path,
    outputs,
    fractions,
    log_floor=DEFAULT_LOG_FLOOR,
    method="bicubic",
    source=None,
    block_sims=20,
    progress=True,
    norm_range=None,
    native_resolution=None,
    max_nonpositive_fraction=0.01,
):
    """Prepare HDF5 training sets at several resolutions from CMD-layout files.

    maps_path:   the maps .npy (n_sims * 15, N, N), read through a memory map.
    params_path: the parameter table (n_sims, 6).
    outputs:     mapping resolution -> output .h5 path (the native resolution and/or lower
                 ones that divide it).
    fractions:   split fractions {train, val, test}, by simulation in index order.
    log_floor:   floor before log10, (Msun/h)/(Mpc/h)^2.
    method:      downsampling method (see :func:`downsample`).
    source:      provenance dict stored as JSON in the attrs (download URL and checksum, or
                 generator settings).
    block_sims:  simulations read per block (memory: block_sims * 15 * N^2 * 8 bytes).
    progress:    show a progress bar.
    norm_range:  None (the authors': the training split's log10 range goes to [-1, 1]) or a
                 (lo, hi) pair of log10 values that go to -1 and 1 instead (see
                 :func:`check_norm_range`; a narrow range keeps every Fourier mode of the
                 normalised maps well above the diffusion's beta_0, which the variational
                 bound needs to be the likelihood).
    native_resolution: pixels per side the maps must have (config: data.resolution); None
                 takes the file's.
    max_nonpositive_fraction: largest fraction of raw pixels that may be zero or negative
                 (no surface density: floored at ``log_floor``); above it a ValueError.
    A map with a NaN or infinite pixel is a ValueError naming the map. Each output is
    written to a temporary name and renamed when complete.
    """
    if norm_range is not None:
        check_norm_range(norm_range)
    maps, params, ranges, outputs = _checked_inputs(maps_path, params_path, outputs, fractions, native_resolution)
    native = maps.shape[-1]
    # each output is built under <name>.tmp (files.atomic_output) and renamed when complete,
    # one after the other; a failure removes the temporary files not yet renamed
    with contextlib.ExitStack() as cleanup:
        files, renames = {}, {}
        for r, path in outputs.items():
            renames[r] = cleanup.enter_context(contextlib.ExitStack())
            files[r] = _create_output(renames[r], path, r, ranges, params)
        stats = {r: _RunningStats() for r in outputs}
        floored, nonpositive = _fill_outputs(files, stats, maps, len(params), ranges, block_sims, log_floor, method, maps_path,
                                            progress)
        _check_nonpositive(nonpositive / maps.size, max_nonpositive_fraction, maps_path, log_floor)
        for r, f in files.items():
            f.attrs.update(_output_attrs(r, native, ranges, floored, log_floor, method, fractions, source, stats[r], norm_range))
            renames[r].close()  # closes the file, then renames it onto outputs[r]
    return {r: str(p) for r, p in outputs.items()}


def _checked_inputs(maps_path, params_path, outputs, fractions, native_resolution):
    """(maps memmap, params, split ranges, {resolution: output Path}) after checking that the
    maps match the table and data.resolution, and that every output resolution divides the
    native one."""
    maps = camels.open_maps(maps_path)
    params = camels.read_params(params_path)
    camels.check_layout(maps, params)
    n_sims, native = len(params), maps.shape[-1]
    if native_resolution is not None and native != native_resolution:
        raise ValueError(f"{maps_path} holds {native}x{native} maps but config key 'data.resolution' is "
                         f"{native_resolution}: set data.resolution to {native}, or use maps of that size")
    ranges = split_simulations(n_sims, fractions)
    outputs = {int(r): Path(p) for r, p in outputs.items()}
    for r in outputs:
        if r > native or native % r:
            raise ValueError(f"output resolution {r} must divide the native resolution {native}")
    return maps, params, ranges, outputs


def _create_output(stack, path, r, ranges, params):
    """The HDF5 file of resolution ``r`` opened at ``path``'s temporary name in ``stack``
    (closing the stack closes it and renames it onto ``path``), with every split's datasets:
    maps (to be filled), params and sim."""
    import h5py

    n_maps = sum(b - a for a, b in ranges.values()) * MAPS_PER_SIM
    tmp = stack.enter_context(atomic_output(path, nbytes=4 * n_maps * r * r))  # float32 maps
    f = stack.enter_context(h5py.File(tmp, "w"))
    for split, (a, b) in ranges.items():
        n = (b - a) * MAPS_PER_SIM
        g = f.create_group(split)
        g.create_dataset("maps", (n, r, r), dtype="f4", chunks=(1, r, r))
        g.create_dataset("params", data=np.repeat(params[a:b], MAPS_PER_SIM, axis=0))
        g.create_dataset("sim", data=np.repeat(np.arange(a, b), MAPS_PER_SIM))
    return f


def _fill_outputs(files, stats, maps, n_sims, ranges, block_sims, log_floor, method, maps_path, progress):
    """Log-transform the maps a block of simulations at a time, downsample them into every
    file and accumulate the training split's statistics. Returns (pixels below the floor per
    split, pixels <= 0)."""
    from tqdm.auto import tqdm

    floored = dict.fromkeys(ranges, 0)  # pixels below the floor per split (empty, or a lognormal tail)
    nonpositive = 0  # pixels <= 0: no surface density at all
    bar = tqdm(total=n_sims, desc="prepare", unit="sim", disable=not progress)
    for split, (a, b) in ranges.items():
        for s0 in range(a, b, block_sims):
            s1 = min(s0 + block_sims, b)
            block = maps[s0 * MAPS_PER_SIM : s1 * MAPS_PER_SIM]
            _check_finite(block, s0 * MAPS_PER_SIM, maps_path)
            floored[split] += int(np.count_nonzero(block < log_floor))
            nonpositive += int(np.count_nonzero(block <= 0))
            logm = log_transform(block, log_floor)
            i0, i1 = (s0 - a) * MAPS_PER_SIM, (s1 - a) * MAPS_PER_SIM
            for r, f in files.items():
                out = downsample(logm, r, method)
                f[split]["maps"][i0:i1] = out
                if split == "train":
                    stats[r].update(out)
            bar.update(s1 - s0)
    bar.close()
    return floored, nonpositive


def _output_attrs(r, native, ranges, floored, log_floor, method, fractions, source, stats, norm_range):
    """The attributes of the file of resolution ``r`` (see the module docstring)."""
    attrs = {
        "box_size": BOX_SIZE,
        "units": f"log10 of {MAP_UNITS}",
        "param_names": list(PARAM_NAMES),
        "resolution": r,
        "native_resolution": native,
        "log_floor": float(log_floor),
        # fraction of native pixels below the floor, per split: the maps of a split
        # with floored pixels are no longer lognormal (no exact likelihood)
        "floored_fraction": json.dumps({
            sp: floored[sp] / max(1, (b - a) * MAPS_PER_SIM * native**2) for sp, (a, b) in ranges.items()
        }),
        "downsample": method if r != native else "none",
        "split_fractions": json.dumps({s: fractions[s] for s in SPLITS}),
        "split_sims": json.dumps(ranges),
        "source": json.dumps(source or {}, sort_keys=True),
        **stats.attrs(),
        "norm_source": "training range" if norm_range is None else "config",
    }
    if norm_range is not None:
        attrs["norm_min"], attrs["norm_max"] = (float(v) for v in norm_range)
    return attrs


@contextlib.contextmanager
def open_prepared(path):
    """A prepared file opened read-only (h5py.File); a ValueError naming the file and the
    rule that rewrites it when it is missing, truncated or not HDF5."""
    import h5py

    if not Path(path).exists():
        raise ValueError(f"{path} does not exist; run the `prepare` rule to write it")
    try:
        f = h5py.File(path, "r")
    except OSError as err:
        raise ValueError(f"{path} is not a readable HDF5 file ({err}): it is truncated or damaged; "
                         "delete it and rerun the `prepare` rule") from None
    with f:
        yield f


def _check_finite(block, first, maps_path):
    """ValueError naming the first map of ``block`` (map ``first`` of the file) with a NaN or
    infinite pixel."""
    bad = np.flatnonzero(~np.isfinite(block).all(axis=(-2, -1)))
    if len(bad):
        i = first + int(bad[0])
        raise ValueError(f"{maps_path}: map {i} (simulation {i // MAPS_PER_SIM}) has non-finite pixels (NaN or inf); "
                         "repair or replace the maps file")


def _check_nonpositive(fraction, limit, maps_path, log_floor):
    """ValueError if more than ``limit`` of the raw pixels are <= 0, a warning if any are."""
    if fraction > limit:
        raise ValueError(f"{maps_path}: {fraction:.3%} of the pixels are zero or negative, above "
                         f"prepare.max_nonpositive_fraction ({limit:g}); these are not surface densities: check "
                         "the maps, or raise the limit if empty pixels are expected")
    if fraction:
        log.warning("%s: %.3f%% of the pixels are zero or negative; floored at %g", maps_path, 100 * fraction, log_floor)


def load_split(path, split="train"):
    """(maps, params, attrs) of one split of a prepared file, read into memory."""
    with open_prepared(path) as f:
        if split not in f:
            raise KeyError(f"{path} has no split {split!r}; it has {list(f)}")
        return f[split]["maps"][:], f[split]["params"][:], dict(f.attrs)


def check_norm_range(norm_range):
    """A configured normalisation (lo, hi): two finite log10 values with lo < hi."""
    try:
        lo, hi = (float(v) for v in norm_range)
    except (TypeError, ValueError):
        raise ValueError(f"norm_range must be null or [lo, hi] in log10 units, got {norm_range!r}") from None
    if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
        raise ValueError(f"norm_range must be finite [lo, hi] with lo < hi, got {norm_range!r}")
    return lo, hi


def normalise(log_maps, normalisation):
    """Log10 maps in the network's units: ``2 (x - lo) / (hi - lo) - 1`` for
    normalisation = (lo, hi) (the training range goes to [-1, 1])."""
    lo, hi = normalisation
    return 2.0 * (log_maps - lo) / (hi - lo) - 1.0


def read_normalisation(path):
    """(norm_min, norm_max) of a prepared file: the training-split range of log10 maps that
    the network maps to [-1, 1]."""
    with open_prepared(path) as f:
        return float(f.attrs["norm_min"]), float(f.attrs["norm_max"])


def inference_field(path, index, split="test"):
    """The index-th field of a split for inference, spread over the simulations first (map 0
    of every simulation, then map 1, ...): (log10 map (N, N) float64, (Omega_m, sigma_8),
    simulation, map of that simulation). A ValueError names the largest index there is."""
    with open_prepared(path) as f:
        sims = f[split]["sim"][:]
        order = np.unique(sims)
        sim = int(order[index % len(order)])
        rows = np.flatnonzero(sims == sim)
        k = index // len(order)
        if index < 0 or k >= len(rows):
            raise ValueError(f"field {index} does not exist: the {split} split has {len(sims)} maps (fields 0..{len(sims) - 1})")
        row = int(rows[k])
        return f[split]["maps"][row].astype(np.float64), tuple(float(v) for v in f[split]["params"][row, :2]), sim, k
