"""The trained model as an emulator: fields in physical units for any (Omega_m, sigma_8).

:class:`Emulator` wraps a network, its diffusion process and the normalisation of the
training maps; :meth:`Emulator.sample` returns log10 surface densities, :func:`write_samples`
stores surface densities in (Msun/h)/(Mpc/h)^2 in HDF5 with the parameters and sampler
settings as attributes. From Python::

    from cosmodiff.emulator import Emulator
    from cosmodiff.sampling import SamplerSettings
    emu = Emulator.from_checkpoint("results/demo/models/finetune/ckpt_0000060.pt")
    log_maps = emu.sample(0.3, 0.8, n=16, settings=SamplerSettings(sampler="ddim", steps=50), seed=0)
"""

from __future__ import annotations

import json

import numpy as np
import torch

from .cosmology import BOX_SIZE, MAP_UNITS, PARAM_NAMES
from .prepare import normalise
from .protocol import PRECISIONS, WEIGHTS
from .protocol import precision as precision_context
from .sampling import SAMPLERS, SamplerSettings


class Emulator:
    """A trained diffusion model that generates log10 CDM surface-density maps.

    model:         noise predictor model(x_t, t, params) (eval mode).
    diffusion:     its :class:`cosmodiff.diffusion.GaussianDiffusion`.
    normalisation: (lo, hi): log10 maps were scaled to [-1, 1] with these.
    resolution:    pixels per side of the training maps (the default output size).
    device:        torch device (default: CUDA if available, else CPU).
    precision:     "bf16" (autocast on CUDA) or "fp32" (TF32 matmuls, the authors'); see
                   :func:`cosmodiff.protocol.precision`. Plain float32 on a CPU.
    """

    def __init__(self, model, diffusion, normalisation, resolution, device=None, precision="bf16"):
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {device!r}: this torch build sees no CUDA device; use --device cpu or leave it out")
        self.model = model.to(self.device).eval()
        self.diffusion = diffusion
        self.normalisation = tuple(float(v) for v in normalisation)
        self.resolution = int(resolution)
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        self.precision = precision

    @classmethod
    def from_checkpoint(cls, path, weights="ema", device=None, precision="bf16"):
        """Load the EMA (``weights="ema"``) or raw (``"raw"``, what the authors' sampling and
        likelihoods load) weights of a training checkpoint."""
        from .checkpoint import model_from_checkpoint

        if weights not in WEIGHTS:
            raise ValueError(f"weights must be one of {WEIGHTS}, got {weights!r}")
        model, diffusion, ckpt = model_from_checkpoint(path, ema=weights == "ema")
        lo, hi = (float(v) for v in ckpt["normalisation"])
        if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
            raise ValueError(f"checkpoint {path}: normalisation ({lo}, {hi}) is not a finite range: it was trained on "
                             "bad data; fix the raw maps and retrain")
        emu = cls(model, diffusion, (lo, hi), ckpt["resolution"], device, precision)
        emu.checkpoint = {"path": str(path), "stage": ckpt["stage"], "iteration": int(ckpt["iteration"])}
        return emu

    def to_log10(self, x):
        lo, hi = self.normalisation
        return (np.asarray(x, dtype=np.float64) + 1) / 2 * (hi - lo) + lo

    def to_unit(self, log_maps):
        return normalise(np.asarray(log_maps, dtype=np.float64), self.normalisation)

    #: normalised units (the training range is [-1, 1]): a field whose median lies beyond
    #: BULK is off as a whole; a pixel beyond FAR is one training range past either end
    BULK, FAR = 1.5, 3.0

    def check_field(self, log_field, name="the field"):
        """Compare a log10 field with the training normalisation (lo, hi) before inference.

        Raises ValueError when the field's median lies outside that range by more than a
        quarter of its width (a physical map read as log10, an empty map, a map in other
        units or scaled by orders of magnitude: the posterior would be the prior, or biased,
        without a sign); returns a warning text when more than 1% of the pixels lie one
        range width beyond it, else None.
        """
        x = self.to_unit(log_field)
        far = float(np.mean(np.abs(x) > self.FAR))
        lo, hi = self.normalisation
        where = (f"{name} spans log10 {np.min(log_field):.3g}..{np.max(log_field):.3g} (median "
                 f"{np.median(log_field):.3g}), the checkpoint was trained on {lo:.3g}..{hi:.3g}")
        if abs(np.median(x)) > self.BULK:
            raise ValueError(f"{where}: check --units and that the map is a CDM surface density in (Msun/h)/(Mpc/h)^2")
        if far > 0.01:
            return f"{where}; {far:.1%} of its pixels lie far outside that range, the posterior may be biased"
        return None

    @torch.no_grad()
    def sample(self, omega_m, sigma_8, n, settings=None, *, seed=None, resolution=None, progress=False):
        """n log10 maps (n, N, N) float32 at one parameter point.

        omega_m, sigma_8: the parameter point.
        n:           number of maps.
        settings:    :class:`cosmodiff.sampling.SamplerSettings`: the sampler, its steps and
                     timestep grid, the clamp of x0_hat and the maps per network call
                     (default ``SamplerSettings()``: DDIM, 50 steps on the linear grid, clamped).
        seed:        seed of the starting noise (and of the ancestral noise); default
                     ``settings.seed``.
        resolution:  output size (default: the training resolution; the network is fully
                     convolutional, any multiple of its downsampling factor works).
        progress:    show a progress bar over the denoising steps.
        """
        settings = SamplerSettings() if settings is None else settings
        if not isinstance(settings, SamplerSettings):
            raise TypeError(f"settings must be a cosmodiff.sampling.SamplerSettings, got {settings!r}")
        seed = settings.seed if seed is None else seed
        solve, options = SAMPLERS[settings.sampler], settings.sampler_kwargs()
        res = self.resolution if resolution is None else int(resolution)
        factor = getattr(self.model, "downsampling_factor", 1)
        if res < 1 or res % factor:
            raise ValueError(f"resolution must be a positive multiple of the network's downsampling factor "
                             f"{factor} (the checkpoint's: {self.resolution}), got {resolution}")
        gen = torch.Generator(device=self.device).manual_seed(int(seed))
        out = []
        for start in range(0, n, settings.batch_size):
            b = min(settings.batch_size, n - start)
            cond = torch.tensor([[omega_m, sigma_8]] * b, dtype=torch.float32, device=self.device)
            shape = (b, 1, res, res)
            with precision_context(self.device, self.precision):
                x = solve(self.diffusion, self.model, shape, cond, **options, generator=gen, progress=progress, device=self.device)
            out.append(x.float().cpu().numpy()[:, 0])
        return self.to_log10(np.concatenate(out)).astype(np.float32)

    def evaluations(self, sampler, steps):
        """Network evaluations per map of a sampler setting."""
        return self.diffusion.T if sampler == "ancestral" else int(steps)


def write_samples(path, log_maps, params, settings):
    """Write samples in physical units to HDF5.

    path:     output .h5 (written to a temporary name, then renamed; removed on failure).
    log_maps: (n_points, n, N, N) log10 maps.
    params:   (n_points, 2) Omega_m, sigma_8 of each point.
    settings: dict of sampler settings and provenance (stored as attributes).
    Layout: /maps (n_points, n, N, N) float32 in (Msun/h)/(Mpc/h)^2, /log10_maps the same in
    log10 (what the analysis reads: an under-trained network's samples can overflow float32
    in physical units), /params (n_points, 2).
    """
    import h5py

    from .files import atomic_output

    log_maps = np.asarray(log_maps, dtype=np.float32)
    # maps and log10 maps, float32 each
    with atomic_output(path, nbytes=2 * log_maps.nbytes) as tmp, h5py.File(tmp, "w") as f:
        with np.errstate(over="ignore"):
            f.create_dataset("maps", data=(10.0 ** log_maps.astype(np.float64)).astype(np.float32))
        f.create_dataset("log10_maps", data=log_maps)
        f.create_dataset("params", data=np.asarray(params, dtype=np.float64))
        f.attrs.update(
            {
                "units": MAP_UNITS,
                "box_size": BOX_SIZE,
                "param_names": list(PARAM_NAMES[:2]),
                **{k: (json.dumps(v) if isinstance(v, (dict, list, tuple)) or v is None else v) for k, v in settings.items()},
            }
        )


def read_samples(path, log10=False):
    """(maps (n_points, n, N, N), params (n_points, 2), attrs); log10 maps if ``log10``."""
    import h5py

    with h5py.File(path, "r") as f:
        return f["log10_maps" if log10 else "maps"][:], f["params"][:], dict(f.attrs)
