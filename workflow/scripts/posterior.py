"""Posterior of (Omega_m, sigma_8) for one test field from the variational bound (rule
`posterior`), with the exact posterior beside it when the data are lognormal."""

import argparse
import json
import time
from pathlib import Path

import _bootstrap


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    _bootstrap.field_arguments(ap)
    ap.add_argument("--exact", default="", help="JSON {native_resolution, method} when the data are lognormal")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--out", required=True, type=Path, help="posterior grid .h5")
    ap.add_argument("--summary", required=True, type=Path, help="summary row .json")
    args = ap.parse_args(argv)
    log = _bootstrap.setup(args.threads)
    import torch

    from cosmodiff.emulator import Emulator
    from cosmodiff.inference import InferenceSettings
    from cosmodiff.inference.grid import coarse_to_fine, compare, scan_field
    from cosmodiff.inference.potential import Potential, exact_log10_potential
    from cosmodiff.prepare import inference_field

    section = json.loads(args.settings)
    s = InferenceSettings.from_dict(section)
    checkpoint = json.loads(args.selection.read_text())["checkpoint"]
    emu = Emulator.from_checkpoint(checkpoint, weights=s.weights)
    field, truth, sim, k = inference_field(args.data, args.field, split=s.split)
    potential = Potential.from_emulator(emu, field, **s.potential_options(args.field), dtype=torch.float32)
    t0 = time.perf_counter()
    post = scan_field(potential, s, truth)
    seconds = time.perf_counter() - t0
    row = {"field": args.field, "split": s.split, "sim": sim, "map": k, "checkpoint": checkpoint, "estimator": s.estimator,
           "scan": s.scan, "seconds": seconds, **post.summary(truth=truth)}
    attrs = {"field": args.field, "sim": sim, "truth": list(truth), "checkpoint": checkpoint, "settings": section}
    if args.exact:
        # the exact posterior of the same field, scanned with the same coarse-to-fine settings
        # on its own grids (it may sit where the network's fine grids do not reach)
        ex = json.loads(args.exact)
        import h5py

        with h5py.File(args.data, "r") as f:
            floored = json.loads(f.attrs.get("floored_fraction", "{}")).get("test", 0.0)
        row["floored_fraction"] = floored
        if floored > 0:
            log.warning("%.3g%% of the test maps' pixels were below prepare.log_floor: those fields are not lognormal "
                        "and their 'exact' posterior is an approximation (lower the floor for synthetic data)", 100 * floored)
        t1 = time.perf_counter()
        exact = coarse_to_fine(
            exact_log10_potential(field, ex["native_resolution"], ex["method"]), **s.coarse_to_fine_options()
        )
        row.update({f"exact_{k}": v for k, v in exact.summary(truth=truth).items() if k.endswith(("_mean", "_std", "_z"))})
        row.update({f"vs_exact_{k}": v for k, v in compare(post, exact).items() if k != "kl"})
        row["exact_seconds"] = time.perf_counter() - t1
        exact.to_hdf5(args.out.with_name(args.out.stem + "_exact.h5"), {"field": args.field, "truth": list(truth)})
    post.to_hdf5(args.out, attrs)
    args.summary.write_text(json.dumps(row, indent=1, default=float) + "\n")
    log.info("field %d (sim %d): %d evaluations in %.1f s\n%s", args.field, sim, post.evaluations, seconds,
             json.dumps(row, indent=1, default=float))
    return 0


if __name__ == "__main__":
    _bootstrap.run(main)
