# Emulator validation and sampling: one validation job per checkpoint (the cluster runs them
# in parallel), checkpoint selection per stage, samples from the selected checkpoint, figures.


rule validate_checkpoint:
    """Reduced chi-squared of one checkpoint's samples at the validation points."""
    input:
        checkpoint=f"{RUN}/models/{{stage}}/ckpt_{{iteration}}.pt",
        data=lambda w: f"{RUN}/data/prepared_{STAGE_DATA[w.stage]}.h5",
        script=script("validate_checkpoint"),
    output:
        f"{RUN}/validation/{{stage}}/ckpt_{{iteration}}.csv",
    log:
        f"{RUN}/logs/validate_checkpoint/{{stage}}_{{iteration}}.log",
    benchmark:
        f"{RUN}/benchmarks/validate_checkpoint/{{stage}}_{{iteration}}.tsv"
    wildcard_constraints:
        stage="pretrain|finetune",
        iteration=r"\d+",
    conda:
        "../../envs/torch.yaml"
    threads: 8
    resources:
        gpu=1,
        runtime=6 * 60,
        mem_mb=16000,
    params:
        settings=validation_settings(),
    shell:
        "python {input.script} --checkpoint {input.checkpoint:q} --data {input.data:q}"
        " --settings {params.settings:q} --threads {threads} --out {output:q} 2> {log:q}"


rule select_checkpoint:
    """Pick the checkpoint with the lowest mean of validation.select_by; chi-squared vs
    iteration figure."""
    input:
        checkpoints=lambda w: checkpoints(w.stage),
        tables=lambda w: validation_tables(w.stage),
        script=script("select_checkpoint"),
    output:
        choice=f"{RUN}/validation/{{stage}}/selected.json",
        summary=f"{RUN}/validation/{{stage}}/summary.csv",
        figure=figure("chi2_{stage}", "3. Emulation", caption="chi2"),
    log:
        f"{RUN}/logs/select_checkpoint/{{stage}}.log",
    benchmark:
        f"{RUN}/benchmarks/select_checkpoint/{{stage}}.tsv"
    wildcard_constraints:
        stage="pretrain|finetune",
    conda:
        "../../envs/analysis.yaml"
    params:
        select_by=config["validation"]["select_by"],
    shell:
        "python {input.script} --stage {wildcards.stage} --checkpoints {input.checkpoints:q}"
        " --select-by {params.select_by}"
        " --tables {input.tables:q} --out {output.choice:q} --summary {output.summary:q}"
        " --figure {output.figure[0]:q} 2> {log:q}"


rule sample:
    """Fields at the test simulations' parameters (and extra points) from the selected
    fine-tuned checkpoint, in physical units."""
    input:
        selection=f"{RUN}/validation/finetune/selected.json",
        data=f"{RUN}/data/prepared_{NATIVE}.h5",
        script=script("sample"),
    output:
        f"{RUN}/samples/samples.h5",
    log:
        f"{RUN}/logs/sample.log",
    benchmark:
        f"{RUN}/benchmarks/sample.tsv"
    conda:
        "../../envs/torch.yaml"
    threads: 8
    resources:
        gpu=1,
        runtime=6 * 60,
        mem_mb=16000,
    params:
        settings=as_json(config["sampling"]),
    shell:
        "python {input.script} --selection {input.selection:q} --data {input.data:q}"
        " --settings {params.settings:q} --threads {threads} --out {output:q} 2> {log:q}"


rule plot_emulation:
    """The emulation figures and a per-point statistics table."""
    input:
        samples=rules.sample.output[0],
        data=f"{RUN}/data/prepared_{NATIVE}.h5",
        script=script("plot_emulation"),
    output:
        maps=figure("emulation_maps", "3. Emulation"),
        power=figure("emulation_power", "3. Emulation"),
        pdf=figure("emulation_pdf", "3. Emulation"),
        peaks=figure("emulation_peaks", "3. Emulation"),
        response=figure("emulation_response", "3. Emulation"),
        table=f"{RUN}/samples/statistics.csv",
    log:
        f"{RUN}/logs/plot_emulation.log",
    benchmark:
        f"{RUN}/benchmarks/plot_emulation.tsv"
    conda:
        "../../envs/analysis.yaml"
    params:
        outdir=lambda w, output: os.path.dirname(output.maps[0]),
    shell:
        "python {input.script} --samples {input.samples:q} --data {input.data:q}"
        " --outdir {params.outdir:q} --table {output.table:q} 2> {log:q}"


rule sampler_cost:
    """Fidelity against cost: each sampler of sampler_cost.samplers on the selected
    checkpoint of sampler_cost.stage, at the same validation points and seeds."""
    input:
        selection=f"{RUN}/validation/{config['sampler_cost']['stage']}/selected.json",
        data=f"{RUN}/data/prepared_{STAGE_DATA[config['sampler_cost']['stage']]}.h5",
        script=script("sampler_cost"),
    output:
        table=f"{RUN}/validation/sampler_cost.csv",
        figure=figure("emulation_sampler_cost", "3. Emulation"),
    log:
        f"{RUN}/logs/sampler_cost.log",
    benchmark:
        f"{RUN}/benchmarks/sampler_cost.tsv"
    conda:
        "../../envs/torch.yaml"
    threads: 8
    resources:
        gpu=1,
        runtime=6 * 60,
        mem_mb=16000,
    params:
        settings=sampler_cost_settings(),
        samplers=as_json(config["sampler_cost"]["samplers"]),
    shell:
        "python {input.script} --selection {input.selection:q} --data {input.data:q}"
        " --settings {params.settings:q} --samplers {params.samplers:q} --threads {threads}"
        " --table {output.table:q} --figure {output.figure[0]:q} 2> {log:q}"


rule emulate:
    """Target: validation of every checkpoint, selection, samples and emulation figures.
    Every output the stage stands for is listed, so a plain rerun rebuilds any that is
    missing (a killed job's), not only the last files of the chain."""
    input:
        validation_tables("pretrain"),
        validation_tables("finetune"),
        expand(rules.select_checkpoint.output, stage=["pretrain", "finetune"]),
        rules.sample.output,
        rules.plot_emulation.output,
        rules.sampler_cost.output,
