# The paper: every figure and table of paper/main.tex is an input, generated from the run's
# results, and the PDF unless paper.pdf is false. Under each figure: the rule that made it
# and the short hash of the config sections it depends on; on the title page: the commit.

from cosmodiff import manuscript  # noqa: E402

# which optional parts exist, as infer.smk and diagnose.smk define them
PAPER_FLAGS = dict(
    exact=bool(EXACT),
    oracle=ORACLE,
    diagnostic=DIAGNOSTIC,
    summary=SUMMARY,
    baselines=BASELINES,
)
PAPER_FIGURES = manuscript.figure_list(config, **PAPER_FLAGS)


# Runs where the workflow was started: TeX need not exist on cluster nodes.
localrules:
    paper,


rule paper:
    """Generated numbers, tables and provenance from the results; the PDF with TeX."""
    input:
        main=os.path.join(workflow.basedir, "paper", "main.tex"),
        data=f"{RUN}/data/prepared_{NATIVE}.h5",
        selections=expand(
            f"{RUN}/validation/{{stage}}/selected.json", stage=["pretrain", "finetune"]
        ),
        summaries=expand(
            f"{RUN}/validation/{{stage}}/summary.csv", stage=["pretrain", "finetune"]
        ),
        validation=validation_tables("finetune"),
        statistics=rules.plot_emulation.output.table,
        samples=rules.sample.output[0],
        sampler_cost=rules.sampler_cost.output.table,
        inference=rules.calibration.output.table,
        coverage=rules.calibration.output.coverage,
        oracle=rules.oracle.output.table if ORACLE else [],
        targets=rules.likelihood_summary.output.targets if SUMMARY else [],
        comparison=rules.comparison.output.table if BASELINES else [],
        ood_summary=rules.comparison.output.ood if BASELINES else [],
        npe_sbc=rules.npe.output.calibration if BASELINES else [],
        figures=[f"{RUN}/figures/{f['name']}.png" for f in PAPER_FIGURES],
        script=script("paper"),
    output:
        main=f"{RUN}/paper/main.tex",
        build_log=f"{RUN}/paper/build.log",
        pdf=[f"{RUN}/paper/main.pdf"] if config["paper"]["pdf"] else [],
    log:
        f"{RUN}/logs/paper.log",
    benchmark:
        f"{RUN}/benchmarks/paper.tsv"
    conda:
        "../../envs/torch.yaml"
    params:
        config=as_json(config),
        flags=as_json(PAPER_FLAGS),
        figures=as_json(PAPER_FIGURES),
        git=as_json(manuscript.git_state(workflow.basedir)),
        pdf=int(config["paper"]["pdf"]),
        optional=lambda w, input: " ".join(
            f"--{k.replace('_', '-')} {shlex.quote(str(input[k]))}"
            for k in ("oracle", "targets", "comparison", "ood_summary", "npe_sbc")
            if input[k]
        ),
        outdir=lambda w, output: os.path.dirname(output.main),
    shell:
        "python {input.script} --main {input.main:q} --data {input.data:q}"
        " --selections {input.selections:q} --summaries {input.summaries:q}"
        " --validation {input.validation:q} --statistics {input.statistics:q}"
        " --samples {input.samples:q} --sampler-cost {input.sampler_cost:q}"
        " --inference-summary {input.inference:q}"
        " --coverage {input.coverage:q} {params.optional} --config {params.config:q}"
        " --flags {params.flags:q} --figures {params.figures:q} --git {params.git:q}"
        " --pdf {params.pdf} --outdir {params.outdir:q} --build-log {output.build_log:q}"
        " 2> {log:q} || (tail -n 3 {log:q} >&2; exit 1)"
