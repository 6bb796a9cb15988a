"""The inference machinery against the exact posterior with no network (rule `oracle`).

For the first lognormal test fields, the exact denoiser (a Wiener filter) replaces the network
in the potential; on one grid around the exact posterior the posteriors of the exact likelihood, of the
whole bound without noise, and of the Monte Carlo estimators (as configured for the network,
the library's default, and the authors' truncated sum) are compared: table and figure.
"""

import argparse
import json
from dataclasses import replace
from pathlib import Path

import _bootstrap
import pandas as pd


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", required=True, type=Path, help="prepared .h5 at the inference stage's resolution")
    ap.add_argument("--norm", required=True, type=Path, help="prepared .h5 whose norm_min/norm_max the network was trained with")
    ap.add_argument("--diffusion", required=True, help="JSON of config diffusion")
    ap.add_argument("--inference", required=True, help="JSON of config inference (estimator settings)")
    ap.add_argument("--oracle", required=True, help="JSON of config oracle")
    ap.add_argument("--exact", required=True, help="JSON {native_resolution, method}")
    ap.add_argument("--table", required=True, type=Path, help="output .csv, a row per field and method")
    ap.add_argument("--figure", required=True, type=Path, help="output .png (and .pdf beside it)")
    args = ap.parse_args(argv)
    log = _bootstrap.setup_logging()
    from cosmodiff import plots
    from cosmodiff.inference import InferenceSettings
    from cosmodiff.inference.oracle import oracle_check
    from cosmodiff.prepare import inference_field, read_normalisation
    from cosmodiff.diffusion import GaussianDiffusion

    diffusion = GaussianDiffusion.from_config(json.loads(args.diffusion))
    # this rule gets no `estimator` setting: it scans both estimators below
    s = InferenceSettings.from_dict(json.loads(args.inference))
    o, ex = json.loads(args.oracle), json.loads(args.exact)
    normalisation = read_normalisation(args.norm)
    rows, posts, truths = [], [], []
    for i in range(o["n_fields"]):
        field, truth, sim, _ = inference_field(args.data, i)
        estimators = {
            "full": replace(s, estimator="full").estimator_options(i),
            # the library's default full estimator: 20 exact t with extra draws at the smallest
            # t, 80 strata (164 evaluations per theta)
            "full, default": InferenceSettings(estimator="full", noise_seed=s.noise_seed).estimator_options(i),
            "truncated": replace(s, estimator="truncated", n_noise=1).estimator_options(i),
        }
        field_posts, field_rows = oracle_check(
            field, diffusion, normalisation, estimators, native_resolution=ex["native_resolution"], method=ex["method"],
            n_grid=o["n_grid"],
        )
        for r in field_rows:
            r.update(field=i, sim=sim, omega_m_truth=truth[0], sigma_8_truth=truth[1])
            log.info("field %d %-16s shift %+.3f %+.3f sigma, width %.3f %.3f, %d evaluations, %.1f s", i, r["method"],
                     r["shift_omega_m"], r["shift_sigma_8"], r["width_omega_m"], r["width_sigma_8"], r["evaluations"], r["seconds"])
        rows += field_rows
        posts.append(field_posts)
        truths.append(truth)
    df = pd.DataFrame(rows)
    df = df[["field", "sim", "omega_m_truth", "sigma_8_truth", *[c for c in df.columns if c not in
                                                                 ("field", "sim", "omega_m_truth", "sigma_8_truth")]]]
    df.to_csv(args.table, index=False)
    plots.save(plots.oracle_check(posts, truths, df, normalisation), args.figure)
    summary = df.groupby("method", sort=False)[["shift_omega_m", "shift_sigma_8", "width_omega_m", "width_sigma_8"]]
    log.info("max |shift| and width range per method:\n%s", summary.agg(["min", "max"]).round(3).to_string())
    return 0


if __name__ == "__main__":
    _bootstrap.run(main)
