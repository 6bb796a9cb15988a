# Training: 64x64 pretraining, then 256x256 fine-tuning from the pretrained weights.
# Checkpoints are declared outputs (validated one by one downstream); the resumable state
# lives in results/<run>/state/<stage>/, which no rule declares, so a retry after a time
# limit or preemption resumes instead of starting over.

import shlex


rule pretrain:
    """Train the U-Net at prepare.low_resolution (64x64 in the paper)."""
    input:
        data=f"{RUN}/data/prepared_{LOW}.h5",
        norm=f"{RUN}/data/prepared_{NATIVE}.h5",
        script=script("train"),
    output:
        checkpoints=checkpoints("pretrain"),
        metrics=f"{RUN}/models/pretrain/metrics.jsonl",
        figure=figure("loss_pretrain", "2. Training", caption="loss"),
    log:
        f"{RUN}/logs/pretrain.log",
    benchmark:
        f"{RUN}/benchmarks/pretrain.tsv"
    conda:
        "../../envs/torch.yaml"
    threads: 8
    resources:
        gpu=config["pretrain"]["gpus"],
        runtime=24 * 60,
        mem_mb=32000,
    params:
        **train_params("pretrain"),
        checkpoint_dir=lambda w, output: os.path.dirname(output.checkpoints[0]),
    shell:
        "{params.launcher} {input.script} --stage pretrain --data {input.data:q} --norm-data {input.norm:q}"
        " --model {params.model:q} --diffusion {params.diffusion:q} --settings {params.settings:q}"
        " --checkpoint-dir {params.checkpoint_dir:q} --state-dir {params.state_dir:q}"
        " --metrics {output.metrics:q} --loss-figure {output.figure[0]:q} --threads {threads} 2> {log:q}"


rule finetune:
    """Fine-tune at data.resolution (256x256) from a pretraining checkpoint (finetune.init: the
    one with the lowest validation statistic, select_checkpoint, or the last one)."""
    input:
        data=f"{RUN}/data/prepared_{NATIVE}.h5",
        init=finetune_init()[0],
        script=script("train"),
    output:
        checkpoints=checkpoints("finetune"),
        metrics=f"{RUN}/models/finetune/metrics.jsonl",
        figure=figure("loss_finetune", "2. Training", caption="loss"),
    log:
        f"{RUN}/logs/finetune.log",
    benchmark:
        f"{RUN}/benchmarks/finetune.tsv"
    conda:
        "../../envs/torch.yaml"
    threads: 8
    resources:
        gpu=config["finetune"]["gpus"],
        runtime=72 * 60,
        mem_mb=64000,
    params:
        **train_params("finetune"),
        checkpoint_dir=lambda w, output: os.path.dirname(output.checkpoints[0]),
        init=lambda w, input: " ".join(
            [finetune_init()[1], *map(shlex.quote, input.init)]
        ),
    shell:
        "{params.launcher} {input.script} --stage finetune --data {input.data:q} --norm-data {input.data:q}"
        " {params.init} --model {params.model:q} --diffusion {params.diffusion:q}"
        " --settings {params.settings:q} --checkpoint-dir {params.checkpoint_dir:q}"
        " --state-dir {params.state_dir:q} --metrics {output.metrics:q}"
        " --loss-figure {output.figure[0]:q} --threads {threads} 2> {log:q}"


rule train:
    """Target: both training stages (every declared output)."""
    input:
        rules.pretrain.output,
        rules.finetune.output,
