# Shared set-up: config validation, paths, and the script runner.
import json
import os
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError

sys.path.insert(0, str(Path(workflow.basedir) / "workflow"))
from cosmodiff import camels  # noqa: E402
from cosmodiff.config import ConfigError, validate_config  # noqa: E402

try:
    validate_config(config)
except ConfigError as err:
    raise WorkflowError(str(err))

RUN = f"results/{config['run']}"
SCRIPTS = Path(workflow.basedir) / "workflow" / "scripts"
NATIVE = config["data"]["resolution"]
LOW = config["prepare"]["low_resolution"]
RESOLUTIONS = [NATIVE, LOW]
SOURCE = config["data"]["source"]

if SOURCE == "local":
    RAW = str(Path(config["data"]["local_dir"]).expanduser())
else:
    RAW = f"{RUN}/data/raw"
RAW_MAPS = f"{RAW}/{camels.MAPS_FILENAME}"
RAW_PARAMS = f"{RAW}/{camels.PARAMS_FILENAME}"


def script(name):
    """Path of a workflow script, used as an input so that code edits rerun the rule."""
    return str(SCRIPTS / f"{name}.py")


def as_json(value):
    """A config subtree as one shell-quoted JSON argument."""
    return json.dumps(value, sort_keys=True)
