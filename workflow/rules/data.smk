# Data stage: CMD maps (downloaded, local, or synthesized) -> prepared HDF5 sets + figures.

if SOURCE == "download":

    rule download:
        """Fetch one CMD file with resume, size and sha256 checks, written atomically."""
        output:
            f"{RAW}/{{filename}}",
        wildcard_constraints:
            filename="|".join(
                __import__("re").escape(f)
                for f in (camels.MAPS_FILENAME, camels.PARAMS_FILENAME)
            ),
        input:
            script=script("download"),
        params:
            base_url=config["data"]["download"]["base_url"],
            checks=lambda w: as_json(
                config["data"]["download"][
                    "maps" if w.filename == camels.MAPS_FILENAME else "params"
                ]
            ),
        log:
            f"{RUN}/logs/download/{{filename}}.log",
        conda:
            "../../envs/analysis.yaml"
        resources:
            runtime=240,
            mem_mb=1000,
        shell:
            "python {input.script} --url {params.base_url:q}/{wildcards.filename:q}"
            " --checks {params.checks:q} --out {output:q} 2> {log:q}"


if SOURCE == "synthetic":

    rule synthesize:
        """The embedded CMD-like data set: Latin hypercube, 15 maps per simulation."""
        output:
            maps=RAW_MAPS,
            params=RAW_PARAMS,
            settings=f"{RAW}/synthetic.json",
        input:
            script=script("synthesize"),
        params:
            settings=as_json(config["data"]["synthetic"]),
            resolution=NATIVE,
            out_dir=lambda w, output: os.path.dirname(output.maps),
        log:
            f"{RUN}/logs/synthesize.log",
        conda:
            "../../envs/analysis.yaml"
        resources:
            runtime=120,
            mem_mb=4000,
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
    params:
        resolutions=RESOLUTIONS,
        log_floor=config["prepare"]["log_floor"],
        split=as_json(config["prepare"]["split"]),
        downsample=config["prepare"]["downsample"],
        source=as_json(
            {
                "source": SOURCE,
                **(
                    {"synthetic": config["data"]["synthetic"]}
                    if SOURCE == "synthetic"
                    else {"base_url": config["data"]["download"]["base_url"]}
                    if SOURCE == "download"
                    else {"local_dir": RAW}
                ),
            }
        ),
    log:
        f"{RUN}/logs/prepare.log",
    conda:
        "../../envs/torch.yaml"
    resources:
        runtime=120,
        mem_mb=4000,
    shell:
        "python {input.script} --maps {input.maps:q} --params {input.params:q}"
        " --resolutions {params.resolutions} --outputs {output:q}"
        " --log-floor {params.log_floor} --split {params.split:q}"
        " --downsample {params.downsample} --source {params.source:q} 2> {log:q}"


rule plot_data:
    """Figures of the data stage: a map gallery and the P(k) of every simulation."""
    input:
        data=f"{RUN}/data/prepared_{NATIVE}.h5",
        script=script("plot_data"),
    output:
        gallery=multiext(f"{RUN}/figures/data_gallery", ".png", ".pdf"),
        pk=multiext(f"{RUN}/figures/data_power_spectra", ".png", ".pdf"),
    params:
        columns=config["figures"]["gallery_columns"],
        maps_per_sim=config["figures"]["pk_maps_per_sim"],
    log:
        f"{RUN}/logs/plot_data.log",
    conda:
        "../../envs/analysis.yaml"
    resources:
        runtime=30,
        mem_mb=4000,
    shell:
        "python {input.script} --data {input.data:q} --columns {params.columns}"
        " --maps-per-sim {params.maps_per_sim} --gallery {output.gallery[0]:q}"
        " --power-spectra {output.pk[0]:q} 2> {log:q}"


rule data:
    """Target: the whole data stage."""
    input:
        expand(f"{RUN}/data/prepared_{{res}}.h5", res=RESOLUTIONS),
        rules.plot_data.output,
