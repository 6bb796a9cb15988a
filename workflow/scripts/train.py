"""Train one stage of the diffusion model (rules `pretrain` and `finetune`).

Runs under plain python (one process: CUDA if present, else CPU) or under torchrun for
DistributedDataParallel. Exits with status 75 (EX_TEMPFAIL) after saving its state when
SLURM signals a time limit or preemption, so that a retry resumes.
"""

import argparse
import json
from pathlib import Path

import _bootstrap

from cosmodiff import plots
from cosmodiff.config import settings_from
from cosmodiff.prepare import read_normalisation
from cosmodiff.train import Diverged, Interrupted, TrainSettings, train

EXIT_INTERRUPTED = 75


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--stage", required=True, help="pretrain | finetune")
    ap.add_argument("--data", required=True, type=Path, help="prepared .h5 at this stage's resolution")
    ap.add_argument("--norm-data", required=True, type=Path, help="prepared .h5 whose min/max scale the maps")
    ap.add_argument("--model", required=True, help="JSON of config model")
    ap.add_argument("--diffusion", required=True, help="JSON of config diffusion")
    ap.add_argument("--settings", required=True, help="JSON of config pretrain / finetune")
    init = ap.add_mutually_exclusive_group()
    init.add_argument("--init", type=Path, default=None, help="checkpoint to initialise from")
    init.add_argument("--init-selection", type=Path, default=None, help="select_checkpoint's .json naming it")
    ap.add_argument("--checkpoint-dir", required=True, type=Path)
    ap.add_argument("--state-dir", required=True, type=Path, help="resumable state (not a workflow output)")
    ap.add_argument("--metrics", required=True, type=Path, help="metrics .jsonl")
    ap.add_argument("--loss-figure", required=True, type=Path, help="loss curve .png (+ .pdf)")
    ap.add_argument("--threads", type=int, default=0, help="CPU threads for torch (0: torch default)")
    args = ap.parse_args(argv)
    log = _bootstrap.setup(args.threads)
    normalisation = read_normalisation(args.norm_data)
    if args.init_selection:
        args.init = Path(json.loads(args.init_selection.read_text())["checkpoint"])
    settings = json.loads(args.settings)
    settings.pop("gpus", None)  # how many processes torchrun launched: not a training setting
    settings = settings_from(TrainSettings, settings, "training")
    try:
        paths = train(
            args.data,
            json.loads(args.model),
            json.loads(args.diffusion),
            settings,
            checkpoint_dir=args.checkpoint_dir,
            state_dir=args.state_dir,
            metrics_path=args.metrics,
            init_from=args.init,
            normalisation=normalisation,
            stage=args.stage,
        )
    except Interrupted as err:
        log.warning("%s", err)
        return EXIT_INTERRUPTED
    except Diverged as err:
        log.error("%s", err)
        return 1
    plots.save(plots.loss_curve(args.metrics, title=args.stage), args.loss_figure)
    log.info("wrote %d checkpoints, last %s", len(paths), paths[-1])
    return 0


if __name__ == "__main__":
    _bootstrap.run(main)
