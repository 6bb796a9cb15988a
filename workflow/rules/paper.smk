# The manuscript: generated includes from the results, and the PDF where TeX is installed.

import shutil

TEX = shutil.which("latexmk") or shutil.which("pdflatex")


# Runs where the workflow was started: that is where the TeX engine was looked for.
localrules:
    paper,


rule paper:
    """Generated includes (numbers, chi-squared table) and, with a TeX engine, the PDF."""
    input:
        main=os.path.join(workflow.basedir, "paper", "main.tex"),
        data=f"{RUN}/data/prepared_{NATIVE}.h5",
        pretrain=f"{RUN}/validation/pretrain/selected.json",
        finetune=f"{RUN}/validation/finetune/selected.json",
        samples=f"{RUN}/samples/samples.h5",
        figures=[
            f"{RUN}/figures/data_gallery.pdf",
            f"{RUN}/figures/emulation_power.pdf",
            f"{RUN}/figures/emulation_maps.pdf",
        ],
        script=script("paper"),
    output:
        numbers=f"{RUN}/paper/generated/numbers.tex",
        table=f"{RUN}/paper/generated/chi2_table.tex",
        main=f"{RUN}/paper/main.tex",
        build_log=f"{RUN}/paper/build.log",
        pdf=[f"{RUN}/paper/main.pdf"] if TEX else [],
    log:
        f"{RUN}/logs/paper.log",
    benchmark:
        f"{RUN}/benchmarks/paper.tsv"
    conda:
        "../../envs/torch.yaml"
    params:
        settings=as_json(
            {
                "run": config["run"],
                "data": (
                    f"synthetic ({config['data']['synthetic']['generator']})"
                    if SOURCE == "synthetic"
                    else "CAMELS CMD Mcdm IllustrisTNG LH"
                ),
                "low_resolution": LOW,
                "pretrain_iterations": config["pretrain"]["iterations"],
                "finetune_iterations": config["finetune"]["iterations"],
            }
        ),
        outdir=lambda w, output: os.path.dirname(output.main),
    shell:
        "python {input.script} --main {input.main:q} --data {input.data:q}"
        " --pretrain-selection {input.pretrain:q} --finetune-selection {input.finetune:q}"
        " --samples {input.samples:q} --settings {params.settings:q} --outdir {params.outdir:q}"
        " --build-log {output.build_log:q} 2> {log:q}"
