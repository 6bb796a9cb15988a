"""The training loop: data, augmentation, EMA, checkpoints, resume, signals, DDP.

One function, :func:`train` (it runs a :class:`TrainLoop`), serves both stages (64x64
pretraining and 256x256 fine-tuning from the pretrained weights). What it guarantees:

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
from .checkpoint import load_checkpoint, make_checkpoint, save_atomic
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


def _run_fingerprint(model_config, diffusion_config, settings, init_from, normalisation, data_path):
    """The fingerprint a resumable state must carry: the same settings from the same inputs
    (the initial weights by content, the data file by size and modification time)."""
    data_stat = Path(data_path).stat()
    return fingerprint(
        model_config,
        diffusion_config,
        asdict(settings),
        camels.sha256sum(init_from) if init_from is not None else None,
        list(normalisation),
        [data_stat.st_size, data_stat.st_mtime_ns],
    )


class _MetricsLog:
    """The JSON-lines metrics log (rank 0 only; on other ranks every method does nothing).

    Metrics accumulate next to the state (the declared copy is deleted by the workflow before
    a rerun); rows past the resumed iteration are dropped, and :meth:`publish` copies the
    file out to the declared ``metrics_path``.
    """

    def __init__(self, state_dir, metrics_path, start, enabled):
        self.path, self.metrics_path, self.file = state_dir / "metrics.jsonl", metrics_path, None
        if enabled:
            rows = self.path.read_text().splitlines() if (start and self.path.exists()) else []
            rows = [r for r in rows if json.loads(r)["iteration"] <= start]
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text("".join(r + "\n" for r in rows))
            self.file = open(self.path, "a")

    def write(self, row):
        self.file.write(json.dumps(row) + "\n")
        self.file.flush()

    def publish(self):
        if self.file:
            self.file.flush()
            atomic_copy(self.path, self.metrics_path)

    def close(self):
        if self.file:
            self.file.close()


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


def _start_process(settings):
    """(world size, rank, device) of this process; joins the process group under torchrun."""
    import torch.distributed as dist

    world, rank, local_rank = _dist_info()
    device = _device(local_rank)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if settings.batch_size % world:
        raise ValueError(f"batch_size {settings.batch_size} must be divisible by the {world} processes")
    return world, rank, device


def _build_models(model_config, settings, device, init_from):
    """(network, its EMA copy): seeded initial weights (global RNG untouched), or the EMA
    weights of ``init_from``; the EMA copy starts equal to the network and takes no gradients."""
    with torch.random.fork_rng(devices=[]):
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
    return model, ema


class TrainLoop:
    """One training stage (see :func:`train` for the arguments): the models, optimiser,
    schedule and generator are built on construction, a matching state is resumed, and
    :meth:`run` trains to ``settings.iterations``. Each iteration draws a batch
    (:meth:`draw_batch`), takes an optimiser step and an EMA update (:meth:`step`), logs
    (:meth:`record`) and saves (:meth:`write_checkpoint`, :meth:`save_state`)."""

    def __init__(self, data_path, model_config, diffusion_config, settings: TrainSettings, checkpoint_dir, state_dir,
                 metrics_path, init_from=None, normalisation=None, stage="train", progress=True):
        from tqdm.auto import tqdm

        self.settings, self.stage, self.diffusion_config = settings, stage, diffusion_config
        self.world, self.rank, self.device = _start_process(settings)
        self.distributed, self.is_main = self.world > 1, self.rank == 0
        self.x_all, self.p_all, self.normalisation = load_training_maps(data_path, "train", normalisation)
        self.resolution = self.x_all.shape[-1]
        self.diffusion = GaussianDiffusion.from_config(diffusion_config)
        self.sampler = make_sampler(settings.timestep_sampler, self.diffusion.T, **settings.sampler_options)
        self.model, self.ema = _build_models(model_config, settings, self.device, init_from)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=settings.lr)
        self.scheduler = protocol.lr_scheduler(self.optimizer, settings.lr_step, settings.lr_gamma, settings.lr_milestones)
        self.gen = torch.Generator().manual_seed(settings.seed)
        self.start = 0

        self.state_path = Path(state_dir) / "state.pt"
        # a state is resumed only if it was written by the same settings from the same inputs
        self.fp = _run_fingerprint(model_config, diffusion_config, settings, init_from, self.normalisation, data_path)
        self.ckpt_its = settings.checkpoint_iterations()
        self.checkpoint_dir, self.state_dir = Path(checkpoint_dir), Path(state_dir)
        self.written = {}  # declared checkpoint name -> sha256 of its copy in state_dir
        self._resume()

        self.net = self.model
        if self.distributed:
            self.net = torch.nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        self.per_rank = settings.batch_size // self.world
        self.metrics = _MetricsLog(self.state_dir, metrics_path, self.start, self.is_main)
        self.bar = tqdm(total=settings.iterations, initial=self.start, desc=stage, unit="it",
                        disable=not (progress and self.is_main))
        self.t_last, self.n_last, self.loss_acc, self.n_acc = time.perf_counter(), self.start, 0.0, 0

    # ------------------------------------------------------------------ state

    def _resume(self):
        """Load the state at ``state_path`` if it matches and its checkpoint copies are
        intact, and put those copies back as the declared checkpoints (rank 0)."""
        state = _read_state(self.state_path, self.fp)
        restored = _intact_checkpoints(state, self.state_dir, self.ckpt_its) if state is not None else None
        if restored is None:
            return
        self.model.load_state_dict(state["model"])
        self.ema.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.gen.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        self.start = int(state["iteration"])
        self.written = restored
        if self.is_main:
            log.info("resuming from %s at iteration %d", self.state_path, self.start)
            for name in self.written:
                atomic_copy(self.state_dir / name, self.checkpoint_dir / name)

    def save_state(self, iteration):
        """Write everything a resume needs to ``state_path`` (rank 0)."""
        if not self.is_main:
            return
        save_atomic(
            {
                "fingerprint": self.fp,
                "iteration": iteration,
                "model": self.model.state_dict(),
                "ema": self.ema.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "generator": self.gen.get_state(),
                "torch_rng": torch.get_rng_state(),
                "checkpoints": dict(self.written),
            },
            self.state_path,
        )

    def write_checkpoint(self, iteration, loss):
        """Write the declared checkpoint of ``iteration``: first its copy in ``state_dir``
        (its sha256 goes into the state), then the declared file (rank 0)."""
        if not self.is_main:
            return
        ckpt = make_checkpoint(stage=self.stage, iteration=iteration, resolution=self.resolution, loss=loss,
                               model=self.model, ema=self.ema, diffusion_config=self.diffusion_config,
                               normalisation=self.normalisation)
        name = checkpoint_name(iteration)
        save_atomic(ckpt, self.state_dir / name)
        self.written[name] = camels.sha256sum(self.state_dir / name)
        atomic_copy(self.state_dir / name, self.checkpoint_dir / name)

    # ------------------------------------------------------------------ one iteration

    def draw_batch(self):
        """(x0, cond, t, noise, weights) of this rank's slice of the global batch. Every rank
        draws the same global batch from the generator, in this order: map indices, symmetry
        operations, timesteps and their weights, noise."""
        n = self.settings.batch_size
        idx = torch.randint(len(self.x_all), (n,), generator=self.gen)
        ops = torch.randint(8, (n,), generator=self.gen)
        t, weights = self.sampler.sample(n, generator=self.gen)
        noise = torch.randn((n, *self.x_all.shape[1:]), generator=self.gen)
        sl = slice(self.rank * self.per_rank, (self.rank + 1) * self.per_rank)
        x0 = dihedral(self.x_all[idx[sl]], ops[sl]).to(self.device)
        cond = self.p_all[idx[sl]].to(self.device)
        if self.device.type == "cuda":
            x0 = x0.contiguous(memory_format=torch.channels_last)
        return x0, cond, t[sl].to(self.device), noise[sl].to(self.device), weights[sl].to(self.device)

    def step(self, it):
        """One optimiser step, learning-rate step and EMA update at iteration ``it``; the
        loss averaged over ranks (a 0-d tensor). :class:`Diverged` if it is not finite."""
        s = self.settings
        x0, cond, t, noise, weights = self.draw_batch()
        with protocol.precision(self.device, s.precision):
            losses = self.diffusion.training_losses(self.net, x0, cond, t=t, noise=noise)
        loss = (losses.float() * weights).mean()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if s.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), s.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        protocol.ema_step(self.ema, self.model, s.ema_decay, protocol.ema_action(it, s.ema_start, s.ema_every))
        loss_val = loss.detach()
        if self.distributed:
            import torch.distributed as dist

            dist.all_reduce(loss_val)
            loss_val /= self.world
        if not torch.isfinite(loss_val):
            raise Diverged(f"training loss is {float(loss_val)} at iteration {it}: check the prepared maps "
                           "(finite normalisation) or lower the learning rate; nothing was saved for it")
        return loss_val

    def record(self, it, loss_val):
        """Accumulate the loss; every ``log_every`` iterations (and at the last) write the
        mean loss, learning rate and throughput to the metrics log (rank 0)."""
        self.loss_acc += float(loss_val)
        self.n_acc += 1
        self.bar.update(1)
        s = self.settings
        if self.is_main and (it % s.log_every == 0 or it == s.iterations):
            now = time.perf_counter()
            ips = (it - self.n_last) * s.batch_size / (now - self.t_last)
            row = {"iteration": it, "loss": self.loss_acc / self.n_acc, "lr": self.scheduler.get_last_lr()[0], "images_per_s": ips}
            self.metrics.write(row)
            self.bar.set_postfix(loss=f"{row['loss']:.4f}", img_s=f"{ips:.1f}")
            self.t_last, self.n_last, self.loss_acc, self.n_acc = now, it, 0.0, 0

    def _stopping(self, stop, stop_after, it):
        """Whether a signal (on any rank) or ``stop_after`` asks the run to stop now."""
        stopping = stop.raised is not None or (stop_after is not None and it - self.start >= stop_after)
        if self.distributed:
            import torch.distributed as dist

            flag = torch.tensor([1.0 if stopping else 0.0], device=self.device)
            dist.all_reduce(flag)
            stopping = bool(flag.item())
        return stopping

    # ------------------------------------------------------------------ the run

    def run(self, stop_after=None):
        """Train from the resumed iteration to the last; returns the declared checkpoint paths.
        :class:`Interrupted` after saving the state when a signal (or ``stop_after``) stops it."""
        try:
            with _StopFlag() as stop:
                self.model.train()
                for it in range(self.start + 1, self.settings.iterations + 1):
                    loss_val = self.step(it)
                    self.record(it, loss_val)
                    if it in self.ckpt_its:
                        self.write_checkpoint(it, float(loss_val))
                        self.save_state(it)
                        self.metrics.publish()
                    if self._stopping(stop, stop_after, it) and it < self.settings.iterations:
                        self.save_state(it)
                        self.metrics.publish()
                        raise Interrupted(f"stopped by {stop.raised or 'stop_after'} at iteration {it}; "
                                          f"state saved to {self.state_path}")
            self.metrics.publish()
        finally:
            self.bar.close()
            self.metrics.close()
        return [self.checkpoint_dir / checkpoint_name(i) for i in self.ckpt_its]


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
    loop = TrainLoop(data_path, model_config, diffusion_config, settings, checkpoint_dir, state_dir, metrics_path,
                     init_from=init_from, normalisation=normalisation, stage=stage, progress=progress)
    return loop.run(stop_after)
