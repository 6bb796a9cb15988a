"""cosmodiff: diffusion-model emulation and inference for CAMELS CMD density maps.

One module per job (see ../../shared architecture notes and README):

- :mod:`cosmodiff.cosmology`  constants of the CAMELS boxes, P(k) from pyccl, slab projection
- :mod:`cosmodiff.camels`     the CMD file layout, downloads with resume and checksums, readers
- :mod:`cosmodiff.synthetic`  CAMELS-like maps: lognormal (exact likelihood) and particle-mesh
- :mod:`cosmodiff.particle_mesh` the small particle-mesh N-body solver behind ``synthetic``
- :mod:`cosmodiff.prepare`    log transform, splits, normalisation, periodic downsampling, HDF5
- :mod:`cosmodiff.powerspec`  2D power spectra in the paper's and Pylians' conventions
- :mod:`cosmodiff.checkpoint` checkpoint files: format, writing, safe loading, the network they hold
- :mod:`cosmodiff.diagnostics` a network's likelihood against the exact one: targets, and where
  it goes wrong (by timestep and by scale, against the exact denoiser)
- :mod:`cosmodiff.config`     configuration validation with readable errors
- :mod:`cosmodiff.plots`      figures, one function each
"""

__version__ = "0.1.0"
