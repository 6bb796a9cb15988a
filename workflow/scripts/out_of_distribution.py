"""The trained network on fields it never saw (rule `out_of_distribution`): test fields as
they are and with white noise, N-body maps at the test parameters, lognormal maps outside the
training box. Each is scanned as rule `posterior` scans, checked for misspecification (U per
pixel at the mode against fields the model draws there) and given NPE's posterior; one CSV
row per field."""

import argparse
import json
import time
from pathlib import Path

import _bootstrap


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--selection", required=True, type=Path, help="select_checkpoint's .json of the stage")
    ap.add_argument("--data", required=True, type=Path, help="prepared .h5 at the stage's resolution")
    ap.add_argument("--npe", required=True, type=Path, help="rule npe's trained posterior (.pt)")
    ap.add_argument("--exact", required=True, nargs="+", type=Path, help="field_<i>_exact.h5 of test fields 0, 1, ...")
    ap.add_argument("--settings", required=True, help="JSON of config inference")
    ap.add_argument("--ood", required=True, help="JSON of config baselines.out_of_distribution")
    ap.add_argument("--prepare", required=True, help="JSON {native, method, log_floor, nbody}: how maps are made")
    ap.add_argument("--npe-draws", type=int, default=2000, help="NPE posterior draws per field (config baselines.npe.draws)")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--out", required=True, type=Path, help="output .csv, a row per field")
    args = ap.parse_args(argv)
    log = _bootstrap.setup(args.threads)
    import pandas as pd
    import torch

    from cosmodiff.emulator import Emulator
    from cosmodiff.files import atomic_output
    from cosmodiff.inference import InferenceSettings
    from cosmodiff.inference.checks import check_posterior
    from cosmodiff.inference.grid import GridPosterior, compare, scan_field
    from cosmodiff.inference.npe import summaries
    from cosmodiff.inference.potential import Potential
    from cosmodiff.inference.shifted import generated_fields, with_white_noise
    from cosmodiff.prepare import inference_field

    s = InferenceSettings.from_dict(json.loads(args.settings))
    ood, prep = json.loads(args.ood), json.loads(args.prepare)
    emu = Emulator.from_checkpoint(json.loads(args.selection.read_text())["checkpoint"], weights=s.weights)
    npe = torch.load(args.npe, weights_only=False)
    n = min(int(ood["n_fields"]), len(args.exact))
    tests = [inference_field(args.data, i, split=s.split)[:2] for i in range(n)]
    truths = [t for _, t in tests]
    make = dict(native=prep["native"], resolution=emu.resolution, method=prep["method"], log_floor=prep["log_floor"])
    sets = [("in distribution", 0.0, i, f, t, args.exact[i]) for i, (f, t) in enumerate(tests)]
    for level in ood["noise_levels"]:
        sets += [("white noise", level, i, with_white_noise(f, level, ood["seed"] + i), t, args.exact[i])
                 for i, (f, t) in enumerate(tests)]
    nbody = generated_fields("nbody", truths, ood["seed"], options=prep["nbody"], **make)
    sets += [("N-body", 0.0, i, f, t, None) for i, (f, t) in enumerate(zip(nbody, truths))]
    outside = generated_fields("lognormal", ood["outside"], ood["seed"] + 1, **make)
    sets += [("outside the prior", 0.0, i, f, tuple(t), None) for i, (f, t) in enumerate(zip(outside, ood["outside"]))]
    rows = []
    for kind, level, i, field, truth, exact in sets:
        t0 = time.perf_counter()
        post = scan_field(Potential.from_emulator(emu, field, **s.potential_options(i), dtype=torch.float32), s, truth)
        check = check_posterior(emu, field, s, post, ood["check_samples"], ood["check_threshold"], seed=i, field_index=i)
        row = {"set": kind, "noise": level, "field": i, "seconds": time.perf_counter() - t0,
               **post.summary(truth=truth), "check_z": check.z, "flagged": check.flagged,
               **{f"npe_{k}": v for k, v in npe.summary(summaries(field)[0], truth=truth, n=args.npe_draws).items()}}
        if exact is not None:
            ref = GridPosterior.from_hdf5(exact)[0]
            row.update({f"exact_{k}": v for k, v in zip(("omega_m_mean", "sigma_8_mean", "omega_m_std", "sigma_8_std"),
                                                           (*ref.mean, *ref.std))})
            row.update({f"vs_exact_{k}": v for k, v in compare(post, ref).items() if k != "kl"})
        rows.append(row)
        log.info("%s %g field %d: mean (%.3f, %.3f) truth (%.3f, %.3f), check z %+.1f%s", kind, level, i, *post.mean,
                 *truth, check.z, " FLAGGED" if check.flagged else "")
    with atomic_output(args.out) as tmp:
        pd.DataFrame(rows).to_csv(tmp, index=False)
    return 0


if __name__ == "__main__":
    _bootstrap.run(main)
