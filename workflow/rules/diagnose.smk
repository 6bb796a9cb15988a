# Is the network's bound the likelihood, and where does it go wrong? Lognormal data only:
# every comparison is with the exact posterior of the same field and with the exact denoiser
# (the Wiener oracle) on the same noise. See README, "Does the network's bound give the
# likelihood?".

DIAG = config["diagnostics"]
INF_STAGE = config["inference"]["stage"]
INF_DATA = f"{RUN}/data/prepared_{STAGE_DATA[INF_STAGE]}.h5"
INF_SELECTION = f"{RUN}/validation/{INF_STAGE}/selected.json"
# the scans use the posterior rule's settings (POSTERIOR_SETTINGS: all but n_fields)


DIAGNOSTIC = bool(EXACT) and DIAG["n_fields"] > 0
SUMMARY = bool(EXACT) and DIAG["convergence_fields"] > 0 and DIAG["oracle_fields"] > 0


if DIAGNOSTIC:

    rule likelihood_diagnostic:
        """Network vs exact denoiser on the same fields and noise, by timestep and by scale."""
        input:
            selection=INF_SELECTION,
            data=INF_DATA,
            script=script("likelihood_diagnostic"),
        output:
            score=f"{RUN}/inference/diagnostic_score.csv",
            excess=f"{RUN}/inference/diagnostic_excess.csv",
            figure=figure("likelihood_diagnostic", "4. Inference"),
        log:
            f"{RUN}/logs/likelihood_diagnostic.log",
        benchmark:
            f"{RUN}/benchmarks/likelihood_diagnostic.tsv"
        conda:
            "../../envs/torch.yaml"
        threads: 8
        resources:
            gpu=1,
            runtime=60,
            mem_mb=16000,
        params:
            settings=as_json(
                {
                    "n_fields": DIAG["n_fields"],
                    "noise_seed": config["inference"]["noise_seed"],
                    "batch_size": config["inference"]["batch_size"],
                }
            ),
            exact=EXACT,
        shell:
            "python {input.script} --selection {input.selection:q} --data {input.data:q}"
            " --exact {params.exact:q} --settings {params.settings:q} --threads {threads}"
            " --score {output.score:q} --excess {output.excess:q} --figure {output.figure[0]:q} 2> {log:q}"


if SUMMARY:

    rule convergence_scan:
        """Posteriors of the first test fields from one checkpoint of the inference stage."""
        input:
            checkpoint=f"{RUN}/models/{INF_STAGE}/ckpt_{{iteration}}.pt",
            data=INF_DATA,
            exact=exact_posteriors(DIAG["convergence_fields"]),
            script=script("scan_fields"),
        output:
            f"{RUN}/inference/convergence/ckpt_{{iteration}}.csv",
        log:
            f"{RUN}/logs/convergence_scan/ckpt_{{iteration}}.log",
        benchmark:
            f"{RUN}/benchmarks/convergence_scan/ckpt_{{iteration}}.tsv"
        wildcard_constraints:
            iteration=r"\d+",
        conda:
            "../../envs/torch.yaml"
        threads: 8
        resources:
            gpu=1,
            runtime=4 * 60,
            mem_mb=16000,
        params:
            settings=POSTERIOR_SETTINGS,
        shell:
            "python {input.script} --checkpoint {input.checkpoint:q} --data {input.data:q}"
            " --exact {input.exact:q} --settings {params.settings:q} --threads {threads}"
            " --out {output:q} 2> {log:q}"

    rule oracle_scan:
        """The same scans with the exact denoiser: the estimator's own error, no network's."""
        input:
            selection=INF_SELECTION,
            data=INF_DATA,
            exact=exact_posteriors(DIAG["oracle_fields"]),
            script=script("scan_fields"),
        output:
            f"{RUN}/inference/oracle_scan.csv",
        log:
            f"{RUN}/logs/oracle_scan.log",
        benchmark:
            f"{RUN}/benchmarks/oracle_scan.tsv"
        conda:
            "../../envs/torch.yaml"
        threads: 8
        resources:
            runtime=4 * 60,
            mem_mb=16000,
        params:
            settings=POSTERIOR_SETTINGS,
            exact=EXACT,
        shell:
            "python {input.script} --checkpoint {input.selection:q} --oracle {params.exact:q}"
            " --data {input.data:q} --exact {input.exact:q} --settings {params.settings:q}"
            " --threads {threads} --out {output:q} 2> {log:q}"

    rule likelihood_summary:
        """The targets table of the selected checkpoint and the convergence figure."""
        input:
            network=f"{RUN}/inference/summary.csv",
            oracle=rules.oracle_scan.output,
            selection=INF_SELECTION,
            convergence=[
                f"{RUN}/inference/convergence/{os.path.basename(c).replace('.pt', '.csv')}"
                for c in checkpoints(INF_STAGE)
            ],
            validation=validation_tables(INF_STAGE),
            script=script("likelihood_summary"),
        output:
            targets=f"{RUN}/inference/targets.csv",
            table=f"{RUN}/inference/convergence.csv",
            figure=figure("likelihood_convergence", "4. Inference"),
        log:
            f"{RUN}/logs/likelihood_summary.log",
        benchmark:
            f"{RUN}/benchmarks/likelihood_summary.tsv"
        conda:
            "../../envs/analysis.yaml"
        shell:
            "python {input.script} --network {input.network:q} --oracle {input.oracle:q}"
            " --selection {input.selection:q} --convergence {input.convergence:q}"
            " --validation {input.validation:q} --targets {output.targets:q} --table {output.table:q}"
            " --figure {output.figure[0]:q} 2> {log:q}"


rule diagnose:
    """Target: the likelihood diagnostic, the targets table and the convergence figure."""
    input:
        rules.likelihood_diagnostic.output if DIAGNOSTIC else [],
        rules.likelihood_summary.output if SUMMARY else [],
