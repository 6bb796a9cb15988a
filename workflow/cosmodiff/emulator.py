"""The trained model as an emulator: fields in physical units for any (Omega_m, sigma_8).

:class:`Emulator` wraps a network, its diffusion process and the normalisation of the
training maps; :meth:`Emulator.sample` returns log10 surface densities, :func:`write_samples`
stores surface densities in (Msun/h)/(Mpc/h)^2 in HDF5 with the parameters and sampler
settings as attributes. From Python::

    from cosmodiff.emulator import Emulator
    emu = Emulator.from_checkpoint("results/demo/models/finetune/ckpt_0000060.pt")
    log_maps = emu.sample(0.3, 0.8, n=16, sampler="ddim", steps=50, seed=0)
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from .cosmology import BOX_SIZE, MAP_UNITS, PARAM_NAMES
from .prepare import normalise
from .protocol import PRECISIONS, WEIGHTS
from .protocol import precision as precision_context

SAMPLERS = ("ancestral", "ddim", "dpm2m")


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
        from .train import model_from_checkpoint

        if weights not in WEIGHTS:
            raise ValueError(f"weights must be one of {WEIGHTS}, got {weights!r}")
        model, diffusion, ckpt = model_from_checkpoint(path, ema=weights == "ema")
        emu = cls(model, diffusion, ckpt["normalisation"], ckpt["resolution"], device, precision)
        emu.checkpoint = {"path": str(path), "stage": ckpt["stage"], "iteration": int(ckpt["iteration"])}
        return emu

    def to_log10(self, x):
        lo, hi = self.normalisation
        return (np.asarray(x, dtype=np.float64) + 1) / 2 * (hi - lo) + lo

    def to_unit(self, log_maps):
        return normalise(np.asarray(log_maps, dtype=np.float64), self.normalisation)

    @torch.no_grad()
    def sample(self, omega_m, sigma_8, n, sampler="ddim", steps=50, seed=0, batch_size=16, resolution=None, clip=True, progress=False,
               spacing="linear"):
        """n log10 maps (n, N, N) float32 at one parameter point.

        omega_m, sigma_8: the parameter point.
        n:           number of maps.
        sampler:     "ancestral" (DDPM, T network evaluations per map), "ddim"
                     (deterministic, ``steps`` evaluations) or "dpm2m" (DPM-Solver++(2M):
                     the same ODE and calls as DDIM, second order).
        steps:       DDIM / DPM-Solver steps (ignored by the ancestral sampler).
        seed:        seed of the starting noise (and of the ancestral noise).
        batch_size:  maps per network call.
        resolution:  output size (default: the training resolution; the network is fully
                     convolutional, any multiple of its downsampling factor works).
        clip:        clamp the denoised estimate x0_hat to [-1, 1], the range of the training
                     maps after normalisation, at every step (as image DDPMs do). With the
                     authors' schedule x0_hat = (x_t - sqrt(1 - abar) eps_hat) / sqrt(abar)
                     amplifies noise-prediction errors ~100 times at t ~ T; an under-trained
                     network then produces log-densities tens of dex off without the clamp.
        progress:    show a progress bar over the denoising steps.
        spacing:     timestep grid of ddim / dpm2m, "linear", "quadratic" or "edm"
                     (:meth:`cosmodiff.diffusion.GaussianDiffusion.ddim_timesteps`).
        """
        if sampler not in SAMPLERS:
            raise ValueError(f"unknown sampler {sampler!r}; choose one of {SAMPLERS}")
        res = int(resolution or self.resolution)
        clamp = 1.0 if clip else None
        gen = torch.Generator(device=self.device).manual_seed(int(seed))
        out = []
        for start in range(0, n, batch_size):
            b = min(batch_size, n - start)
            cond = torch.tensor([[omega_m, sigma_8]] * b, dtype=torch.float32, device=self.device)
            shape = (b, 1, res, res)
            with precision_context(self.device, self.precision):
                if sampler == "ancestral":
                    x = self.diffusion.sample(self.model, shape, cond, generator=gen, progress=progress, device=self.device, clip=clamp)
                else:
                    solve = self.diffusion.ddim_sample if sampler == "ddim" else self.diffusion.dpm_solver_sample
                    x = solve(self.model, shape, cond, steps=steps, spacing=spacing, generator=gen, progress=progress,
                              device=self.device, clip=clamp)
            out.append(x.float().cpu().numpy()[:, 0])
        return self.to_log10(np.concatenate(out)).astype(np.float32)

    def evaluations(self, sampler, steps):
        """Network evaluations per map of a sampler setting."""
        return self.diffusion.T if sampler == "ancestral" else int(steps)


def write_samples(path, log_maps, params, settings):
    """Write samples in physical units to HDF5.

    path:     output .h5 (written to a temporary name, then renamed).
    log_maps: (n_points, n, N, N) log10 maps.
    params:   (n_points, 2) Omega_m, sigma_8 of each point.
    settings: dict of sampler settings and provenance (stored as attributes).
    Layout: /maps (n_points, n, N, N) float32 in (Msun/h)/(Mpc/h)^2, /log10_maps the same in
    log10 (what the analysis reads: an under-trained network's samples can overflow float32
    in physical units), /params (n_points, 2).
    """
    import os

    import h5py

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with h5py.File(tmp, "w") as f:
        log_maps = np.asarray(log_maps, dtype=np.float32)
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
    os.replace(tmp, path)


def read_samples(path, log10=False):
    """(maps (n_points, n, N, N), params (n_points, 2), attrs); log10 maps if ``log10``."""
    import h5py

    with h5py.File(path, "r") as f:
        return f["log10_maps" if log10 else "maps"][:], f["params"][:], dict(f.attrs)
