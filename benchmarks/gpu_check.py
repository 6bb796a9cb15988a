"""GPU check: throughput of the paper-size network, and the wall time of every GPU rule.

    python benchmarks/gpu_check.py                      # on a GPU: config/paper.yaml, ~5-10 minutes
    python benchmarks/gpu_check.py --config config/paper.yaml config/paper+few-step.yaml
    python benchmarks/gpu_check.py --tiny               # the same code at a tiny size (CPU, seconds)

On the config's network (256^2 and the pretraining resolution, the config's batches) it
measures, with the workflow's own code paths (diffusion.training_losses, p_mean_variance,
Emulator.sample, inference.Potential):

- training iterations/s in fp32 (TF32) and bf16, plain, channels_last, and channels_last with
  torch.compile (``--no-compile`` skips the two compilations, a few minutes);
- peak GPU memory of each, FLOPs per iteration and the achieved fraction of the card's dense
  bf16 peak;
- ancestral samples/s (one network evaluation per step, T steps) and DPM-Solver++(2M)
  samples/s (a whole 25-step sample), bound evaluations/s (a posterior's network calls);

then projects the wall time of one job of every GPU rule of the config
(:func:`cosmodiff.costs.project`, at the precision and layout the workflow uses: the config's
precision, channels_last on CUDA, no compile) beside the assumed projection behind the
runtimes of profiles/slurm/config.yaml. It prints a table and writes a CSV (``--out``).
``--tiny`` replaces the network, resolutions and batches by tiny ones so that the test suite
runs this file on a CPU (tests/test_gpu_check.py); its projection is then meaningless.
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "workflow"))

from cosmodiff import costs, protocol  # noqa: E402
from cosmodiff.config import load_config  # noqa: E402
from cosmodiff.emulator import Emulator  # noqa: E402
from cosmodiff.diffusion import GaussianDiffusion  # noqa: E402
from cosmodiff.sampling import SamplerSettings  # noqa: E402
from cosmodiff.inference import InferenceSettings  # noqa: E402
from cosmodiff.inference.potential import Potential  # noqa: E402
from cosmodiff.unet import UNet, count_parameters  # noqa: E402

#: dense bf16 peak, TFLOP/s, by a substring of torch.cuda.get_device_name() (first match)
BF16_PEAK = {"H100 PCIe": 756.0, "H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0}
TINY = {"model": {"base_channels": 8, "channel_mults": [1, 2], "num_res_blocks": 1, "attention": [False, True],
                  "time_dim": 32, "groups": 4},
        "data": {"resolution": 32}, "prepare": {"low_resolution": 16}, "pretrain": {"batch_size": 2},
        "finetune": {"batch_size": 2}, "validation": {"batch_size": 2}, "inference": {"batch_size": 8}}


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device, repeats):
    """Seconds per call of fn after one warm-up call (compilation happens there)."""
    fn()
    sync(device)
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    sync(device)
    return (time.perf_counter() - t0) / repeats


def peak_memory_gb(device):
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")


def reset_memory(device):
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def cond_batch(n, device):
    return torch.tensor([[0.3, 0.8]] * n, device=device)


def train_row(cfg, diffusion, res, batch, precision, layout, compiled, steps, device):
    """One training configuration: iterations/s, peak memory, FLOPs per iteration."""
    torch.manual_seed(0)
    model = UNet.from_config(cfg["model"]).to(device)
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    model = model.to(memory_format=fmt)
    net = torch.compile(model) if compiled else model
    opt = torch.optim.Adam(model.parameters(), lr=2e-4)
    x0 = torch.randn(batch, 1, res, res, device=device).contiguous(memory_format=fmt)
    t = torch.randint(diffusion.T, (batch,), device=device)
    cond = cond_batch(batch, device)

    def step():
        with protocol.precision(device, precision):
            loss = diffusion.training_losses(net, x0, cond, t=t).float().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    reset_memory(device)
    seconds = timed(step, device, steps)
    flops = None
    if not compiled:
        from torch.utils.flop_counter import FlopCounterMode

        with FlopCounterMode(display=False) as counter:
            step()
        flops = counter.get_total_flops()
    return {"what": "train", "resolution": res, "batch": batch, "precision": precision, "layout": layout,
            "compile": compiled, "its_per_s": 1 / seconds, "images_per_s": batch / seconds,
            "peak_gb": peak_memory_gb(device), "tflop_per_it": flops / 1e12 if flops else np.nan}


def sampling_rows(cfg, diffusion, res, precision, steps, device):
    """Ancestral steps (p_mean_variance: one evaluation per map) and a whole DPM-Solver++(2M)
    sample at the validation batch."""
    batch = cfg["validation"]["batch_size"]
    model = UNet.from_config(cfg["model"]).to(device).eval()
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    x = torch.randn(batch, 1, res, res, device=device)
    cond, t = cond_batch(batch, device), torch.full((batch,), diffusion.T // 2, device=device)

    def ancestral_step():
        with torch.no_grad(), protocol.precision(device, precision):
            diffusion.p_mean_variance(model, x, t, cond)

    reset_memory(device)
    per_step = timed(ancestral_step, device, steps)
    evals = batch / per_step
    rows = [{"what": "sample_ancestral", "resolution": res, "batch": batch, "precision": precision, "evals_per_s": evals,
             "samples_per_s": evals / diffusion.T, "peak_gb": peak_memory_gb(device)}]
    emu = Emulator(model, diffusion, (-1.0, 1.0), res, device, precision)
    dpm_steps = 25
    settings = SamplerSettings(sampler="dpm2m", steps=dpm_steps, spacing="quadratic", clip=False, batch_size=batch, seed=0)
    seconds = timed(lambda: emu.sample(0.3, 0.8, batch, settings), device, 1)
    rows.append({"what": "sample_dpm2m", "resolution": res, "batch": batch, "precision": precision,
                 "evals_per_s": batch * dpm_steps / seconds, "samples_per_s": batch / seconds, "peak_gb": peak_memory_gb(device)})
    return rows, evals


def bound_row(cfg, diffusion, res, device):
    """Network evaluations per second of the config's posterior (the workflow's float32)."""
    s = InferenceSettings.from_dict(cfg["inference"])
    model = UNet.from_config(cfg["model"]).to(device).eval()
    field = np.random.default_rng(0).normal(10.9, 0.5, (res, res))
    pot = Potential(model, diffusion, field, (9.4, 15.4), **s.potential_options(), device=device, dtype=torch.float32)
    n_theta = max(1, -(-s.batch_size // pot.evaluations_per_theta))  # at least one full batch
    theta = np.column_stack([np.linspace(0.2, 0.4, n_theta), np.full(n_theta, 0.8)])
    reset_memory(device)
    pot(theta[:1])  # warm-up
    sync(device)
    before, t0 = pot.evaluations, time.perf_counter()
    pot(theta)
    sync(device)
    evals = (pot.evaluations - before) / (time.perf_counter() - t0)
    return {"what": "bound", "resolution": res, "batch": s.batch_size, "precision": "fp32", "evals_per_s": evals,
            "peak_gb": peak_memory_gb(device)}


def measure(cfg, device, steps, compile_):
    """Every row of the check and the Throughput the workflow would see."""
    diffusion = GaussianDiffusion.from_config(cfg["diffusion"])
    native, low = cfg["data"]["resolution"], cfg["prepare"]["low_resolution"]
    layout = "channels_last" if device.type == "cuda" else "contiguous"
    rows, thr = [], costs.Throughput(source=f"measured on {device_name(device)}")
    for precision in protocol.PRECISIONS:
        for lay, comp in (("contiguous", False), ("channels_last", False), ("channels_last", True)):
            if comp and not compile_:
                continue
            rows.append(train_row(cfg, diffusion, native, cfg["finetune"]["batch_size"], precision, lay, comp, steps, device))
    for stage, res in (("pretrain", low), ("finetune", native)):
        key = (res, cfg[stage]["batch_size"], cfg[stage]["precision"], layout, False)  # what the workflow runs
        row = next((r for r in rows if r["what"] == "train" and (r["resolution"], r["batch"], r["precision"], r["layout"], r["compile"]) == key), None)
        if row is None:
            rows.append(row := train_row(cfg, diffusion, *key, steps, device))
        thr.train_its[res] = row["its_per_s"]
        samp, thr.evals[res] = sampling_rows(cfg, diffusion, res, cfg["validation"]["precision"], steps, device)
        rows += samp
        rows.append(bound_row(cfg, diffusion, res, device))
        thr.bound_evals[res] = rows[-1]["evals_per_s"]
    peak = next((v for k, v in BF16_PEAK.items() if k in device_name(device)), None)
    for r in rows:
        if r["what"] == "train" and peak and not np.isnan(r["tflop_per_it"]):
            r["bf16_peak_fraction"] = r["tflop_per_it"] * r["its_per_s"] / peak
    return rows, thr


def device_name(device):
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"


def projection_rows(cfg, thr, profile):
    """Wall time of one job of every GPU rule: measured, and at the assumed rate (the runtimes
    of profiles/slurm/config.yaml)."""
    measured, assumed = costs.project(cfg, thr), costs.project(cfg, costs.assumed_throughput(cfg))
    return [{"what": "projection", "rule": rule, "measured_h": measured[rule] / 3600, "runtime_min": costs.slurm_minutes(measured[rule]),
             "assumed_h": assumed[rule] / 3600, "assumed_runtime_min": costs.slurm_minutes(assumed[rule]),
             "profile_runtime_min": profile.get(rule, {}).get("runtime")} for rule in costs.GPU_RULES]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", nargs="+", default=[str(ROOT / "config" / "paper.yaml")], help="config file, then overlays")
    ap.add_argument("--tiny", action="store_true", help="tiny network, resolutions and batches (the CPU test)")
    ap.add_argument("--steps", type=int, default=10, help="timed repetitions of each measurement")
    ap.add_argument("--no-compile", dest="compile", action="store_false", help="skip the torch.compile rows")
    ap.add_argument("--out", type=Path, default=Path("gpu_check.csv"))
    args = ap.parse_args(argv)
    cfg = load_config(*args.config)
    if args.tiny:
        cfg = {k: ({**v, **TINY[k]} if k in TINY else v) for k, v in cfg.items()}
        cfg["inference"] = {**cfg["inference"], "t_max": min(cfg["inference"]["t_max"], 2)}
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = UNet.from_config(cfg["model"])
    print(f"{device_name(device)}: network of {' + '.join(args.config)}{' (tiny)' if args.tiny else ''}, "
          f"{count_parameters(model) / 1e6:.2f}M parameters (the authors': 31.27M)")
    rows, thr = measure(cfg, device, args.steps, args.compile and not args.tiny)
    profile = yaml.safe_load((ROOT / "profiles" / "slurm" / "config.yaml").read_text())["set-resources"]
    rows += projection_rows(cfg, thr, profile)
    table = pd.DataFrame(rows)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out, index=False)
    with pd.option_context("display.width", 200, "display.max_columns", 30, "display.float_format", "{:.4g}".format):
        for what, part in table.groupby("what", sort=False):
            print(f"\n{what}\n" + part.dropna(axis=1, how="all").drop(columns="what").to_string(index=False))
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
