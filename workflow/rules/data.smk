# Data stage: CMD maps (downloaded, local, or synthesized) -> prepared HDF5 sets + figures.

if SOURCE == "download":

    # Fetch one CMD file with resume, size and sha256 checks, written atomically.
    rule download:
        input:
            script=script("download"),
        output:
            f"{RAW}/{{filename}}",
        log:
            f"{RUN}/logs/download/{{filename}}.log",
        benchmark:
            f"{RUN}/benchmarks/download/{{filename}}.tsv"
        wildcard_constraints:
            filename="|".join(
                __import__("re").escape(f)
                for f in (camels.MAPS_FILENAME, camels.PARAMS_FILENAME)
            ),
        conda:
            "../../envs/analysis.yaml"
        resources:
            runtime=240,
            mem_mb=1000,
        params:
            base_url=config["data"]["download"]["base_url"],
            checks=lambda w: as_json(
                config["data"]["download"][
                    "maps" if w.filename == camels.MAPS_FILENAME else "params"
                ]
            ),
        shell:
            "python {input.script} --url {params.base_url:q}/{wildcards.filename:q}"
            " --checks {params.checks:q} --out {output:q} 2> {log:q}"


if SOURCE == "synthetic":

    # The embedded CMD-like data set: Latin hypercube, 15 maps per simulation.
    rule synthesize:
        input:
            script=script("synthesize"),
        output:
            maps=RAW_MAPS,
            params=RAW_PARAMS,
            settings=f"{RAW}/synthetic.json",
        log:
            f"{RUN}/logs/synthesize.log",
        benchmark:
            f"{RUN}/benchmarks/synthesize.tsv"
        conda:
            "../../envs/analysis.yaml"
        resources:
            runtime=120,
            mem_mb=4000,
        params:
            settings=as_json(config["data"]["synthetic"]),
            resolution=NATIVE,
            out_dir=lambda w, output: os.path.dirname(output.maps),
        shell:
            "python {input.script} --settings {params.settings:q}"
            " --resolution {params.resolution} --out-dir {params.out_dir:q} 2> {log:q}"


rule prepare:
    """log10 with a floor, split by simulation, periodic downsampling, HDF5 with provenance."""
    input:
        maps=RAW_MAPS,
        params=RAW_PARAMS,
        script=script("prepare"),
    output:
        expand(f"{RUN}/data/prepared_{{res}}.h5", res=RESOLUTIONS),
    log:
        f"{RUN}/logs/prepare.log",
    benchmark:
        f"{RUN}/benchmarks/prepare.tsv"
    conda:
        "../../envs/torch.yaml"
    resources:
        runtime=120,
        mem_mb=4000,
    params:
        resolutions=RESOLUTIONS,
        # low_resolution reaches the script as --resolutions (RESOLUTIONS)
        settings=as_json(
            {k: v for k, v in config["prepare"].items() if k != "low_resolution"}
        ),
        native=NATIVE,
        source=as_json(
            {
                "source": SOURCE,
                **(
                    {"synthetic": config["data"]["synthetic"]}
                    if SOURCE == "synthetic"
                    else (
                        {"base_url": config["data"]["download"]["base_url"]}
                        if SOURCE == "download"
                        else {"local_dir": RAW}
                    )
                ),
            }
        ),
    shell:
        "python {input.script} --maps {input.maps:q} --params {input.params:q}"
        " --resolutions {params.resolutions} --outputs {output:q} --settings {params.settings:q}"
        " --native-resolution {params.native} --source {params.source:q} 2> {log:q}"


rule plot_data:
    """Figures of the data stage: a map gallery and the P(k) of every simulation."""
    input:
        data=f"{RUN}/data/prepared_{NATIVE}.h5",
        script=script("plot_data"),
    output:
        gallery=figure("data_gallery", "1. Data"),
        pk=figure("data_power_spectra", "1. Data"),
    log:
        f"{RUN}/logs/plot_data.log",
    benchmark:
        f"{RUN}/benchmarks/plot_data.tsv"
    conda:
        "../../envs/analysis.yaml"
    resources:
        runtime=30,
        mem_mb=4000,
    params:
        settings=as_json(config["figures"]),
    shell:
        "python {input.script} --data {input.data:q} --settings {params.settings:q}"
        " --gallery {output.gallery[0]:q} --power-spectra {output.pk[0]:q} 2> {log:q}"


rule data:
    """Target: the whole data stage."""
    input:
        expand(f"{RUN}/data/prepared_{{res}}.h5", res=RESOLUTIONS),
        rules.plot_data.output,
