# Parameter inference: one posterior job per test field (the cluster fans them out), then
# calibration over all fields, with the exact posterior beside the network's on lognormal data.
# The scripts read the section `inference` as cosmodiff.inference.InferenceSettings (which,
# like cosmodiff.layout, needs no torch to be read here).

from cosmodiff.inference.settings import InferenceSettings  # noqa: E402

EXACT = (
    as_json({"native_resolution": NATIVE, "method": config["prepare"]["downsample"]})
    if SOURCE == "synthetic" and config["data"]["synthetic"]["generator"] == "lognormal"
    else ""
)
FIELDS = range(config["inference"]["n_fields"])
ORACLE = bool(EXACT) and config["oracle"]["n_fields"] > 0
# a posterior's settings: all but n_fields, so that adding fields does not rerun the
# existing ones (the diagnose rules' scans use the same)
POSTERIOR_SETTINGS = as_json(
    {k: v for k, v in config["inference"].items() if k != "n_fields"}
)


rule posterior:
    """Grid posterior of one field (inference.split) from the selected checkpoint's variational bound."""
    input:
        selection=f"{RUN}/validation/{config['inference']['stage']}/selected.json",
        data=f"{RUN}/data/prepared_{STAGE_DATA[config['inference']['stage']]}.h5",
        script=script("posterior"),
    output:
        grid=f"{RUN}/inference/field_{{field}}.h5",
        summary=f"{RUN}/inference/field_{{field}}.json",
        exact=[f"{RUN}/inference/field_{{field}}_exact.h5"] if EXACT else [],
    log:
        f"{RUN}/logs/posterior/field_{{field}}.log",
    benchmark:
        f"{RUN}/benchmarks/posterior/field_{{field}}.tsv"
    wildcard_constraints:
        field=r"\d+",
    conda:
        "../../envs/torch.yaml"
    threads: 8
    resources:
        gpu=1,
        runtime=4 * 60,
        mem_mb=16000,
    params:
        settings=POSTERIOR_SETTINGS,
        exact=EXACT,
    shell:
        "python {input.script} --selection {input.selection:q} --data {input.data:q}"
        " --field {wildcards.field} --settings {params.settings:q} --exact={params.exact:q}"
        " --threads {threads} --out {output.grid:q} --summary {output.summary:q} 2> {log:q}"


rule calibration:
    """Summary table, coverage, and the inference figures over all test fields."""
    input:
        summaries=expand(f"{RUN}/inference/field_{{field}}.json", field=FIELDS),
        grids=expand(f"{RUN}/inference/field_{{field}}.h5", field=FIELDS),
        script=script("calibration"),
    output:
        table=f"{RUN}/inference/summary.csv",
        coverage=f"{RUN}/inference/coverage.json",
        contours=figure("inference_posteriors", "4. Inference"),
        calibration=figure("inference_calibration", "4. Inference"),
        exact=figure("inference_exact", "4. Inference") if EXACT else [],
    log:
        f"{RUN}/logs/calibration.log",
    benchmark:
        f"{RUN}/benchmarks/calibration.tsv"
    conda:
        "../../envs/analysis.yaml"
    params:
        outdir=lambda w, output: os.path.dirname(output.contours[0]),
        exact=int(bool(EXACT)),
    shell:
        "python {input.script} --summaries {input.summaries:q} --grids {input.grids:q}"
        " --exact {params.exact} --outdir {params.outdir:q} --table {output.table:q}"
        " --coverage {output.coverage:q} 2> {log:q}"


if ORACLE:

    # The whole inference chain against the exact posterior, the network replaced by the
    # exact denoiser of the lognormal data: no training needed.
    rule oracle:
        input:
            data=f"{RUN}/data/prepared_{STAGE_DATA[config['inference']['stage']]}.h5",
            norm=f"{RUN}/data/prepared_{NATIVE}.h5",
            script=script("oracle"),
        output:
            table=f"{RUN}/inference/oracle.csv",
            figure=figure("inference_oracle", "4. Inference"),
        log:
            f"{RUN}/logs/oracle.log",
        benchmark:
            f"{RUN}/benchmarks/oracle.tsv"
        conda:
            "../../envs/torch.yaml"
        params:
            diffusion=as_json(config["diffusion"]),
            # only the settings the oracle check uses: others do not rerun it
            inference=as_json(InferenceSettings.oracle_section(config["inference"])),
            oracle=as_json(config["oracle"]),
            exact=EXACT,
        shell:
            "python {input.script} --data {input.data:q} --norm {input.norm:q}"
            " --diffusion {params.diffusion:q} --inference {params.inference:q}"
            " --oracle {params.oracle:q} --exact {params.exact:q} --table {output.table:q}"
            " --figure {output.figure[0]:q} 2> {log:q}"


rule infer:
    """Target: posteriors of every test field and the calibration (every output listed, so
    a plain rerun rebuilds a missing posterior)."""
    input:
        expand(rules.posterior.output, field=FIELDS),
        rules.calibration.output,
        rules.oracle.output if ORACLE else [],
