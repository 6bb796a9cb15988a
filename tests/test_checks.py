"""The model-misspecification check (cosmodiff.inference.checks) on the Wiener oracle: the
exact denoiser of lognormal maps, so "the model" is the generator itself and its fields can
be drawn exactly. A field of the model passes; a field with added noise, or from a spectrum
outside the prior, is flagged at the point a scan would give as its mode."""

import numpy as np
import pytest

from cosmodiff.diffusion import GaussianDiffusion, make_betas
from cosmodiff.inference.checks import check_posterior, misspecification
from cosmodiff.inference.oracle import WienerOracle
from cosmodiff.inference.potential import Potential
from cosmodiff.synthetic import lognormal_maps

RES = 32
NORM = (8.9, 11.9)  # the bench's normalisation: 3 dex to [-1, 1]
TRUTH = (0.3, 0.8)
EDGE = (0.3, 1.0)  # where the mode of a field with more power than the prior allows lands


@pytest.fixture(scope="module")
def make_potential():
    diffusion = GaussianDiffusion(make_betas("mudur"), model_variance="fixedlarge")
    oracle = WienerOracle(diffusion, NORM)

    def make(field):  # a cheap but complete bound: 4 exact timesteps, 12 strata, 16 evaluations
        return Potential(oracle, diffusion, field, NORM, estimator="full", t_exact=4, n_strata=12, n_noise=1,
                         batch_size=64)

    return make


def _log10_maps(theta, n, seed):
    return np.log10(lognormal_maps(*theta, n, seed, RES).astype(np.float64))


def test_a_field_of_the_model_is_typical(make_potential):
    check = misspecification(make_potential, TRUTH, _log10_maps(TRUTH, 1, 3)[0], _log10_maps(TRUTH, 6, 11))
    assert not check.flagged and abs(check.z) < 3, check.message()
    assert "typical of the model" in check.message()
    assert check.to_dict()["n_reference"] == 6


@pytest.mark.parametrize("shift", ["white noise 0.1 dex", "fluctuations x 1.6"])
def test_a_shifted_field_is_flagged(make_potential, shift):
    if shift.startswith("white"):
        field, theta = _log10_maps(TRUTH, 1, 3)[0], TRUTH
        field = field + np.random.default_rng(0).normal(0.0, 0.1, field.shape)
    else:  # another spectrum: the log fluctuations of a sigma_8 = 1 field amplified, beyond the prior
        field, theta = _log10_maps(EDGE, 1, 3)[0], EDGE
        field = field.mean() + 1.6 * (field - field.mean())
    check = misspecification(make_potential, theta, field, _log10_maps(theta, 6, 11))
    assert check.flagged and check.z > 5, check.message()
    assert "the model does not describe this field" in check.message()


def test_bad_references_are_refused(make_potential):
    field = _log10_maps(TRUTH, 1, 3)[0]
    with pytest.raises(ValueError, match=r"references must be \(K >= 2, N, N\)"):
        misspecification(make_potential, TRUTH, field, field[None])


def test_check_posterior_draws_its_references_from_the_model_at_the_mode():
    """What `python -m cosmodiff infer` runs after its scan: references sampled from the model
    (here the exact denoiser, whose samples are the lognormal fields themselves) at the
    posterior's mode, scored with the field's estimator settings. A field of the model passes,
    the same field with 0.1 dex of white noise is flagged."""
    import torch
    from cosmodiff.emulator import Emulator
    from cosmodiff.inference import InferenceSettings, grid_posterior

    torch.set_num_threads(2)
    diffusion = GaussianDiffusion(make_betas("mudur"), model_variance="fixedlarge")
    emu = Emulator(WienerOracle(diffusion, NORM), diffusion, NORM, RES, device="cpu")
    settings = InferenceSettings.from_dict({"estimator": "full", "t_exact": 4, "n_strata": 12, "n_noise": 1,
                                            "batch_size": 64})
    clean = _log10_maps(TRUTH, 1, 3)[0]
    noisy = clean + np.random.default_rng(0).normal(0.0, 0.1, clean.shape)
    axes = (np.linspace(0.26, 0.34, 3), np.linspace(0.76, 0.84, 3))
    results = {}
    for name, field in (("clean", clean), ("noisy", noisy)):
        post = grid_posterior(Potential.from_emulator(emu, field, **settings.potential_options()), *axes)
        results[name] = check_posterior(emu, field, settings, post, n_samples=6, seed=1)
        assert results[name].reference.shape == (6,) and results[name].theta == tuple(post.mode)
    assert not results["clean"].flagged and abs(results["clean"].z) < 3, results["clean"].message()
    assert results["noisy"].flagged and results["noisy"].z > 5, results["noisy"].message()
