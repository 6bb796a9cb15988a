"""What each GPU rule of a configuration costs, and how long it takes at a given throughput.

The work of a rule is counted in what the GPU does (:func:`rule_work`): training iterations
at a resolution, or network evaluations of one map at a resolution (sampling, validation,
posterior scans). :func:`project` turns work into seconds with a :class:`Throughput`: either
measured on a GPU (``benchmarks/gpu_check.py``) or assumed (:func:`assumed_throughput`: the
network's FLOPs at an assumed sustained FLOP rate). :func:`slurm_minutes` turns seconds into
the runtime a SLURM job should request (``profiles/slurm/config.yaml`` holds those of
``config/paper.yaml``; ``tests/test_gpu_check.py`` checks that they agree).

Counting conventions: a training iteration costs three forward passes of its batch (forward
and backward); a sampler step, one network evaluation per map; a posterior, one evaluation per
grid point, timestep and noise draw (:func:`evaluations_per_theta`).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field

from .inference.settings import InferenceSettings

#: GPU rules of the workflow (each has an entry in profiles/slurm set-resources).
GPU_RULES = ("pretrain", "finetune", "validate_checkpoint", "sample", "sampler_cost", "posterior")
#: The sustained FLOP rate assumed until a GPU run measures one: an NVIDIA A100 (the authors'
#: card: their conda env is "pytorch_a100") in float32 with TF32 matmuls has a dense peak of
#: 156 TFLOP/s; convolutional U-Nets with GroupNorm and attention sustain a fraction of it. 20%
#: is consistent with the authors' own jobs, which give lower bounds: their likelihood job
#: (save_computed_liks.sh, 3 h limit) scanned 10 fields x 110,000 evaluations, >= 100
#: evaluations/s at 256^2, i.e. >= 15 TFLOP/s at ~0.15 TFLOP per evaluation.
ASSUMED_TFLOPS = 0.2 * 156.0
#: A requested runtime is the projection times this margin, rounded up to RUNTIME_STEP minutes.
SAFETY = 1.5
RUNTIME_STEP = 30
#: At most this many minutes per job (a common partition limit): training resumes on the
#: profile's retry from its saved state, other rules must fit.
MAX_RUNTIME = 72 * 60


@dataclass
class Throughput:
    """Rates of one GPU: training iterations per second at a resolution (at the config's
    batch), network evaluations of one map per second at a resolution while sampling, and
    while evaluating the bound (posterior scans)."""

    train_its: dict = field(default_factory=dict)       # resolution -> iterations/s
    evals: dict = field(default_factory=dict)           # resolution -> map evaluations/s (sampling)
    bound_evals: dict = field(default_factory=dict)     # resolution -> map evaluations/s (bound)
    source: str = "assumed"


def evaluations_per_theta(inference, timesteps=1000):
    """Network evaluations per parameter point of the ``inference`` settings (the config
    section, or part of it: :meth:`cosmodiff.inference.InferenceSettings.evaluations_per_theta`)."""
    return InferenceSettings.from_dict(inference).evaluations_per_theta(timesteps)


def _evals_per_map(section, timesteps):
    return timesteps if section["sampler"] == "ancestral" else int(section["steps"])


def rule_work(config):
    """{rule: [(kind, resolution, amount), ...]} of one job of every GPU rule: kind "train"
    (iterations), "eval" (map evaluations while sampling) or "bound" (map evaluations of the
    bound). validate_checkpoint lists both stages' jobs."""
    T = int(config["diffusion"]["timesteps"])
    native, low = int(config["data"]["resolution"]), int(config["prepare"]["low_resolution"])
    res = {"pretrain": low, "finetune": native}
    val, smp, inf, cost = config["validation"], config["sampling"], config["inference"], config["sampler_cost"]
    per_validation = val["n_points"] * val["n_samples"] * _evals_per_map(val, T)
    per_cost_map = sum(_evals_per_map({"sampler": name, "steps": steps}, T) for name, steps, _ in cost["samplers"])
    return {
        "pretrain": [("train", low, config["pretrain"]["iterations"])],
        "finetune": [("train", native, config["finetune"]["iterations"])],
        "validate_checkpoint": [("eval", low, per_validation), ("eval", native, per_validation)],
        "sample": [("eval", native, (smp["n_points"] + len(smp["points"])) * smp["n_samples"] * _evals_per_map(smp, T))],
        "sampler_cost": [("eval", res[cost["stage"]], cost["n_points"] * cost["n_samples"] * per_cost_map)],
        "posterior": [("bound", res[inf["stage"]], InferenceSettings.from_dict(inf).evaluations_per_field(T))],
    }


def project(config, throughput):
    """{rule: seconds of its longest job} of every GPU rule at ``throughput``."""
    out = {}
    for rule, jobs in rule_work(config).items():
        table = {"train": throughput.train_its, "eval": throughput.evals, "bound": throughput.bound_evals}
        rates = [table[kind][r] for kind, r, _ in jobs]
        out[rule] = max(amount / rate for (_, _, amount), rate in zip(jobs, rates))
    return out


def slurm_minutes(seconds, margin=SAFETY, step=RUNTIME_STEP, cap=MAX_RUNTIME):
    """The runtime (minutes) to request for a job projected to take ``seconds``:
    seconds x margin, rounded up to a multiple of ``step``, at most ``cap``."""
    return int(min(cap, max(step, math.ceil(seconds * margin / 60 / step) * step)))


def forward_flops(model_config, resolution, batch=1):
    """FLOPs of one forward pass of the network on ``batch`` maps, counted by
    FlopCounterMode on one real CPU pass (the meta device cannot run the network's input
    checks); cached per (config, resolution, batch)."""
    import json

    return _forward_flops(json.dumps(dict(model_config), sort_keys=True), int(resolution), int(batch))


@functools.lru_cache(maxsize=32)
def _forward_flops(model_json, resolution, batch):
    import json

    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from .unet import UNet

    model = UNet.from_config(json.loads(model_json)).eval()
    x = torch.zeros(batch, model.in_channels, resolution, resolution)
    t = torch.zeros(batch, dtype=torch.long)
    p = torch.full((batch, model.n_params), 0.5)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x, t, p)
    return counter.get_total_flops()


def assumed_throughput(config, tflops=ASSUMED_TFLOPS):
    """The :class:`Throughput` of a GPU sustaining ``tflops`` TFLOP/s on this config's
    network: a training iteration is three forward passes of its batch."""
    low, native = int(config["prepare"]["low_resolution"]), int(config["data"]["resolution"])
    rate = tflops * 1e12
    thr = Throughput(source=f"assumed {tflops:g} TFLOP/s")
    for r in (low, native):
        thr.evals[r] = thr.bound_evals[r] = rate / forward_flops(config["model"], r)
    thr.train_its[low] = rate / (3 * forward_flops(config["model"], low) * config["pretrain"]["batch_size"])
    thr.train_its[native] = rate / (3 * forward_flops(config["model"], native) * config["finetune"]["batch_size"])
    return thr
