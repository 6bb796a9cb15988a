"""Training and evaluation protocol knobs: learning-rate schedule, EMA cadence, precision.

The authors' protocol (``nmudur/diffusion-hmc``, ``annotated/``) differs from ours in a few
places that need options rather than code paths of their own; they live here, small and
separately testable, so that :mod:`cosmodiff.train` and :mod:`cosmodiff.emulator` only call
them:

* :func:`lr_scheduler`: a step decay every ``lr_step`` iterations (ours) or a decay at listed
  iterations (``lr_milestones``; the authors' ``MultiStepLR`` with milestones at epochs
  120/140/160/180 of 525 iterations, ``config/e1_nx256_newlinearsmall.yaml``).
* :func:`ema_action` / :func:`ema_step`: the EMA follows the raw weights until ``ema_start``,
  then averages every ``ema_every`` iterations (the authors' ``EMAUpdater`` in
  ``main_helper.py``: it switches on at epoch 350 by copying the weights and then updates every
  10 iterations). ``ema_start = 0, ema_every = 1`` is an EMA from the first step, every step.
* :func:`precision`: bf16 autocast on CUDA (ours) or float32 with TF32 matmuls and convolutions
  (the authors' ``main.py`` sets ``torch.backends.cuda.matmul.allow_tf32 = True``). On a CPU
  both are plain float32.
"""

from __future__ import annotations

import contextlib

import torch

PRECISIONS = ("bf16", "fp32")
WEIGHTS = ("ema", "raw")


def lr_scheduler(
    optimizer,
    lr_step       = 0,      # Multiply the rate by lr_gamma every lr_step iterations (0: never).
    lr_gamma      = 0.5,    # Decay factor.
    lr_milestones = (),     # Iterations after which the rate is multiplied by lr_gamma (replaces lr_step).
):
    """A scheduler stepped once per iteration (after ``optimizer.step()``): the rate of
    iteration i (1-based) is lr * lr_gamma ** (number of milestones < i)."""
    if lr_milestones and lr_step:
        raise ValueError("give lr_step or lr_milestones, not both")
    if lr_milestones:
        ms = [int(m) for m in lr_milestones]
        if ms != sorted(set(ms)) or ms[0] < 1:
            raise ValueError(f"lr_milestones must be increasing positive iterations, got {list(lr_milestones)}")
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, ms, lr_gamma)
    if lr_step:
        return torch.optim.lr_scheduler.StepLR(optimizer, lr_step, lr_gamma)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)


def ema_action(
    iteration,              # The iteration just finished (1-based).
    start = 0,              # Up to this iteration the EMA copies the raw weights.
    every = 1,              # After it, one average every this many iterations, the first at start + 1.
):
    """What the EMA does after ``iteration``: "copy" (follow the raw weights), "update"
    (average with the decay) or None (keep)."""
    if iteration <= start:
        return "copy"
    return "update" if (iteration - start - 1) % every == 0 else None


@torch.no_grad()
def ema_step(ema, model, decay, action="update"):
    """Apply one :func:`ema_action` to the EMA network: parameters averaged
    (ema <- decay ema + (1 - decay) raw) or copied; buffers always copied."""
    if action is None:
        return
    for pe, pm in zip(ema.parameters(), model.parameters()):
        if action == "copy":
            pe.copy_(pm)
        else:
            pe.lerp_(pm, 1 - decay)
    for be, bm in zip(ema.buffers(), model.buffers()):
        be.copy_(bm)


@contextlib.contextmanager
def precision(device, mode="bf16"):
    """Context for network evaluations: "bf16" autocasts to bfloat16 on CUDA; "fp32" keeps
    float32 with TF32 matmuls and convolutions on CUDA (the authors' setting), restoring the
    flags afterwards. On a CPU both are plain float32."""
    if mode not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {mode!r}")
    device = torch.device(device)
    if device.type != "cuda":
        yield
        return
    if mode == "bf16":
        with torch.autocast("cuda", dtype=torch.bfloat16):
            yield
        return
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old
