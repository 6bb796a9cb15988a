"""NUTS on the bound of one test field (rule `posterior_mcmc`): pyro's No-U-Turn sampler on
exp(-U(theta)) under the box prior, U differentiable through the network's conditioning, with
the estimator of the grid scans or a cheaper one (config baselines.mcmc_estimator); beside it
the coarse-to-fine grid posterior of the same U, which the chain should match."""

import argparse
import json
from pathlib import Path

import _bootstrap


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    _bootstrap.field_arguments(ap)
    ap.add_argument("--estimator", required=True, help="JSON of config baselines.mcmc_estimator: inference keys replaced")
    ap.add_argument("--mcmc", required=True, help="JSON of config baselines.mcmc: keywords of cosmodiff.inference.mcmc.nuts")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--samples", required=True, type=Path, help="output .npz of the chains")
    ap.add_argument("--summary", required=True, type=Path, help="output summary row .json")
    args = ap.parse_args(argv)
    log = _bootstrap.setup(args.threads)
    import numpy as np
    import torch

    from cosmodiff.emulator import Emulator
    from cosmodiff.files import atomic_output
    from cosmodiff.inference import InferenceSettings
    from cosmodiff.inference.grid import PARAMS, coarse_to_fine
    from cosmodiff.inference.mcmc import nuts
    from cosmodiff.inference.potential import Potential
    from cosmodiff.prepare import inference_field

    s = InferenceSettings.from_dict({**json.loads(args.settings), **json.loads(args.estimator)})
    checkpoint = json.loads(args.selection.read_text())["checkpoint"]
    emu = Emulator.from_checkpoint(checkpoint, weights=s.weights)
    field, truth, sim, k = inference_field(args.data, args.field, split=s.split)
    potential = Potential.from_emulator(emu, field, **s.potential_options(args.field), dtype=torch.float32)
    log.info("field %d (sim %d): NUTS on %d network evaluations per theta", args.field, sim, potential.evaluations_per_theta)
    res = nuts(potential, progress=True, **json.loads(args.mcmc))
    # the grid scan of the same U: the chain should agree with it within its Monte Carlo error
    same = coarse_to_fine(potential.with_options(), **s.coarse_to_fine_options())
    row = {"field": args.field, "split": s.split, "sim": sim, "map": k, "checkpoint": checkpoint,
           "evaluations_per_theta": potential.evaluations_per_theta, **res.summary(), **res.interval_summary(truth),
           **{f"same_u_grid_{p}_{m}": float(v[j]) for j, p in enumerate(PARAMS) for m, v in
              (("mean", same.mean), ("std", same.std))}, "same_u_grid_evaluations": same.evaluations}
    with atomic_output(args.samples) as tmp, open(tmp, "wb") as f:
        np.savez(f, samples=res.samples, truth=np.asarray(truth))
    args.summary.write_text(json.dumps(row, indent=1, default=float) + "\n")
    log.info("%s", json.dumps(row, indent=1, default=float))
    return 0


if __name__ == "__main__":
    _bootstrap.run(main)
