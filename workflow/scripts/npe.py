"""The neural-posterior baseline (rule `npe`): sbi's NPE (a normalising flow) trained on the
training split's summaries (P(k) of the log field and its pixel PDF), calibrated by sbi's SBC
on validation maps, and its posterior for the test fields the diffusion posteriors use."""

import argparse
import json
import time
from pathlib import Path

import _bootstrap


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", required=True, type=Path, help="prepared .h5 at the inference stage's resolution")
    ap.add_argument("--fields", required=True, type=int, help="test fields 0..fields-1 (as rule posterior's)")
    ap.add_argument("--split", default="test", help="split of the fields (config inference.split)")
    ap.add_argument("--settings", required=True, help="JSON of config baselines.npe")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--table", required=True, type=Path, help="output .csv, a row per test field")
    ap.add_argument("--calibration", required=True, type=Path, help="output .json: SBC on validation maps, training")
    ap.add_argument("--model", required=True, type=Path, help="output .pt: the trained posterior (torch.save)")
    args = ap.parse_args(argv)
    log = _bootstrap.setup(args.threads)
    import numpy as np
    import pandas as pd
    import torch

    from cosmodiff.files import atomic_output
    from cosmodiff.inference.npe import NPEBaseline, summaries
    from cosmodiff.prepare import inference_field, load_split

    s = json.loads(args.settings)
    maps, params, _ = load_split(args.data, "train")
    t0 = time.perf_counter()
    npe = NPEBaseline(density_estimator=s["density_estimator"], seed=s["seed"])
    npe.fit(params[:, :2], summaries(maps), max_epochs=s["max_epochs"])
    train_seconds = time.perf_counter() - t0
    log.info("NPE (%s) trained on %d maps in %.0f s (%d epochs)", s["density_estimator"], len(maps), train_seconds,
             npe.epochs)
    vmaps, vparams, _ = load_split(args.data, "val")
    pick = np.random.default_rng(s["seed"]).permutation(len(vmaps))[: s["sbc_maps"]]
    calib = npe.calibration(vparams[pick, :2], summaries(vmaps[pick]), n=s["draws"] // 4)
    calib.update(train_maps=int(len(maps)), epochs=npe.epochs, train_seconds=train_seconds,
                 density_estimator=s["density_estimator"])
    log.info("SBC on %d validation maps: %s", len(pick), json.dumps(calib))
    rows = []
    for i in range(args.fields):
        field, truth, sim, k = inference_field(args.data, i, split=args.split)
        t1 = time.perf_counter()
        row = npe.summary(summaries(field)[0], truth=truth, n=s["draws"])
        rows.append({"field": i, "sim": sim, "map": k, "omega_m_truth": truth[0], "sigma_8_truth": truth[1], **row,
                     "seconds": time.perf_counter() - t1})
    with atomic_output(args.table) as tmp:
        pd.DataFrame(rows).to_csv(tmp, index=False)
    with atomic_output(args.model) as tmp:
        torch.save(npe, tmp)
    args.calibration.write_text(json.dumps(calib, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    _bootstrap.run(main)
