"""Benchmark: training images/s of our U-Net against diffusers' UNet2DModel, side by side.

    pip install diffusers          # the peer; not a dependency of the project
    python benchmarks/training_throughput.py [--sizes demo paper] [--resolutions 64 256] [--steps 3]

For each network size (the `model` section of config/config.yaml = demo, config/paper.yaml =
paper) and resolution, both networks run the same training step (forward, Huber loss on the
noise, backward, Adam step) on the same batch; diffusers' model is matched in width
(block_out_channels = base * mults), depth (layers_per_block = num_res_blocks), GroupNorm
groups and attention placement, and its parameter count is printed beside ours. The ratio
ours / diffusers > 1 means ours is faster. On CUDA both run under bf16 autocast and the
achieved FLOP rate is reported as a fraction of the card's dense bf16 peak.
"""

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "workflow"))

from cosmodiff.unet import UNet, count_parameters  # noqa: E402

#: dense bf16 peak, TFLOP/s, by a substring of torch.cuda.get_device_name()
BF16_PEAK = {"H100 SXM": 989.0, "H100 PCIe": 756.0, "H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0}

BATCH = {("demo", 64): 16, ("demo", 256): 4, ("paper", 64): 20, ("paper", 256): 4}


def model_config(size):
    path = ROOT / "config" / ("config.yaml" if size == "demo" else "paper.yaml")
    return yaml.safe_load(path.read_text())["model"]


def diffusers_peer(cfg):
    from diffusers import UNet2DModel

    chans = tuple(cfg["base_channels"] * m for m in cfg["channel_mults"])
    down = tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in cfg["attention"])
    up = tuple("AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(cfg["attention"]))
    return UNet2DModel(
        in_channels=1,
        out_channels=1,
        block_out_channels=chans,
        layers_per_block=cfg["num_res_blocks"],
        down_block_types=down,
        up_block_types=up,
        norm_num_groups=cfg["groups"],
        add_attention=cfg["mid_attention"],
    )


def step_fn(model, kind, x, t, params, opt):
    def step():
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=x.device.type == "cuda"):
            out = model(x, t, params) if kind == "ours" else model(x, t).sample
            loss = F.huber_loss(out.float(), x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def flops_of(step):
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        step()
    return counter.get_total_flops()


def measure(step, device, steps):
    step()  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / steps


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", nargs="+", default=["demo", "paper"])
    ap.add_argument("--resolutions", nargs="+", type=int, default=[64, 256])
    ap.add_argument("--steps", type=int, default=3, help="timed steps per measurement")
    ap.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    card = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    peak = next((v for k, v in BF16_PEAK.items() if k in card), None) if device.type == "cuda" else None
    print(f"device: {card}; torch {torch.__version__}")
    print(f"{'size':<6}{'res':>5}{'batch':>6}{'ours params':>13}{'peer params':>13}{'ours img/s':>12}{'peer img/s':>12}{'ratio':>7}" + ("  ours %bf16 peak" if peak else ""))
    for size in args.sizes:
        cfg = model_config(size)
        for res in args.resolutions:
            b = BATCH[(size, res)]
            torch.manual_seed(0)
            x = torch.randn(b, 1, res, res, device=device)
            t = torch.randint(0, 1000, (b,), device=device)
            params = torch.rand(b, 2, device=device) * torch.tensor([0.4, 0.4], device=device) + torch.tensor([0.1, 0.6], device=device)
            rows = {}
            # diffusers' attention blocks are full softmax attention: at the first level of a
            # 256^2 map that is a 65,536^2 score matrix per head (17 GB), which no laptop holds
            first_attn = next((i for i, a in enumerate(cfg["attention"]) if a), None)
            tokens = (res // 2**first_attn) ** 2 if first_attn is not None else 0
            if tokens > 64 * 64:
                rows["peer"] = (count_parameters(diffusers_peer(cfg)), float("nan"), None)
                print(f"  (peer skipped at {size} {res}: full attention over {tokens:,} tokens needs "
                      f"{tokens**2 * 4 * b / 2**30:.0f} GiB per head)", flush=True)
            for kind in ("ours", "peer") if "peer" not in rows else ("ours",):
                model = (UNet.from_config(cfg) if kind == "ours" else diffusers_peer(cfg)).to(device)
                if kind == "ours":  # zero-initialised head: perturb so gradients are realistic
                    for p in model.parameters():
                        p.data.add_(1e-3 * torch.randn_like(p))
                opt = torch.optim.Adam(model.parameters(), lr=1e-4)
                step = step_fn(model, kind, x, t, params, opt)
                sec = measure(step, device, args.steps)
                rows[kind] = (count_parameters(model), b / sec, flops_of(step) / sec if peak and kind == "ours" else None)
                del model, opt
            ratio = rows["ours"][1] / rows["peer"][1]
            extra = f"  {100 * rows['ours'][2] / (peak * 1e12):.1f}%" if peak else ""
            print(f"{size:<6}{res:>5}{b:>6}{rows['ours'][0]:>13,}{rows['peer'][0]:>13,}{rows['ours'][1]:>12.2f}{rows['peer'][1]:>12.2f}{ratio:>7.2f}{extra}", flush=True)


if __name__ == "__main__":
    main()
