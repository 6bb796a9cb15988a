"""The cheap posterior on the exact denoiser: is it within 0.1 sigma and 5% in width of the
exact posterior, and at what cost, beside the workflow's grid scan?

On a finished lognormal run (default: results/bench, after `make bench`), every test field
whose exact posterior the run wrote is scanned with the exact denoiser (the Wiener oracle of
the prepared fields) in place of the network, by
  - the run's grid scan (config inference: coarse_to_fine and its estimator), as it is and
    with its fine grid splined (the same evaluations, no trapezoid error),
  - the cheap scan (config baselines.cheap: scan local), and
  - the cheap scan with two refinements of its coarse grid and fewer strata (what a posterior
    narrower than a coarse cell, e.g. at 256^2, needs), at the same total cost,
each compared with the field's exact posterior (its fine grid splined onto 81^2 points).
Prints per method the network evaluations per field, the median |mean shift| in exact sigmas
and the median width ratio per parameter; --out writes the per-field rows.

    python benchmarks/cheap_posterior.py [--config config/bench.yaml] [--fields 50]

Uses torch on all cores (~16 s per field on 2 cores, 13 min for the bench): run nothing else beside it.
"""

import argparse
import json
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "workflow"))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(ROOT / "config/bench.yaml"), help="the run's config (lognormal data)")
    ap.add_argument("--fields", type=int, default=50, help="test fields (at most those with an exact posterior)")
    ap.add_argument("--out", type=Path, default=None, help="per-field rows as .csv")
    args = ap.parse_args(argv)
    import numpy as np
    import pandas as pd

    from cosmodiff.emulator import Emulator
    from cosmodiff.inference import InferenceSettings, WienerOracle, compare, scan_field, splined
    from cosmodiff.inference.grid import GridPosterior
    from cosmodiff.inference.potential import Potential
    from cosmodiff.prepare import inference_field

    config = yaml.safe_load(Path(args.config).read_text())
    run = ROOT / "results" / config["run"]
    stage = config["inference"]["stage"]
    checkpoint = json.loads((run / f"validation/{stage}/selected.json").read_text())["checkpoint"]
    emu = Emulator.from_checkpoint(ROOT / checkpoint)
    data = run / f"data/prepared_{emu.resolution}.h5"
    oracle = WienerOracle(emu.diffusion, emu.normalisation, native_resolution=config["data"]["resolution"],
                          method=config["prepare"]["downsample"])
    cheap = {**config["inference"], **config["baselines"]["cheap"]}
    methods = {
        "grid scan": InferenceSettings.from_dict(config["inference"]),
        "cheap scan": InferenceSettings.from_dict(cheap),
        "cheap scan, refined coarse": InferenceSettings.from_dict({**cheap, "coarse_refine": 2, "n_strata": 140}),
    }
    rows = []
    t0 = time.perf_counter()
    for i in range(args.fields):
        path = run / f"inference/field_{i}_exact.h5"
        if not path.exists():
            break
        field, truth, _, _ = inference_field(data, i, split=config["inference"]["split"])
        ref = splined(GridPosterior.from_hdf5(path)[0])
        for name, s in methods.items():
            post = scan_field(Potential(oracle, emu.diffusion, field, emu.normalisation, **s.potential_options(i)), s, truth)
            rows.append({"method": name, "field": i, "evaluations": post.evaluations, **compare(post, ref)})
            if s.scan != "local":  # the cheap scan splines its own grid
                rows.append({"method": f"{name}, splined", "field": i, "evaluations": post.evaluations,
                             **compare(splined(post), ref)})
        print(f"field {i}: {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    df = pd.DataFrame(rows)
    if args.out:
        df.to_csv(args.out, index=False)
    out = df.groupby("method", sort=False).agg(
        fields=("field", "size"), evaluations=("evaluations", "median"),
        shift_omega_m=("shift_omega_m", lambda x: np.median(np.abs(x))),
        shift_sigma_8=("shift_sigma_8", lambda x: np.median(np.abs(x))),
        width_omega_m=("width_omega_m", "median"), width_sigma_8=("width_sigma_8", "median"))
    out["within 0.1 sigma and 5%"] = ((out[["shift_omega_m", "shift_sigma_8"]] <= 0.1).all(axis=1)
                                      & ((out[["width_omega_m", "width_sigma_8"]] - 1).abs() <= 0.05).all(axis=1))
    print(f"exact denoiser of {config['run']}'s test fields, against their exact posteriors "
          "(median |mean shift| in exact sigmas, median width ratio):")
    with pd.option_context("display.width", 200):
        print(out.round(3).to_string())
    return 0


if __name__ == "__main__":
    sys.exit(main())
