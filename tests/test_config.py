"""Configuration schema: every shipped config is valid; bad ones fail naming key and rule."""

import copy
from pathlib import Path

import pytest
import yaml

from cosmodiff.config import ConfigError, load_config, validate_config

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def demo():
    return yaml.safe_load((ROOT / "config/config.yaml").read_text())


@pytest.mark.parametrize("name", ["config", "smoke", "paper", "bench"])
def test_shipped_configs_are_valid(name):
    load_config(ROOT / f"config/{name}.yaml")


@pytest.mark.parametrize("variant", sorted(p.name for p in (ROOT / "config").glob("paper+*.yaml")))
def test_paper_variants_are_valid_overlays(variant):
    merged = load_config(ROOT / "config/paper.yaml", ROOT / "config" / variant)
    assert merged["run"] != "paper"


def test_protocol_keys_that_exclude_each_other(demo):
    demo["finetune"]["lr_milestones"] = [20, 10]
    demo["pretrain"]["init"] = "last"
    msg = _error(demo)
    assert "'finetune.lr_milestones': [20, 10] is not allowed with lr_step 30" in msg
    assert "'finetune.lr_milestones': [20, 10] is not allowed; expected increasing iterations" in msg
    assert "'pretrain.init': 'last' is not allowed; expected 'none'" in msg


def _error(config):
    with pytest.raises(ConfigError) as info:
        validate_config(config)
    return str(info.value)


def test_wrong_type(demo):
    demo["data"]["synthetic"]["n_sims"] = "ten"
    assert "config key 'data.synthetic.n_sims': 'ten' is not allowed; expected an integer >= 3" in _error(demo)


def test_missing_key(demo):
    del demo["prepare"]["split"]
    assert "config key 'prepare.split' is missing; expected fractions of the simulations" in _error(demo)
    c = copy.deepcopy(demo)
    del c["data"]
    assert "config key 'data' is missing" in _error(c)


def test_unknown_key_lists_the_allowed_ones(demo):
    demo["prepare"]["downsampling"] = "area"
    msg = _error(demo)
    assert "'downsampling' was unexpected" in msg and "allowed keys: downsample, log_floor" in msg


@pytest.mark.parametrize("value", [100, 384, 3])
def test_resolution_not_a_power_of_two(demo, value):
    demo["data"]["resolution"] = value
    assert f"config key 'data.resolution': {value} is not allowed; expected a power of two" in _error(demo)


def test_range_outside_prior(demo):
    demo["data"]["synthetic"]["omega_m_range"] = [0.05, 0.3]
    demo["data"]["synthetic"]["sigma_8_range"] = [0.7, 1.2]
    msg = _error(demo)
    assert "'data.synthetic.omega_m_range[0]': 0.05 is not allowed; expected a value within the CAMELS prior of Omega_m, [0.1, 0.5]" in msg
    assert "'data.synthetic.sigma_8_range[1]': 1.2 is not allowed; expected a value within the CAMELS prior of sigma_8, [0.6, 1.0]" in msg


def test_every_problem_is_reported_at_once(demo):
    demo["data"]["resolution"] = 100
    demo["figures"]["gallery_columns"] = 0
    msg = _error(demo)
    assert "data.resolution" in msg and "figures.gallery_columns" in msg


def test_yaml_exponent_trap_is_explained(demo):
    demo["prepare"]["log_floor"] = "1e9"  # what PyYAML makes of `log_floor: 1e9`
    assert "write numbers like 1.0e+9" in _error(demo)


def test_relations_between_keys(demo):
    c = copy.deepcopy(demo)
    c["prepare"]["low_resolution"] = 256
    assert "expected a power of two below data.resolution (256)" in _error(c)
    c = copy.deepcopy(demo)
    c["prepare"]["split"] = {"train": 0.7, "val": 0.2, "test": 0.2}
    assert "fractions sum to 1.1; expected them to sum to 1" in _error(c)
    c = copy.deepcopy(demo)
    c["data"]["synthetic"]["sigma_8_range"] = [0.9, 0.7]
    assert "expected low < high" in _error(c)
    c = copy.deepcopy(demo)
    c["data"]["source"] = "local"
    assert "data.local_dir' is null" in _error(c)
    c = copy.deepcopy(demo)
    c["data"]["download"]["maps"]["sha256"] = "XYZ"
    assert "64 lowercase hex digits" in _error(c)


def test_diagnostic_fields_must_have_exact_posteriors(demo):
    demo["diagnostics"]["convergence_fields"] = demo["inference"]["n_fields"] + 1
    assert (f"config key 'diagnostics.convergence_fields': {demo['inference']['n_fields'] + 1} is not allowed; "
            f"expected at most inference.n_fields ({demo['inference']['n_fields']})") in _error(demo)


def test_baselines_fields_must_have_exact_posteriors_and_settings_must_be_known(demo):
    n = demo["inference"]["n_fields"]
    demo["baselines"]["enabled"] = True
    demo["baselines"]["mcmc_fields"] = n + 1
    demo["baselines"]["out_of_distribution"]["n_fields"] = n + 2
    err = _error(demo)
    assert f"config key 'baselines.mcmc_fields': {n + 1} is not allowed; expected at most inference.n_fields ({n})" in err
    assert f"config key 'baselines.out_of_distribution.n_fields': {n + 2} is not allowed" in err
    demo["baselines"]["enabled"] = False  # off: the counts are not used
    validate_config(demo)
    demo["baselines"]["cheap"]["n_noise"] = {"1": 0}
    assert "baselines.cheap.n_noise" in _error(demo)
    demo["baselines"]["cheap"]["n_noise"] = 1
    demo["baselines"]["enabled"], demo["baselines"]["mcmc_fields"] = True, 1
    demo["baselines"]["out_of_distribution"]["n_fields"] = 1
    demo["inference"]["scan"] = "around_truth"
    assert "config key 'inference.scan': 'around_truth' is not allowed with baselines.enabled" in _error(demo)


@pytest.mark.parametrize("value,message", [
    ([11.9, 8.9], "config key 'prepare.norm_range': [11.9, 8.9] is not allowed; expected [lo, hi] with lo < hi"),
    ([9.0], "config key 'prepare.norm_range'"),
])
def test_norm_range_must_be_an_increasing_pair(demo, value, message):
    demo["prepare"]["norm_range"] = value
    assert message in _error(demo)
def test_inference_fields_above_the_test_split_fail_at_config_time(demo):
    """Issue 15, case 8: not in job 47 of the run."""
    c = copy.deepcopy(demo)  # 100 simulations, 15% test: 15 simulations x 15 maps
    c["inference"]["n_fields"] = 226
    assert ("config key 'inference.n_fields': 226 is not allowed; expected at most 225, the maps of the test split "
            "(15 simulations x 15)") in _error(c)
    c["inference"]["n_fields"] = 225
    validate_config(c)


def test_points_beyond_their_split_fail_at_config_time(demo):
    """Validation, sampler-cost and sampling points are distinct simulations of their split:
    the demo's 100 simulations leave 15 in the validation and 15 in the test split."""
    c = copy.deepcopy(demo)
    c["validation"]["n_points"], c["sampler_cost"]["n_points"], c["sampling"]["n_points"] = 16, 16, 16
    err = _error(c)
    for key, split in (("validation.n_points", "val"), ("sampler_cost.n_points", "val"), ("sampling.n_points", "test")):
        assert f"config key '{key}': 16 is not allowed; expected at most 15, the simulations of the {split} split" in err
    c["validation"]["n_points"], c["sampler_cost"]["n_points"], c["sampling"]["n_points"] = 15, 15, 15
    validate_config(c)


def test_yaml_syntax_error_names_file_and_line(tmp_path):
    text = (ROOT / "config/smoke.yaml").read_text().replace("n_sims: 12", "n_sims: [12")
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    line = next(i for i, s in enumerate(text.splitlines(), 1) if "n_sims: [12" in s)
    with pytest.raises(ConfigError) as info:
        load_config(bad)
    msg = str(info.value)
    assert msg.startswith(f"{bad}, line ") and "YAML syntax error" in msg and "\n" not in msg
    assert int(msg.split("line ")[1].split(":")[0]) in (line, line + 1)  # the parser may see it on the next line


def test_nested_command_line_override_is_explained_without_blaming_the_exponent(demo):
    """snakemake --config 'pretrain={iterations: 7}' reads the nested 7 as text."""
    demo["pretrain"]["iterations"] = "7"
    msg = _error(demo)
    assert "snakemake's --config reads values nested in {...} as text; set nested keys in a --configfile" in msg
    assert "exponent" not in msg


def test_settings_from_names_an_unknown_key():
    """A section with a key its settings do not have is a ValueError naming the key and the
    allowed ones (train.py used to die with a TypeError traceback)."""
    from cosmodiff.config import settings_from
    from cosmodiff.inference.settings import InferenceSettings

    assert settings_from(InferenceSettings, {"n_coarse": 5}, "inference").n_coarse == 5
    with pytest.raises(ValueError, match=r"unknown training settings \['iteration'\]; allowed: .*iterations"):
        from cosmodiff.train import TrainSettings

        settings_from(TrainSettings, {"iteration": 7}, "training")
