"""Checkpoint files: their format, writing, safe loading and the network they hold.

A checkpoint is a dict saved with ``torch.save`` (format :data:`CHECKPOINT_FORMAT`)::

    format, stage, iteration, resolution, loss, model_config, diffusion_config,
    normalisation (lo, hi), model (raw weights), ema (EMA weights)

Training (:mod:`cosmodiff.train`) writes them with :func:`make_checkpoint` and
:func:`save_atomic`; everything that uses a trained network (the emulator, inference, the
scripts) reads them with :func:`load_checkpoint` / :func:`model_from_checkpoint`, without
going through the training module. Loading is ``weights_only``: no code is executed from a
file.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .diffusion import GaussianDiffusion
from .files import atomic_output
from .unet import UNet

CHECKPOINT_FORMAT = 1


def make_checkpoint(*, stage, iteration, resolution, loss, model, ema, diffusion_config, normalisation):
    """The checkpoint dict of a network ``model`` (raw weights) and its EMA copy ``ema``."""
    return {
        "format": CHECKPOINT_FORMAT,
        "stage": stage,
        "iteration": iteration,
        "resolution": resolution,
        "loss": float(loss),
        "model_config": model.config(),
        "diffusion_config": dict(diffusion_config),
        "normalisation": [float(v) for v in normalisation],
        "model": model.state_dict(),
        "ema": ema.state_dict(),
    }


def save_atomic(obj, path):
    """``torch.save`` of obj to path through a temporary file (a failed write leaves the old
    file, or none)."""
    with atomic_output(path) as tmp:
        torch.save(obj, tmp)


def load_checkpoint(path, map_location="cpu"):
    """A checkpoint dict (weights_only loading: no code is executed from the file).
    ValueError (one line, naming the file) if it is missing, truncated, not a checkpoint or
    holds objects other than tensors and plain values."""
    if not Path(path).is_file():
        raise ValueError(f"checkpoint {path} does not exist")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # noqa: BLE001 - zip, EOF and unpickling errors alike; their text suggests unsafe loading
        raise ValueError(f"{path} is not a readable cosmodiff checkpoint ({type(err).__name__}): it is truncated, "
                         "damaged or another kind of file; rerun the training stage that wrote it") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        found = ckpt.get("format") if isinstance(ckpt, dict) else type(ckpt).__name__
        raise ValueError(f"{path} is not a cosmodiff checkpoint (format {found})")
    return ckpt


def model_from_checkpoint(path, ema=True, map_location="cpu"):
    """(model in eval mode, diffusion, checkpoint dict) from a checkpoint file."""
    ckpt = load_checkpoint(path, map_location)
    try:
        model = UNet.from_config(ckpt["model_config"])
        model.load_state_dict(ckpt["ema" if ema else "model"])
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        first = str(err).strip().splitlines()[-1].strip()[:200]
        raise ValueError(f"{path}: its model_config does not match its weights ({type(err).__name__}: {first}); "
                         "the file was edited or assembled by hand: use a checkpoint written by training") from None
    model.eval()
    return model, GaussianDiffusion.from_config(ckpt["diffusion_config"]), ckpt
