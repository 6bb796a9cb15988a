# Parameter inference: one posterior job per test field (the cluster fans them out), then
# calibration over all fields, with the exact posterior beside the network's on lognormal data.

EXACT = (
    as_json({"native_resolution": NATIVE, "method": config["prepare"]["downsample"]})
    if SOURCE == "synthetic" and config["data"]["synthetic"]["generator"] == "lognormal"
    else ""
)
FIELDS = range(config["inference"]["n_fields"])


rule posterior:
    """Grid posterior of one test field from the selected checkpoint's variational bound."""
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
        settings=as_json(config["inference"]),
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


rule infer:
    """Target: posteriors of every test field and the calibration."""
    input:
        rules.calibration.output,
