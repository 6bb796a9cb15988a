"""User commands outside the workflow.

    python -m cosmodiff sample --checkpoint CKPT --omega-m 0.3 --sigma-8 0.8 -n 16 -o out.h5
    python -m cosmodiff infer --checkpoint CKPT field.npy [-o posterior.h5]
    python -m cosmodiff check-config config/my.yaml

(also installed as the ``cosmodiff`` command).
"""

from __future__ import annotations

import argparse
import sys


def _sample(args):
    import numpy as np

    from .cosmology import check_in_prior
    from .emulator import Emulator, write_samples
    from .files import check_output
    from .sampling import SamplerSettings

    check_in_prior(args.omega_m, args.sigma_8)
    check_output(args.output, [args.checkpoint], args.force)
    settings = SamplerSettings(sampler=args.sampler, steps=args.steps, spacing=args.spacing, clip=not args.no_clip,
                               batch_size=args.batch_size, seed=args.seed, n_samples=args.n)
    emu = Emulator.from_checkpoint(args.checkpoint, device=args.device, **settings.emulator_kwargs())
    log_maps = emu.sample(args.omega_m, args.sigma_8, settings.n_samples, settings, resolution=args.resolution, progress=True)
    write_samples(args.output, log_maps[None], np.array([[args.omega_m, args.sigma_8]]), {
        "checkpoint": str(args.checkpoint), **settings.attrs(),
        "evaluations_per_map": emu.evaluations(settings.sampler, settings.steps),
    })
    print(f"wrote {args.n} maps of {log_maps.shape[-1]}^2 pixels at Omega_m={args.omega_m}, sigma_8={args.sigma_8} to {args.output}")
    return 0


def read_field(path, resolution, units="physical", log_floor=1e9, downsample="bicubic"):
    """A map from .npy as the network sees it: log10 surface density at ``resolution``.
    ``units``: "physical" ((Msun/h)/(Mpc/h)^2, as CMD: floored at log_floor, log10) or "log10"
    (already prepared). A larger map is downsampled as in prepare; a smaller one is an error,
    and so are non-finite pixels, negative physical values and a physical map with more than
    half its pixels below ``log_floor`` (an empty map, or a log10 map given as physical)."""
    import numpy as np

    from . import camels, prepare

    shape, _ = camels.check_npy(path)
    if len(shape) != 2 or shape[0] != shape[1]:
        raise ValueError(f"{path} holds an array of shape {shape}; expected one square map (N, N)")
    n = shape[0]
    if n < resolution or n % resolution:
        raise ValueError(f"{path} is {n}x{n}: the checkpoint works at {resolution}x{resolution}, "
                         f"so the map needs a multiple of {resolution} pixels per side")
    field = np.load(path, allow_pickle=False)
    bad = np.count_nonzero(~np.isfinite(field))
    if bad:
        raise ValueError(f"{path} has {bad} non-finite pixels (NaN or inf); give a map with finite values")
    if units == "physical":
        if field.min() < 0:
            raise ValueError(f"{path} has negative values: not a surface density (use --units log10 for log maps)")
        floored = np.count_nonzero(field < log_floor) / field.size
        if floored > 0.5:
            raise ValueError(f"{floored:.0%} of the pixels of {path} lie below --log-floor {log_floor:g}: an empty map, or a "
                             "log10 map (then use --units log10)")
        field = prepare.log_transform(field, log_floor)
    if n > resolution:
        field = prepare.downsample(field, resolution, downsample)
    return np.asarray(field, dtype=np.float64)


def _check_config(args):
    from .config import load_config

    load_config(args.config)
    print(f"{args.config}: valid")
    return 0


def _model_check(args, emu, field, settings, post):
    """The misspecification check of the field at its posterior mode against
    ``--check-samples`` fields the model draws there (cosmodiff.inference.checks)."""
    from .inference.checks import check_posterior

    print(f"model check: {args.check_samples} fields drawn at the posterior mode, each scored there", file=sys.stderr)
    return check_posterior(emu, field, settings, post, args.check_samples, args.check_threshold, args.check_seed,
                           args.batch_size)


def _infer(args):
    import json
    from dataclasses import fields

    from .emulator import Emulator
    from .files import check_output
    from .inference import InferenceSettings
    from .inference.grid import PARAMS, coarse_to_fine
    from .inference.potential import Potential

    if args.output:
        check_output(args.output, [args.field, args.checkpoint], args.force)
    emu = Emulator.from_checkpoint(args.checkpoint, device=args.device)
    field = read_field(args.field, emu.resolution, args.units, args.log_floor, args.downsample)
    warning = emu.check_field(field, args.field)
    if warning:
        print(f"cosmodiff infer: warning: {warning}", file=sys.stderr)
    # estimator and scan options left out (argparse.SUPPRESS) keep the library's defaults,
    # which are InferenceSettings' own
    names = {f.name for f in fields(InferenceSettings)}
    settings = InferenceSettings.from_dict({k: v for k, v in vars(args).items() if k in names})
    potential = Potential.from_emulator(emu, field, **settings.potential_options(), progress=True)
    print(f"{potential.estimator} bound, {potential.evaluations_per_theta} network evaluations per parameter point",
          file=sys.stderr)
    post = coarse_to_fine(potential, **settings.coarse_to_fine_options())
    truth = tuple(args.truth) if args.truth else None
    summary = post.summary(truth=truth)
    for k, name in enumerate(PARAMS):
        print(f"{name:8s} mean {post.mean[k]:.4f}  std {post.std[k]:.4f}  "
              f"68% [{summary[f'{name}_lo68']:.4f}, {summary[f'{name}_hi68']:.4f}]  "
              f"95% [{summary[f'{name}_lo95']:.4f}, {summary[f'{name}_hi95']:.4f}]")
    print(f"{post.evaluations} network evaluations")
    check = _model_check(args, emu, field, settings, post) if args.check_samples else None
    if check is not None:
        print(f"cosmodiff infer: {'warning: ' if check.flagged else ''}{check.message()}", file=sys.stderr)
    if args.output:
        post.to_hdf5(args.output, {"checkpoint": str(args.checkpoint), "field": str(args.field),
                                   "truth": list(truth) if truth else [], "settings": json.dumps(vars(args), default=str),
                                   "model_check": json.dumps(check.to_dict() if check else None)})
        print(f"wrote the posterior grid to {args.output}")
    return 0


def _positive(text):
    """argparse type: an integer >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _at_least_two_or_zero(text):
    """argparse type: 0 (off) or an integer >= 2 (a spread needs two)."""
    value = int(text)
    if value == 1 or value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 (no check) or at least 2, got {value}")
    return value


class _SamplingNames:
    """argparse choices: the names of a :mod:`cosmodiff.sampling` registry (SAMPLERS,
    DDIM_SPACINGS), read only when a value is checked or refused, so that the other commands
    (check-config) do not import torch. Options using it need a metavar: argparse would
    otherwise list the choices while the parser is built."""

    def __init__(self, registry):
        self.registry = registry

    def _names(self):
        from . import sampling

        return list(getattr(sampling, self.registry))

    def __contains__(self, name):
        return name in self._names()

    def __iter__(self):
        return iter(self._names())


def main(argv=None):
    ap = argparse.ArgumentParser(prog="cosmodiff", description="Diffusion-model emulation and inference for CAMELS maps.")
    sub = ap.add_subparsers(dest="command", required=True)
    s = sub.add_parser("sample", help="generate maps at one (Omega_m, sigma_8)")
    s.add_argument("--checkpoint", required=True, help="a training checkpoint (.pt)")
    s.add_argument("--omega-m", type=float, required=True)
    s.add_argument("--sigma-8", type=float, required=True)
    s.add_argument("-n", type=_positive, default=16, help="number of maps")
    s.add_argument("-o", "--output", required=True, help="output .h5 (maps in (Msun/h)/(Mpc/h)^2)")
    s.add_argument("--force", action="store_true", help="replace an existing output file")
    s.add_argument("--sampler", choices=_SamplingNames("SAMPLERS"), default="dpm2m", metavar="SAMPLER",
                   help="ancestral (1000 network evaluations per map), ddim or dpm2m (DPM-Solver++(2M), second order)")
    s.add_argument("--steps", type=_positive, default=25, help="ddim / dpm2m steps")
    s.add_argument("--spacing", choices=_SamplingNames("DDIM_SPACINGS"), default="quadratic", metavar="GRID",
                   help="ddim / dpm2m timestep grid (quadratic: denser at small t, where log maps get their small scales)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--batch-size", type=_positive, default=16)
    s.add_argument("--no-clip", action="store_true", help="do not clamp x0_hat to the training range")
    s.add_argument("--resolution", type=_positive, default=None, help="default: the checkpoint's")
    s.add_argument("--device", default=None, help="cuda / cpu (default: cuda if available)")
    s.set_defaults(func=_sample)
    i = sub.add_parser("infer", help="posterior of (Omega_m, sigma_8) for one map from the variational bound")
    i.add_argument("field", help="a map in a .npy file: (N, N), N a multiple of the checkpoint's resolution")
    i.add_argument("--checkpoint", required=True, help="a training checkpoint (.pt)")
    i.add_argument("-o", "--output", default=None, help="write the posterior grid here (.h5)")
    i.add_argument("--force", action="store_true", help="replace an existing output file")
    i.add_argument("--units", choices=["physical", "log10"], default="physical",
                   help="physical: (Msun/h)/(Mpc/h)^2 as in CMD; log10: an already prepared map")
    i.add_argument("--log-floor", type=float, default=1e9, help="physical maps: floor before log10 (prepare.log_floor)")
    i.add_argument("--downsample", choices=["bicubic", "area"], default="bicubic", help="for maps larger than the checkpoint's")
    i.add_argument("--truth", type=float, nargs=2, default=None, metavar=("OMEGA_M", "SIGMA_8"), help="report z-scores")
    # estimator and scan options: left out, they keep the defaults of
    # cosmodiff.inference.InferenceSettings (those of Potential and coarse_to_fine)
    keep = argparse.SUPPRESS
    i.add_argument("--estimator", choices=["full", "truncated", "exact"], default=keep, help="default: full")
    i.add_argument("--t-max", type=int, default=keep, help="truncated: last timestep (authors: 10)")
    i.add_argument("--t-exact", type=int, default=keep, help="full: timesteps summed exactly")
    i.add_argument("--n-strata", type=int, default=keep, help="full: strata of the other timesteps")
    i.add_argument("--n-noise", type=int, default=keep, help="noise draws per timestep (default: more at the smallest t)")
    i.add_argument("--noise-seed", type=int, default=keep)
    i.add_argument("--n-coarse", type=int, default=keep, help="coarse grid points per axis over the prior")
    i.add_argument("--n-fine", type=int, default=keep, help="fine grid points per axis")
    i.add_argument("--max-refine", type=int, default=keep)
    i.add_argument("--batch-size", type=_positive, default=64)
    i.add_argument("--check-samples", type=_at_least_two_or_zero, default=8, metavar="K",
                   help="model check: K fields drawn at the posterior mode give the typical U per pixel; a field far "
                        "from it is flagged as one the model does not describe (0: no check)")
    i.add_argument("--check-threshold", type=float, default=5.0, help="model check: |z| that flags the field")
    i.add_argument("--check-seed", type=int, default=0, help="model check: seed of the drawn fields")
    i.add_argument("--device", default=None, help="cuda / cpu (default: cuda if available)")
    i.set_defaults(func=_infer)
    c = sub.add_parser("check-config", help="validate a workflow config (YAML syntax errors with file and line)")
    c.add_argument("config", help="a config .yaml")
    c.set_defaults(func=_check_config)
    args = ap.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, OSError) as err:  # user errors: one line, no traceback
        print(f"cosmodiff {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
