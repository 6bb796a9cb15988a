# The paper's open questions (README, "Beyond the grid scan"), lognormal data only: a cheap
# posterior (at most 10,000 network evaluations per field), NUTS on the bound, an NPE baseline
# and fields the network never saw, each against the exact posterior of the same test fields.
# Needs the baselines extra (pyro-ppl, sbi): `make bench` installs it.

BASE = config["baselines"]
BASELINES = bool(EXACT) and BASE["enabled"]
OOD = BASE["out_of_distribution"]


if BASELINES:

    rule posterior_cheap:
        """The cheap posterior of one field: rule posterior's settings with baselines.cheap."""
        input:
            selection=INF_SELECTION,
            data=INF_DATA,
            script=script("posterior"),
        output:
            grid=f"{RUN}/baselines/cheap/field_{{field}}.h5",
            summary=f"{RUN}/baselines/cheap/field_{{field}}.json",
        log:
            f"{RUN}/logs/posterior_cheap/field_{{field}}.log",
        benchmark:
            f"{RUN}/benchmarks/posterior_cheap/field_{{field}}.tsv"
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
            settings=as_json({**json.loads(POSTERIOR_SETTINGS), **BASE["cheap"]}),
        shell:
            "python {input.script} --selection {input.selection:q} --data {input.data:q}"
            " --field {wildcards.field} --settings {params.settings:q} --exact="
            " --threads {threads} --out {output.grid:q} --summary {output.summary:q} 2> {log:q}"

    rule posterior_mcmc:
        """NUTS (pyro-ppl) on the bound of one field, U differentiable through the network."""
        input:
            selection=INF_SELECTION,
            data=INF_DATA,
            script=script("posterior_mcmc"),
        output:
            samples=f"{RUN}/baselines/mcmc/field_{{field}}.npz",
            summary=f"{RUN}/baselines/mcmc/field_{{field}}.json",
        log:
            f"{RUN}/logs/posterior_mcmc/field_{{field}}.log",
        benchmark:
            f"{RUN}/benchmarks/posterior_mcmc/field_{{field}}.tsv"
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
            estimator=as_json(BASE["mcmc_estimator"] or {}),
            mcmc=as_json(BASE["mcmc"]),
        shell:
            "python {input.script} --selection {input.selection:q} --data {input.data:q}"
            " --field {wildcards.field} --settings {params.settings:q} --estimator {params.estimator:q}"
            " --mcmc {params.mcmc:q} --threads {threads} --samples {output.samples:q}"
            " --summary {output.summary:q} 2> {log:q}"

    rule npe:
        """sbi's NPE on the training maps' P(k) and pixel PDF, its SBC, and the test fields."""
        input:
            data=INF_DATA,
            script=script("npe"),
        output:
            table=f"{RUN}/baselines/npe.csv",
            calibration=f"{RUN}/baselines/npe_sbc.json",
            model=f"{RUN}/baselines/npe.pt",
        log:
            f"{RUN}/logs/npe.log",
        benchmark:
            f"{RUN}/benchmarks/npe.tsv"
        conda:
            "../../envs/torch.yaml"
        threads: 8
        resources:
            runtime=60,
            mem_mb=16000,
        params:
            fields=config["inference"]["n_fields"],
            split=config["inference"]["split"],
            settings=as_json(BASE["npe"]),
        shell:
            "python {input.script} --data {input.data:q} --fields {params.fields} --split {params.split}"
            " --settings {params.settings:q} --threads {threads} --table {output.table:q}"
            " --calibration {output.calibration:q} --model {output.model:q} 2> {log:q}"

    rule out_of_distribution:
        """The network (and NPE) on noisy test fields, N-body maps and fields outside the prior."""
        input:
            selection=INF_SELECTION,
            data=INF_DATA,
            npe=rules.npe.output.model,
            exact=exact_posteriors(OOD["n_fields"]),
            script=script("out_of_distribution"),
        output:
            f"{RUN}/baselines/out_of_distribution.csv",
        log:
            f"{RUN}/logs/out_of_distribution.log",
        benchmark:
            f"{RUN}/benchmarks/out_of_distribution.tsv"
        conda:
            "../../envs/torch.yaml"
        threads: 8
        resources:
            gpu=1,
            runtime=4 * 60,
            mem_mb=16000,
        params:
            settings=POSTERIOR_SETTINGS,
            ood=as_json(OOD),
            npe_draws=BASE["npe"]["draws"],
            prepare=as_json(
                {
                    "native": NATIVE,
                    "method": config["prepare"]["downsample"],
                    "log_floor": config["prepare"]["log_floor"],
                    "nbody": config["data"]["synthetic"]["nbody"],
                }
            ),
        shell:
            "python {input.script} --selection {input.selection:q} --data {input.data:q}"
            " --npe {input.npe:q} --exact {input.exact:q} --settings {params.settings:q}"
            " --ood {params.ood:q} --prepare {params.prepare:q} --npe-draws {params.npe_draws}"
            " --threads {threads}"
            " --out {output:q} 2> {log:q}"

    rule comparison:
        """The comparison table and figure, and the out-of-distribution summary and figure."""
        input:
            grid=rules.calibration.output.table,
            grid_posteriors=expand(rules.posterior.output.grid, field=FIELDS),
            exact=exact_posteriors(config["inference"]["n_fields"]),
            local=expand(rules.posterior_cheap.output.summary, field=FIELDS),
            mcmc=expand(
                rules.posterior_mcmc.output.summary, field=range(BASE["mcmc_fields"])
            ),
            npe=rules.npe.output.table,
            npe_calibration=rules.npe.output.calibration,
            ood=rules.out_of_distribution.output,
            script=script("comparison"),
        output:
            table=f"{RUN}/baselines/comparison.csv",
            ood=f"{RUN}/baselines/out_of_distribution_summary.csv",
            figure=figure("baselines_comparison", "4. Inference"),
            ood_figure=figure("out_of_distribution", "4. Inference"),
        log:
            f"{RUN}/logs/comparison.log",
        benchmark:
            f"{RUN}/benchmarks/comparison.tsv"
        conda:
            "../../envs/analysis.yaml"
        params:
            outdir=lambda w, output: os.path.dirname(output.figure[0]),
            threshold=OOD["check_threshold"],
        shell:
            "python {input.script} --grid {input.grid:q} --grid-posteriors {input.grid_posteriors:q}"
            " --exact {input.exact:q} --local {input.local:q}"
            " --mcmc {input.mcmc:q} --npe {input.npe:q} --npe-calibration {input.npe_calibration:q}"
            " --ood {input.ood:q} --threshold {params.threshold} --table {output.table:q}"
            " --ood-table {output.ood:q} --outdir {params.outdir:q} 2> {log:q}"


rule baselines:
    """Target: the baselines comparison (lognormal data with baselines.enabled)."""
    input:
        rules.comparison.output if BASELINES else [],
