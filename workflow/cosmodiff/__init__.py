"""cosmodiff: diffusion-model emulation and inference for CAMELS CMD density maps.

One module per job; the data flow from config to rule to script to library, and where to add
a sampler, an estimator or a statistic: ``docs/architecture.md`` in the repository.

Data
- :mod:`cosmodiff.cosmology`      constants of the CAMELS boxes, the prior, P(k) from pyccl, slab projection
- :mod:`cosmodiff.camels`         the CMD file layout, downloads with resume and checksums, readers, writers
- :mod:`cosmodiff.synthetic`      CAMELS-like maps: lognormal (exact likelihood) and particle-mesh
- :mod:`cosmodiff.particle_mesh`  the small particle-mesh N-body solver behind ``synthetic``
- :mod:`cosmodiff.prepare`        log transform, splits, normalisation, periodic downsampling, HDF5

Statistics
- :mod:`cosmodiff.powerspec`      2D power spectra in the paper's and Pylians' conventions
- :mod:`cosmodiff.stats`          reduced chi-squared, leave-one-out reference, PDF distance, peaks

Model and training
- :mod:`cosmodiff.unet`           the periodic conditional U-Net and nothing else
- :mod:`cosmodiff.diffusion`      schedule, noising, training loss, posterior q, per-timestep bound terms
- :mod:`cosmodiff.sampling`       ancestral, DDIM, DPM-Solver++(2M), timestep grids, ``SAMPLERS``, ``SamplerSettings``
- :mod:`cosmodiff.checkpoint`     checkpoint files: format, writing, safe loading, the network they hold
- :mod:`cosmodiff.protocol`       the authors' protocol knobs: learning-rate schedule, EMA cadence, precision
- :mod:`cosmodiff.train`          the training loop (``TrainLoop``): data, EMA, checkpoints, resume, signals, DDP

Emulation and inference
- :mod:`cosmodiff.emulator`       a checkpoint as an emulator: samples in physical units, HDF5
- :mod:`cosmodiff.validation`     per-checkpoint chi-squared tables, checkpoint selection, sampler costs
- :mod:`cosmodiff.inference`      the potential U(theta | x) from the bound, estimators, the Wiener oracle,
                                  grid scans, calibration, ``InferenceSettings`` (a subpackage)
- :mod:`cosmodiff.diagnostics`    a network's likelihood against the exact one: targets, by timestep, by scale

Workflow support
- :mod:`cosmodiff.config`         configuration validation with readable errors
- :mod:`cosmodiff.layout`         file names shared by the library and the rules (no torch)
- :mod:`cosmodiff.files`          the output guard and the atomic (temporary, then rename) writer
- :mod:`cosmodiff.costs`          what each GPU rule costs, and the SLURM runtimes it implies
- :mod:`cosmodiff.manuscript`     the paper: figure list with provenance, generated numbers and tables, the PDF
- :mod:`cosmodiff.plots`          figures, one function each
- :mod:`cosmodiff.__main__`       ``python -m cosmodiff sample | infer | check-config``
"""

__version__ = "0.1.0"
