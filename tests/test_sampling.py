"""cosmodiff.sampling: the sampler registry and SamplerSettings, which the rules build from the
config sections validation and sampling. (The samplers themselves are checked against closed
forms in test_diffusion.py.)"""

import json
from pathlib import Path

import pytest

from cosmodiff.config import load_config
from cosmodiff.sampling import DDIM_SPACINGS, SAMPLERS, SamplerSettings, ancestral_sample, ddim_sample, dpm_solver_sample

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = [("config",), ("smoke",), ("paper",), ("bench",)] + [
    ("paper", p.stem) for p in sorted((ROOT / "config").glob("paper+*.yaml"))
]


def test_registry_names_the_config_schema_allows():
    assert SAMPLERS == {"ancestral": ancestral_sample, "ddim": ddim_sample, "dpm2m": dpm_solver_sample}
    assert DDIM_SPACINGS == ("linear", "quadratic", "edm")


@pytest.mark.parametrize("names", CONFIGS, ids=[n[-1] for n in CONFIGS])
def test_every_shipped_config_section_makes_settings(names):
    # what the rules pass: validation less select_by (validation_settings), sampling whole
    config = load_config(*(ROOT / "config" / f"{n}.yaml" for n in names))
    val = SamplerSettings.from_json(json.dumps({k: v for k, v in config["validation"].items() if k != "select_by"}))
    smp = SamplerSettings.from_json(json.dumps(config["sampling"]))
    for settings, section in ((val, config["validation"]), (smp, config["sampling"])):
        assert settings.sampler == section["sampler"] and settings.n_samples == section["n_samples"]
        assert settings.sampler_kwargs()["clip"] == (1.0 if section["clip"] else None)
        assert settings.emulator_kwargs() == {"weights": section["weights"], "precision": section["precision"]}
    assert smp.points == tuple(tuple(p) for p in config["sampling"]["points"])
    assert val.fiducial == (None if config["validation"]["fiducial"] is None else tuple(config["validation"]["fiducial"]))


def test_settings_hand_out_each_sampler_its_own_options():
    assert SamplerSettings(sampler="ancestral", clip=False).sampler_kwargs() == {"clip": None}
    assert SamplerSettings(sampler="dpm2m", steps=7, spacing="edm").sampler_kwargs() == {"steps": 7, "spacing": "edm", "clip": 1.0}
    assert SamplerSettings(sampler="ancestral", steps=1).steps == 1  # steps are ignored by ancestral
    whole = SamplerSettings(n_samples=2.0, steps=1.0e1)  # integers to the config schema, as JSON may carry them
    assert (whole.n_samples, whole.steps) == (2, 10) and isinstance(whole.n_samples, int)


@pytest.mark.parametrize("bad, message", [
    ({"sampler": "euler"}, "unknown sampler 'euler'"),
    ({"spacing": "cubic"}, "unknown DDIM spacing 'cubic'"),
    ({"clip": 1}, "clip must be true or false"),
    ({"steps": 1}, "ddim needs steps >= 2"),
    ({"batch_size": 0}, "batch_size must be at least 1"),
    ({"n_samples": 2.5}, "n_samples must be an integer"),
    ({"weights": "best"}, "weights must be one of"),
    ({"precision": "fp16"}, "precision must be one of"),
    ({"fiducial": [0.3]}, "fiducial: expected"),
    ({"points": [[0.3, "a"]]}, "points: expected"),
])
def test_settings_refuse_bad_values(bad, message):
    with pytest.raises(ValueError, match=message):
        SamplerSettings(**bad)


def test_settings_from_json_refuse_unknown_keys():
    with pytest.raises(ValueError, match="unknown sampler settings \\['select_by'\\]"):
        SamplerSettings.from_json('{"select_by": "chi2"}')
