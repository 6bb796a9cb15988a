"""The training loop: data, augmentation, EMA, checkpoints, resume, signals, DDP.

One function, :func:`train`, serves both stages (64x64 pretraining and 256x256 fine-tuning
from the pretrained weights). What it guarantees:

* **Declared checkpoints.** Every ``checkpoint_every`` iterations the EMA and raw weights are
  written to ``checkpoint_dir/ckpt_<iteration>.pt``: the files a workflow declares as outputs.
* **Resumable state in an undeclared folder.** Snakemake deletes a job's declared outputs
  before it runs, so the state needed to resume (weights, EMA, optimiser, learning-rate
  schedule, random-number generators, iteration, and a copy of every checkpoint written so
  far) lives in ``state_dir``, written atomically. A run that finds a state with the same
  fingerprint (model, diffusion and training settings, data) resumes from it and restores the
  declared checkpoints it had written, as copies checked against the sha256 the state
  recorded; a state with another fingerprint, an unreadable one, or one whose checkpoint
  copies are damaged is ignored with a warning naming the file (training starts over).
* **Divergence.** A NaN or infinite loss stops the run with :class:`Diverged`, naming the
  iteration, before anything is saved for it.
* **Signals.** SIGTERM and SIGUSR1 (what SLURM sends before a time limit or preemption) make
  the loop save its state at the end of the current iteration and exit with
  :class:`Interrupted` (the script turns it into a non-zero exit), so the next attempt resumes.
* **Determinism.** All randomness (batches, augmentation, timesteps, noise) comes from one
  seeded torch.Generator whose state is saved, so on CPU a resumed run gives exactly the
  weights of an uninterrupted one.
* **DDP.** Under torchrun (WORLD_SIZE > 1) every rank draws the same global batch and trains
  on its slice; gradients are averaged by DistributedDataParallel, so the loss trajectory
  equals a single process with the same global batch.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import signal
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from . import camels, protocol
from .checkpoint import CHECKPOINT_FORMAT, load_checkpoint, save_atomic
from .diffusion import GaussianDiffusion, make_sampler
from .files import atomic_copy
from .layout import checkpoint_iterations, checkpoint_name
from .prepare import normalise, open_prepared
from .unet import UNet

log = logging.getLogger(__name__)


class Interrupted(RuntimeError):
    """Training stopped by a signal after saving its state; rerun to resume."""


class Diverged(RuntimeError):
    """The training loss became NaN or infinite; nothing was saved for that iteration."""


@dataclass
class TrainSettings:
    """Settings of one training stage (config: pretrain / finetune).

    iterations:        optimiser steps in total.
    batch_size:        global batch (split across DDP ranks).
    lr:                Adam learning rate (authors: 2e-4).
    lr_step:           step decay: multiply lr by ``lr_gamma`` every ``lr_step`` iterations
                       (0 = constant lr).
    lr_gamma:          decay factor of the step schedule.
    lr_milestones:     iterations after which lr is multiplied by ``lr_gamma`` (the authors'
                       MultiStepLR); replaces ``lr_step`` (:func:`cosmodiff.protocol.lr_scheduler`).
    ema_decay:         EMA decay per update (0 = EMA equals the raw weights).
    ema_start:         the EMA copies the raw weights up to this iteration, then averages ...
    ema_every:         ... once every this many iterations (:func:`cosmodiff.protocol.ema_action`).
    precision:         "bf16" (autocast on CUDA) or "fp32" (TF32 matmuls, the authors').
    checkpoint_every:  iterations between declared checkpoints.
    seed:              seed of the single generator behind all randomness of the run.
    grad_clip:         clip the gradient norm to this value (0 = no clipping).
    timestep_sampler:  "uniform" (authors) or "lowt" (over-samples small t).
    sampler_options:   keyword arguments of the timestep sampler.
    log_every:         iterations between metric lines.
    """

    iterations: int
    batch_size: int
    lr: float = 2e-4
    lr_step: int = 0
    lr_gamma: float = 0.5
    lr_milestones: list = field(default_factory=list)
    ema_decay: float = 0.999
    ema_start: int = 0
    ema_every: int = 1
    precision: str = "bf16"
    checkpoint_every: int = 1000
    seed: int = 0
    grad_clip: float = 0.0
    timestep_sampler: str = "uniform"
    sampler_options: dict = field(default_factory=dict)
    log_every: int = 10

    def checkpoint_iterations(self):
        """Iterations at which declared checkpoints are written (the last one always)."""
        return checkpoint_iterations(self.iterations, self.checkpoint_every)


# --------------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------------


def load_training_maps(path, split="train", normalisation=None):
    """Maps of one split scaled to [-1, 1] as the authors did, float32 tensor (n, 1, N, N).

    path:          prepared HDF5 file.
    split:         train / val / test.
    normalisation: (lo, hi) of log10 maps mapped to (-1, 1); default the file's training-split
                   min and max (pass the native-resolution file's pair to share it across
                   stages).
    Returns (maps, params (n, 2) Omega_m and sigma_8, (lo, hi)).
    """
    with open_prepared(path) as f:
        maps = f[split]["maps"][:]
        params = f[split]["params"][:, :2]
        lo, hi = normalisation or (float(f.attrs["norm_min"]), float(f.attrs["norm_max"]))
    x = normalise(maps, (lo, hi))
    return torch.from_numpy(x.astype(np.float32))[:, None], torch.from_numpy(params.astype(np.float32)), (lo, hi)


def dihedral(x, ops):
    """Apply one of the 8 symmetries of the square to each map: ops (B,) in 0..7.

    ops & 3 quarter turns, then a transpose when ops >= 4. Periodic maps stay periodic.
    """
    out = torch.empty_like(x)
    for op in range(8):
        sel = ops == op
        if sel.any():
            y = torch.rot90(x[sel], int(op & 3), dims=(-2, -1))
            out[sel] = y.transpose(-2, -1) if op >= 4 else y
    return out


# --------------------------------------------------------------------------------------------
# resumable state (the checkpoint files themselves: cosmodiff.checkpoint)
# --------------------------------------------------------------------------------------------


def fingerprint(*parts):
    """Short hash of JSON-serialisable settings: a resumed state must match it."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _read_state(state_path, fp):
    """The resumable state at ``state_path`` if it is readable and has fingerprint ``fp``,
    else None with a warning naming the file (training then starts from iteration 0)."""
    if not state_path.exists():
        return None
    try:
        state = torch.load(state_path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - a truncated or damaged state must not fail every rerun
        log.warning("ignoring %s: it cannot be read (%s); training starts from iteration 0", state_path, type(err).__name__)
        return None
    if not isinstance(state, dict) or state.get("fingerprint") != fp:
        log.warning("ignoring %s: it was written with other settings or data", state_path)
        return None
    return state


def _intact_checkpoints(state, state_dir, ckpt_its):
    """{name: sha256} of the checkpoints a state had written, each copy in ``state_dir``
    checked against the sha256 the state recorded; None (with a warning naming the file) if
    one is missing or differs. States written before the record restore unchecked."""
    recorded = state.get("checkpoints")
    if recorded is None:
        recorded = {checkpoint_name(i): None for i in ckpt_its if i <= int(state["iteration"])}
    for name, digest in recorded.items():
        copy = state_dir / name
        if not copy.exists() or (digest is not None and camels.sha256sum(copy) != digest):
            log.warning("not resuming: %s is missing or damaged (not the file the state recorded); "
                        "training starts from iteration 0", copy)
            return None
    return dict(recorded)


# --------------------------------------------------------------------------------------------
# distributed helpers
# --------------------------------------------------------------------------------------------


def _dist_info():
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    return world, rank, local


def _device(local_rank):
    if torch.cuda.is_available():
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device("cpu")


class _StopFlag:
    """Set by SIGTERM / SIGUSR1; the loop saves and exits at the next iteration boundary."""

    def __init__(self):
        self.raised = None
        self._old = {}

    def __enter__(self):
        for sig in (signal.SIGTERM, signal.SIGUSR1):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread (e.g. some test runners)
                pass
        return self

    def _handle(self, signum, frame):
        self.raised = signal.Signals(signum).name

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)


# --------------------------------------------------------------------------------------------
# the loop
# --------------------------------------------------------------------------------------------


def train(
    data_path,
    model_config,
    diffusion_config,
    settings: TrainSettings,
    checkpoint_dir,
    state_dir,
    metrics_path,
    init_from=None,
    normalisation=None,
    stage="train",
    progress=True,
    stop_after=None,
):
    """Train (or resume training) one stage; returns the list of checkpoint paths.

    data_path:        prepared HDF5 file of the stage's resolution (its train split is used).
    model_config:     UNet keyword arguments (config: model).
    diffusion_config: {schedule, timesteps, loss, model_variance, prediction} (config: diffusion).
    settings:         :class:`TrainSettings`.
    checkpoint_dir:   where the declared checkpoints go.
    state_dir:        where the resumable state goes (not declared to the workflow).
    metrics_path:     JSON-lines metrics log (iteration, loss, lr, images_per_s, seconds).
    init_from:        checkpoint whose EMA weights initialise the network (fine-tuning);
                      the optimiser starts fresh.
    normalisation:    (lo, hi) of the log10 maps mapped to [-1, 1]; default the data file's.
    stage:            name recorded in the checkpoints.
    progress:         show a progress bar (rank 0).
    stop_after:       testing hook: behave as if a signal arrived after this many iterations
                      of this call.
    """
    import torch.distributed as dist
    from tqdm.auto import tqdm

    world, rank, local_rank = _dist_info()
    distributed = world > 1
    device = _device(local_rank)
    if distributed and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if settings.batch_size % world:
        raise ValueError(f"batch_size {settings.batch_size} must be divisible by the {world} processes")
    is_main = rank == 0

    x_all, p_all, normalisation = load_training_maps(data_path, "train", normalisation)
    resolution = x_all.shape[-1]
    diffusion = GaussianDiffusion.from_config(diffusion_config)
    sampler = make_sampler(settings.timestep_sampler, diffusion.T, **settings.sampler_options)
    with torch.random.fork_rng(devices=[]):  # seeded initial weights, global RNG untouched
        torch.manual_seed(settings.seed)
        model = UNet.from_config(model_config).to(device)
    if init_from is not None:
        init = load_checkpoint(init_from)
        model.load_state_dict(init["ema"])
        log.info("initialised from %s (iteration %s, %sx%s)", init_from, init["iteration"], init["resolution"], init["resolution"])
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    ema = UNet.from_config(model_config).to(device)
    ema.load_state_dict(model.state_dict())
    ema.requires_grad_(False)
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.lr)
    scheduler = protocol.lr_scheduler(optimizer, settings.lr_step, settings.lr_gamma, settings.lr_milestones)
    gen = torch.Generator().manual_seed(settings.seed)
    start = 0

    state_path = Path(state_dir) / "state.pt"
    # a state is resumed only if it was written by the same settings from the same inputs:
    # the initial weights by content, the data file by size and modification time
    data_stat = Path(data_path).stat()
    fp = fingerprint(
        model_config,
        diffusion_config,
        asdict(settings),
        camels.sha256sum(init_from) if init_from is not None else None,
        list(normalisation),
        [data_stat.st_size, data_stat.st_mtime_ns],
    )
    ckpt_its = settings.checkpoint_iterations()
    checkpoint_dir, state_dir = Path(checkpoint_dir), Path(state_dir)
    written = {}  # declared checkpoint name -> sha256 of its copy in state_dir
    state = _read_state(state_path, fp)
    restored = _intact_checkpoints(state, state_dir, ckpt_its) if state is not None else None
    if restored is not None:
        model.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        gen.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        start = int(state["iteration"])
        written = restored
        if is_main:
            log.info("resuming from %s at iteration %d", state_path, start)
            for name in written:
                atomic_copy(state_dir / name, checkpoint_dir / name)

    net = model
    if distributed:
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    per_rank = settings.batch_size // world

    def save_state(iteration):
        if not is_main:
            return
        save_atomic(
            {
                "fingerprint": fp,
                "iteration": iteration,
                "model": model.state_dict(),
                "ema": ema.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "generator": gen.get_state(),
                "torch_rng": torch.get_rng_state(),
                "checkpoints": dict(written),
            },
            state_path,
        )

    def write_checkpoint(iteration, loss):
        if not is_main:
            return
        ckpt = {
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
        name = checkpoint_name(iteration)
        save_atomic(ckpt, state_dir / name)
        written[name] = camels.sha256sum(state_dir / name)
        atomic_copy(state_dir / name, checkpoint_dir / name)

    # Metrics accumulate next to the state (the declared copy is deleted by the workflow
    # before a rerun); rows past the resumed iteration are dropped, then copied out.
    metrics_state = state_dir / "metrics.jsonl"
    metrics = None
    if is_main:
        rows = metrics_state.read_text().splitlines() if (start and metrics_state.exists()) else []
        rows = [r for r in rows if json.loads(r)["iteration"] <= start]
        metrics_state.parent.mkdir(parents=True, exist_ok=True)
        metrics_state.write_text("".join(r + "\n" for r in rows))
        metrics = open(metrics_state, "a")

    def publish_metrics():
        if is_main:
            metrics.flush()
            atomic_copy(metrics_state, metrics_path)

    bar = tqdm(total=settings.iterations, initial=start, desc=stage, unit="it", disable=not (progress and is_main))
    t_last, n_last, loss_acc, n_acc = time.perf_counter(), start, 0.0, 0
    it = start
    try:
        with _StopFlag() as stop:
            model.train()
            for it in range(start + 1, settings.iterations + 1):
                # the same global batch on every rank; each takes its slice
                idx = torch.randint(len(x_all), (settings.batch_size,), generator=gen)
                ops = torch.randint(8, (settings.batch_size,), generator=gen)
                t, weights = sampler.sample(settings.batch_size, generator=gen)
                noise = torch.randn((settings.batch_size, *x_all.shape[1:]), generator=gen)
                sl = slice(rank * per_rank, (rank + 1) * per_rank)
                x0 = dihedral(x_all[idx[sl]], ops[sl]).to(device)
                cond = p_all[idx[sl]].to(device)
                if device.type == "cuda":
                    x0 = x0.contiguous(memory_format=torch.channels_last)
                with protocol.precision(device, settings.precision):
                    losses = diffusion.training_losses(net, x0, cond, t=t[sl].to(device), noise=noise[sl].to(device))
                loss = (losses.float() * weights[sl].to(device)).mean()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if settings.grad_clip:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), settings.grad_clip)
                optimizer.step()
                scheduler.step()
                protocol.ema_step(ema, model, settings.ema_decay, protocol.ema_action(it, settings.ema_start, settings.ema_every))

                loss_val = loss.detach()
                if distributed:
                    dist.all_reduce(loss_val)
                    loss_val /= world
                if not torch.isfinite(loss_val):
                    raise Diverged(f"training loss is {float(loss_val)} at iteration {it}: check the prepared maps "
                                   "(finite normalisation) or lower the learning rate; nothing was saved for it")
                loss_acc += float(loss_val)
                n_acc += 1
                bar.update(1)
                if is_main and (it % settings.log_every == 0 or it == settings.iterations):
                    now = time.perf_counter()
                    ips = (it - n_last) * settings.batch_size / (now - t_last)
                    row = {"iteration": it, "loss": loss_acc / n_acc, "lr": scheduler.get_last_lr()[0], "images_per_s": ips}
                    metrics.write(json.dumps(row) + "\n")
                    metrics.flush()
                    bar.set_postfix(loss=f"{row['loss']:.4f}", img_s=f"{ips:.1f}")
                    t_last, n_last, loss_acc, n_acc = now, it, 0.0, 0
                if it in ckpt_its:
                    write_checkpoint(it, float(loss_val))
                    save_state(it)
                    publish_metrics()

                stopping = stop.raised is not None or (stop_after is not None and it - start >= stop_after)
                if distributed:
                    flag = torch.tensor([1.0 if stopping else 0.0], device=device)
                    dist.all_reduce(flag)
                    stopping = bool(flag.item())
                if stopping and it < settings.iterations:
                    save_state(it)
                    publish_metrics()
                    raise Interrupted(f"stopped by {stop.raised or 'stop_after'} at iteration {it}; state saved to {state_path}")
        publish_metrics()
    finally:
        bar.close()
        if metrics:
            metrics.close()
    return [checkpoint_dir / checkpoint_name(i) for i in ckpt_its]
