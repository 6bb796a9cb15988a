"""Validation of workflow configurations, with errors a user can act on.

The JSON schema in ``workflow/schemas/config.schema.yaml`` carries a human description of what
each key allows; :func:`validate_config` reports every violation as

    config key 'data.resolution': 100 is not allowed; expected a power of two between 16 and 1024 ...

and then checks the relations a schema cannot express (the pretraining resolution divides the
data resolution, the split fractions sum to 1, ranges are ordered).
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import yaml

SCHEMA_PATH = Path(__file__).resolve().parents[1] / "schemas" / "config.schema.yaml"


class ConfigError(ValueError):
    """A configuration that the workflow cannot run; the message lists every problem."""


def _key(path):
    return ".".join(str(p) if not isinstance(p, int) else f"[{p}]" for p in path).replace(".[", "[") or "<top level>"


def _describe(error):
    """One readable line for a jsonschema error."""
    v = error.validator
    key = _key(error.absolute_path)
    if v == "required":
        missing = error.message.split("'")[1]
        sub = error.schema.get("properties", {}).get(missing, {})
        hint = f"; expected {sub['description']}" if "description" in sub else ""
        where = f"'{key}.{missing}'" if error.absolute_path else f"'{missing}'"
        return f"config key {where} is missing{hint}"
    if v == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        where = f"config key '{key}'" if error.absolute_path else "config"
        return f"{where}: {error.message}; allowed keys: {', '.join(allowed)}"
    desc = error.schema.get("description")
    # errors inside arrays / $refs: look one level up for a description
    if desc is None and error.parent is not None:
        desc = error.parent.schema.get("description")
    value = error.instance
    shown = repr(value) if not isinstance(value, (dict, list)) else str(value)
    text = f"config key '{key}': {shown} is not allowed"
    if desc:
        text += f"; expected {desc}"
    else:
        text += f" ({error.message})"
    if isinstance(value, str) and v == "type":
        text += _text_number_hint(value)
    return text


def _text_number_hint(value):
    """Why a number arrived as text: YAML's exponent rule, or snakemake's --config, which
    reads every value nested in {...} as text."""
    try:
        float(value)
    except ValueError:
        return ""
    if re.search(r"\d[eE]\d", value):
        return f" (YAML read {value!r} as text: write numbers like 1.0e+9, with a sign in the exponent)"
    return (f" (read {value!r} as text: snakemake's --config reads values nested in {{...}} as text; set nested "
            "keys in a --configfile)")


def load_schema(path=SCHEMA_PATH):
    with open(path) as f:
        return yaml.safe_load(f)


def validate_config(config, schema_path=SCHEMA_PATH):
    """Raise :class:`ConfigError` listing every problem of ``config`` (a dict); return it.

    config:      the configuration as loaded from YAML.
    schema_path: the JSON schema (YAML) to check it against.
    """
    import jsonschema

    schema = load_schema(schema_path)
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: list(map(str, e.absolute_path)))
    problems = []
    for err in errors:
        # a oneOf/anyOf wrapper explains nothing: report its best sub-error
        best = jsonschema.exceptions.best_match([err]) if err.context else err
        problems.append(_describe(best))
    if not problems:
        problems = _relations(config)
    if problems:
        raise ConfigError("invalid configuration:\n  - " + "\n  - ".join(problems))
    return config


def _relations(config):
    """Checks that involve several keys."""
    problems = []
    data, prep = config["data"], config["prepare"]
    res, low = data["resolution"], prep["low_resolution"]
    if low >= res:
        problems.append(
            f"config key 'prepare.low_resolution': {low} is not allowed; expected a power of two "
            f"below data.resolution ({res})"
        )
    total = sum(prep["split"].values())
    if abs(total - 1) > 1e-6:
        problems.append(f"config key 'prepare.split': fractions sum to {total:g}; expected them to sum to 1")
    for name in ("omega_m_range", "sigma_8_range"):
        lo, hi = data["synthetic"][name]
        if lo >= hi:
            problems.append(f"config key 'data.synthetic.{name}': [{lo}, {hi}] is not allowed; expected low < high")
    model = config["model"]
    if len(model["attention"]) != len(model["channel_mults"]):
        problems.append(
            f"config key 'model.attention': {len(model['attention'])} entries is not allowed; expected one per "
            f"level of model.channel_mults ({len(model['channel_mults'])})"
        )
    bad = [model["base_channels"] * m for m in model["channel_mults"] if (model["base_channels"] * m) % model["groups"]]
    if bad:
        problems.append(f"config key 'model.groups': {model['groups']} is not allowed; expected a divisor of every level's channels {bad}")
    factor = 2 ** (len(model["channel_mults"]) - 1)
    if low % factor:
        problems.append(
            f"config key 'model.channel_mults': {len(model['channel_mults'])} levels downsample by {factor}, "
            f"which must divide prepare.low_resolution ({low})"
        )
    n_inf = config["inference"]["n_fields"]
    for key in ("convergence_fields", "oracle_fields"):
        n = config["diagnostics"][key]
        if n > n_inf:
            problems.append(
                f"config key 'diagnostics.{key}': {n} is not allowed; expected at most inference.n_fields ({n_inf}), "
                "whose exact posteriors it is compared with"
            )
    base = config["baselines"]
    for key, n in (("mcmc_fields", base["mcmc_fields"]), ("out_of_distribution.n_fields", base["out_of_distribution"]["n_fields"])):
        if base["enabled"] and n > n_inf:
            problems.append(f"config key 'baselines.{key}': {n} is not allowed; expected at most inference.n_fields ({n_inf}), "
                            "whose exact posteriors it is compared with")
    if base["enabled"] and config["inference"]["scan"] == "around_truth":
        problems.append("config key 'inference.scan': 'around_truth' is not allowed with baselines.enabled; expected "
                        "coarse_to_fine or local (fields outside the prior have no window around their truth, and a "
                        "window centred on the truth would tell the out-of-distribution test the answer)")
    norm = prep["norm_range"]
    if norm is not None and not norm[0] < norm[1]:
        problems.append(f"config key 'prepare.norm_range': {norm} is not allowed; expected [lo, hi] with lo < hi (log10)")
    if abs(total - 1) <= 1e-6:
        problems += _test_fields(config)
    for stage in ("pretrain", "finetune"):
        st = config[stage]
        if st["lr_milestones"] and st["lr_step"]:
            problems.append(f"config key '{stage}.lr_milestones': {st['lr_milestones']} is not allowed with lr_step {st['lr_step']}; expected one of the two (the other [] or 0)")
        if st["lr_milestones"] != sorted(set(st["lr_milestones"])):
            problems.append(f"config key '{stage}.lr_milestones': {st['lr_milestones']} is not allowed; expected increasing iterations")
    if config["pretrain"]["init"] != "none":
        problems.append(f"config key 'pretrain.init': {config['pretrain']['init']!r} is not allowed; expected 'none' (pretraining starts from random weights)")
    if data["source"] == "local" and not data["local_dir"]:
        problems.append("config key 'data.local_dir' is null; expected a folder holding the CMD files when data.source is 'local'")
    return problems


def _test_fields(config):
    """inference.n_fields against the maps of the test split, and the validation, sampler-cost
    and sampling points against the simulations of their splits, where the number of
    simulations is known before any data exist (synthetic: data.synthetic.n_sims; download:
    the CMD LH set)."""
    from .camels import N_SIMS
    from .cosmology import MAPS_PER_SIM
    from .prepare import split_simulations

    data = config["data"]
    n_sims = {"synthetic": data["synthetic"]["n_sims"], "download": N_SIMS}.get(data["source"])
    if n_sims is None:
        return []
    try:
        splits = split_simulations(n_sims, config["prepare"]["split"])
    except ValueError as err:
        return [f"config key 'prepare.split': {err}"]
    sims = {name: stop - first for name, (first, stop) in splits.items()}
    problems = []
    n_maps, n_fields = sims["test"] * MAPS_PER_SIM, config["inference"]["n_fields"]
    if n_fields > n_maps:
        problems.append(f"config key 'inference.n_fields': {n_fields} is not allowed; expected at most {n_maps}, the maps of "
                        f"the test split ({sims['test']} simulations x {MAPS_PER_SIM})")
    # the points are distinct simulations of a split (cosmodiff.validation.choose_points)
    for key, split in (("validation.n_points", "val"), ("sampler_cost.n_points", "val"), ("sampling.n_points", "test")):
        section, name = key.split(".")
        if config[section][name] > sims[split]:
            problems.append(f"config key '{key}': {config[section][name]} is not allowed; expected at most {sims[split]}, "
                            f"the simulations of the {split} split")
    return problems


def settings_from(
    cls,                # A settings dataclass (TrainSettings, SamplerSettings, InferenceSettings).
    section,            # A config section as a dict (a rule's --settings JSON, decoded).
    what,               # Its name in messages: "training", "sampler", "inference".
):
    """``cls(**section)``, with an unknown key a ValueError naming it and the allowed ones
    (not a TypeError traceback): the one way every script turns a section into settings."""
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(section) - set(names))
    if unknown:
        raise ValueError(f"unknown {what} settings {unknown}; allowed: {', '.join(names)}")
    return cls(**section)


def merge(base, overlay):
    """``base`` updated key by key, recursively, with ``overlay`` (lists and values replaced):
    what Snakemake does with several ``--configfile`` files given in order."""
    out = dict(base)
    for k, v in overlay.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _read_yaml(path):
    """One config file; a YAML syntax error is a ConfigError naming the file and line."""
    with open(path) as f:
        try:
            config = yaml.safe_load(f)
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            where = f"{path}, line {mark.line + 1}" if mark else str(path)
            problem = getattr(err, "problem", None) or str(err)
            raise ConfigError(f"{where}: YAML syntax error: {problem}") from None
    if not isinstance(config, dict):
        raise ConfigError(f"{path}: expected keys at the top level, got {type(config).__name__}")
    return config


def load_config(path, *overlays, schema_path=SCHEMA_PATH):
    """Read a YAML config file, update it with overlay files in order (config/paper+*.yaml),
    and validate the result."""
    config = {}
    for p in (path, *overlays):
        config = merge(config, _read_yaml(p))
    return validate_config(config, schema_path)
