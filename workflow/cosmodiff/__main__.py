"""User commands outside the workflow.

    python -m cosmodiff sample --checkpoint CKPT --omega-m 0.3 --sigma-8 0.8 -n 16 -o out.h5

(also installed as the ``cosmodiff`` command).
"""

from __future__ import annotations

import argparse
import sys


def _sample(args):
    import numpy as np

    from .cosmology import check_in_prior
    from .emulator import Emulator, write_samples

    check_in_prior(args.omega_m, args.sigma_8)
    emu = Emulator.from_checkpoint(args.checkpoint, device=args.device)
    log_maps = emu.sample(args.omega_m, args.sigma_8, args.n, sampler=args.sampler, steps=args.steps, seed=args.seed,
                          batch_size=args.batch_size, resolution=args.resolution, clip=not args.no_clip, progress=True)
    write_samples(args.output, log_maps[None], np.array([[args.omega_m, args.sigma_8]]), {
        "checkpoint": str(args.checkpoint), "sampler": args.sampler, "steps": args.steps,
        "evaluations_per_map": emu.evaluations(args.sampler, args.steps), "seed": args.seed,
    })
    print(f"wrote {args.n} maps of {log_maps.shape[-1]}^2 pixels at Omega_m={args.omega_m}, sigma_8={args.sigma_8} to {args.output}")
    return 0


def main(argv=None):
    ap = argparse.ArgumentParser(prog="cosmodiff", description="Diffusion-model emulation and inference for CAMELS maps.")
    sub = ap.add_subparsers(dest="command", required=True)
    s = sub.add_parser("sample", help="generate maps at one (Omega_m, sigma_8)")
    s.add_argument("--checkpoint", required=True, help="a training checkpoint (.pt)")
    s.add_argument("--omega-m", type=float, required=True)
    s.add_argument("--sigma-8", type=float, required=True)
    s.add_argument("-n", type=int, default=16, help="number of maps")
    s.add_argument("-o", "--output", required=True, help="output .h5 (maps in (Msun/h)/(Mpc/h)^2)")
    s.add_argument("--sampler", choices=["ancestral", "ddim"], default="ddim")
    s.add_argument("--steps", type=int, default=50, help="DDIM steps")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--batch-size", type=int, default=16)
    s.add_argument("--no-clip", action="store_true", help="do not clamp x0_hat to the training range")
    s.add_argument("--resolution", type=int, default=None, help="default: the checkpoint's")
    s.add_argument("--device", default=None, help="cuda / cpu (default: cuda if available)")
    s.set_defaults(func=_sample)
    args = ap.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError) as err:
        print(f"cosmodiff {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
