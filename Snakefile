# Cosmological field emulation and parameter inference with diffusion models
# (Mudur, Cuesta-Lazaro & Finkbeiner 2023) as a reproducible workflow.
#
#   snakemake --cores 2                                  # the demo on embedded synthetic data
#   snakemake --cores 2 --configfile config/smoke.yaml   # the tiny test configuration
#   snakemake --profile profiles/slurm                   # the paper on a SLURM cluster
#
# The science lives in the cosmodiff package (workflow/cosmodiff); rules only wire files.


import os

# The demo config, next to this file (so `--directory` can put results elsewhere), only when
# no --configfile is given: a given config stands alone and is validated as it is, so a key it
# lacks is an error instead of the demo's value.
if not workflow.overwrite_configfiles:

    configfile: os.path.join(workflow.basedir, "config", "config.yaml")


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/emulate.smk"
include: "workflow/rules/infer.smk"
include: "workflow/rules/diagnose.smk"
include: "workflow/rules/baselines.smk"
include: "workflow/rules/paper.smk"


rule all:
    default_target: True
    input:
        rules.data.input,
        rules.train.input,
        rules.emulate.input,
        rules.infer.input,
        rules.diagnose.input,
        rules.baselines.input,
        rules.paper.output,
