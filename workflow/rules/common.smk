# Shared set-up: config validation, paths, and the script runner.
import json
import os
import shlex
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.settings.types import DeploymentMethod

sys.path.insert(0, str(Path(workflow.basedir) / "workflow"))
from cosmodiff import camels  # noqa: E402
from cosmodiff.layout import checkpoint_iterations, checkpoint_name  # noqa: E402
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

# Rules call `python` (and `torchrun`): that of the interpreter running Snakemake, so a plain
# `.venv/bin/snakemake` works without activating the venv. Where Snakemake deploys conda envs
# or containers, theirs (the prefix would come after their activation and override it).
if not (
    workflow.deployment_settings.deployment_method
    & {DeploymentMethod.CONDA, DeploymentMethod.APPTAINER}
):
    _bin = shlex.quote(os.path.dirname(sys.executable))
    _py = shlex.quote(sys.executable)
    shell.prefix(
        f'set -euo pipefail; export PATH={_bin}:"$PATH"; python() {{{{ {_py} "$@"; }}}}; '
    )

if SOURCE == "local":
    RAW = str(Path(config["data"]["local_dir"]).expanduser())
else:
    RAW = f"{RUN}/data/raw"
RAW_MAPS = f"{RAW}/{camels.MAPS_FILENAME}"
RAW_PARAMS = f"{RAW}/{camels.PARAMS_FILENAME}"


def script(name):
    """Path of a workflow script, used as an input so that code edits rerun the rule."""
    return str(SCRIPTS / f"{name}.py")


def figure(name, category, caption=None):
    """A figure output: the PNG goes into `snakemake --report` with its caption
    (workflow/report/<caption>.rst), the PDF sits beside it."""
    png = report(
        f"{RUN}/figures/{name}.png",
        caption=f"../report/{caption or name}.rst",
        category=category,
    )
    return [png, f"{RUN}/figures/{name}.pdf"]


def as_json(value):
    """A config subtree as one JSON string, keys sorted (rules quote it with :q)."""
    return json.dumps(value, sort_keys=True)


# ---- training and validation file sets


def checkpoints(stage):
    its = checkpoint_iterations(
        config[stage]["iterations"], config[stage]["checkpoint_every"]
    )
    return [f"{RUN}/models/{stage}/{checkpoint_name(i)}" for i in its]


def launcher(stage):
    """python for one GPU (or the CPU), torchrun with one process per GPU above that."""
    gpus = config[stage]["gpus"]
    return "python" if gpus == 1 else f"torchrun --standalone --nproc_per_node={gpus}"


def train_params(stage):
    return dict(
        launcher=launcher(stage),
        model=as_json(config["model"]),
        diffusion=as_json(config["diffusion"]),
        # `init` is wiring (which file the stage starts from: finetune_init), not a setting
        settings=as_json({k: v for k, v in config[stage].items() if k != "init"}),
        state_dir=f"{RUN}/state/{stage}",
    )


def finetune_init():
    """(input files, script option) of the weights fine-tuning starts from (config
    finetune.init): the selected pretraining checkpoint, the last one (the authors'), or none.
    """
    init = config["finetune"]["init"]
    if init == "selected":
        return [f"{RUN}/validation/pretrain/selected.json"], "--init-selection"
    if init == "last":
        return checkpoints("pretrain")[-1:], "--init"
    return [], ""


STAGE_DATA = {"pretrain": LOW, "finetune": NATIVE}


def sampling_options():
    """Config validation without select_by, which only select_checkpoint reads (so that
    changing it does not regenerate any samples)."""
    return {k: v for k, v in config["validation"].items() if k != "select_by"}


def validation_settings():
    """validate_checkpoint's --settings."""
    return as_json(sampling_options())


def sampler_cost_settings():
    """sampler_cost's --settings: config validation's sampling settings at sampler_cost's
    points and maps (the sampler, steps and spacing come from sampler_cost.samplers)."""
    cost = config["sampler_cost"]
    return as_json(
        {
            **sampling_options(),
            "n_points": cost["n_points"],
            "n_samples": cost["n_samples"],
        }
    )


def validation_tables(stage):
    return [
        f"{RUN}/validation/{stage}/{os.path.basename(c).replace('.pt', '.csv')}"
        for c in checkpoints(stage)
    ]


def exact_posteriors(n):
    """The posterior rule's exact posteriors of test fields 0..n-1 (lognormal data)."""
    return [f"{RUN}/inference/field_{i}_exact.h5" for i in range(n)]
