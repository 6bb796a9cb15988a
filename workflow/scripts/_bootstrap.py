"""Make the cosmodiff library importable from a workflow script, installed or not.

Scripts live in workflow/scripts/ and the library in workflow/cosmodiff/: putting workflow/
on sys.path lets a rule run in any environment that has the dependencies (a conda env made by
``--sdm conda`` included), without installing the package.
"""

import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def setup_logging():
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s", stream=sys.stderr)
    return logging.getLogger(Path(sys.argv[0]).stem)


def run(main):
    """Exit with ``main()``'s status; a user error (ValueError, OSError: bad input files or
    options) is logged as one line that says what to fix, without a traceback, status 1."""
    try:
        code = main()
    except (ValueError, OSError) as err:
        logging.getLogger(Path(sys.argv[0]).stem).error("%s", err)
        code = 1
    sys.exit(code)


def add_sampler_args(ap):
    """The sampling options shared by the scripts that generate maps (validate_checkpoint,
    sample): each rule passes them from its config section through `cli()`."""
    ap.add_argument("--n-points", type=int, required=True, help="simulations whose parameters are emulated")
    ap.add_argument("--n-samples", type=int, required=True, help="generated maps per point")
    from cosmodiff.protocol import PRECISIONS, WEIGHTS
    from cosmodiff.sampling import DDIM_SPACINGS, SAMPLERS

    ap.add_argument("--sampler", required=True, choices=SAMPLERS)
    ap.add_argument("--steps", type=int, required=True, help="ddim / dpm2m steps (network evaluations per map)")
    ap.add_argument("--spacing", default="linear", choices=DDIM_SPACINGS, help="ddim / dpm2m timestep grid")
    ap.add_argument("--seed", type=int, required=True)
    ap.add_argument("--batch-size", type=int, required=True)
    ap.add_argument("--clip", type=int, choices=[0, 1], default=1, help="clamp x0_hat to the training range")
    ap.add_argument("--weights", default="ema", choices=WEIGHTS, help="the checkpoint's EMA or raw weights")
    ap.add_argument("--precision", default="bf16", choices=PRECISIONS, help="bf16 autocast or fp32 (TF32) on CUDA")
    ap.add_argument("--threads", type=int, default=0)
    return ap
