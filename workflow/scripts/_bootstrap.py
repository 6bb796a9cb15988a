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


def set_threads(threads):
    """Limit torch to ``threads`` CPU threads (the rule's `threads`); 0 keeps torch's default
    (torch is then not imported here)."""
    if threads:
        import torch

        torch.set_num_threads(threads)


def setup(threads=0):
    """The preamble of a script: log to stderr, and set torch's CPU threads (``--threads``;
    0: torch's default). Returns the script's logger."""
    log = setup_logging()
    set_threads(threads)
    return log


def field_arguments(ap):
    """The arguments of a script that scans one test field with a selected checkpoint (rules
    posterior, posterior_cheap and posterior_mcmc): --selection, --data, --field, --settings."""
    ap.add_argument("--selection", required=True, type=Path, help="select_checkpoint's .json of the stage")
    ap.add_argument("--data", required=True, type=Path, help="prepared .h5 at the stage's resolution")
    ap.add_argument("--field", required=True, type=int, help="test field index")
    ap.add_argument("--settings", required=True, help="JSON of config inference")


def run(main):
    """Exit with ``main()``'s status; a user error (ValueError, OSError: bad input files or
    options) is logged as one line that says what to fix, without a traceback, status 1."""
    try:
        code = main()
    except (ValueError, OSError) as err:
        logging.getLogger(Path(sys.argv[0]).stem).error("%s", err)
        code = 1
    sys.exit(code)

