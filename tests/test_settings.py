"""Each setting is declared once and reaches every door from there: both front ends' flags, the
params.yaml mapping, the TrainConfig built from the flags, the run folder's name and the run list.

The tests walk the declarations, so a setting added later is checked without editing this file.
"""
from __future__ import annotations

import argparse
import dataclasses

import pytest
import yaml

import evaluate
import pipeline
from common.params import effective_params, parse_with_params
from common.settings import Setting
from training.config import TrainConfig, name_parts
from training.options import ALL_SETTINGS, config_from_args
from training.run_list import _other
from training.runs import _NAME_VALUES, run_name

PARSERS = {"pipeline": pipeline.build_parser, "evaluate": evaluate.build_parser}
SET_BY_PROGRAM = {"model", "pretrained", "amp"}  # TrainConfig fields with no flag, on purpose


# Settings whose valid values are constrained beyond their type (a pattern; P x K batches).
SAMPLES = {"device": "cpu", "images_per_item": 8, "batch_size": 32, "lr_decay": 0.9,
           "lr_schedule": "exponential"}


def changed_value(spec: Setting):
    """A valid value other than the default, as the flag's own type would produce it."""
    if spec.flag_dest() in SAMPLES:
        return SAMPLES[spec.flag_dest()]
    if spec.choices:
        other = next(c for c in spec.choices if c not in (spec.default if isinstance(spec.default, list)
                                                         else [spec.default]))
        return [other] if spec.nargs == "+" else other
    if isinstance(spec.default, bool):
        return not spec.default
    if isinstance(spec.default, str) or spec.default is None and spec.type in (None, str):
        return "elsewhere"
    if isinstance(spec.default, float):
        return spec.default / 2
    return (spec.default or 2) + 1


def flag_text(spec: Setting, value) -> list[str]:
    if spec.inverted or isinstance(spec.default, bool):
        return [spec.flags[-1]] if (not value if spec.inverted else value) else []
    return [spec.flags[-1], *map(str, value if isinstance(value, list) else [value])]


def ids(specs):
    return [spec.flags[-1] for spec in specs]


def test_every_training_field_is_declared_or_set_by_the_program():
    for f in dataclasses.fields(TrainConfig):
        declared = f.metadata.get("setting") is not None or f.metadata.get("name_part") is not None
        assert declared or f.name in SET_BY_PROGRAM, f"TrainConfig.{f.name} has no declaration"


@pytest.mark.parametrize("spec", ALL_SETTINGS, ids=ids(ALL_SETTINGS))
@pytest.mark.parametrize("front_end", PARSERS)
def test_each_front_end_has_exactly_its_flags_with_the_declared_default(spec, front_end):
    actions: dict[str, list[argparse.Action]] = {}
    for action in PARSERS[front_end]()._actions:
        actions.setdefault(action.dest, []).append(action)
    if front_end not in spec.front_ends:
        assert spec.flag_dest() not in actions
        return
    main, *alias = actions[spec.flag_dest()]
    assert tuple(main.option_strings) == spec.flags and main.default == spec.flag_default()
    assert [(a.option_strings[0], a.const) for a in alias] == ([spec.alias] if spec.alias else [])


@pytest.mark.parametrize("spec", [s for s in ALL_SETTINGS if s.param], ids=ids([s for s in ALL_SETTINGS if s.param]))
def test_each_params_key_sets_its_flag_and_is_written_back(spec, tmp_path):
    value = changed_value(spec)
    group, key = spec.param.split(".")
    file_value = value[0] if isinstance(value, list) and "evaluate" in spec.front_ends else value
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({group: {key: file_value}}))
    front_end = sorted(spec.front_ends)[-1]
    args = parse_with_params(PARSERS[front_end](), ["--params", str(path)], ALL_SETTINGS)
    assert spec.value_from(args) == file_value
    assert effective_params(args, ALL_SETTINGS)[group][key] == file_value


TRAINING = [f for f in dataclasses.fields(TrainConfig) if f.metadata.get("setting") is not None]


@pytest.mark.parametrize("field", TRAINING, ids=[f.name for f in TRAINING])
def test_each_training_flag_reaches_the_config(field):
    spec = field.metadata["setting"]
    value = changed_value(spec)
    front_end = "pipeline"
    args = PARSERS[front_end]().parse_args(flag_text(spec, value))
    config = config_from_args(args, "simple_net", model=None)
    assert getattr(config, field.name) == value


def reference_config(**changes) -> TrainConfig:
    """The original's settings: every name part at its reference value (the warm-up is a name
    part of the cosine schedule only, so it is tested under that schedule)."""
    values = {field: reference for field, (_, reference) in name_parts().items()}
    schedule = "cosine" if "warmup_steps" in changes else "exponential"
    return TrainConfig(model="simple_net", learning_rate=1e-4, lr_schedule=schedule,
                       **{**values, **changes})


@pytest.mark.parametrize("field", list(name_parts()), ids=list(name_parts()))
def test_each_name_part_names_the_run_and_shows_in_the_run_list(field):
    label, reference = name_parts()[field]
    spec = next((f.metadata["setting"] for f in dataclasses.fields(TrainConfig) if f.name == field), None)
    value = changed_value(spec) if spec is not None else (not reference if reference is not None else 32)
    base = run_name("SimpleNet", reference_config(**({field: reference} if field == "warmup_steps" else {})))
    config = reference_config(**{field: value})
    assert run_name("SimpleNet", config) == f"{base}_{label}_{_NAME_VALUES.get((field, value), value)}"
    shown = _NAME_VALUES.get((field, value), value)
    assert _other({"model_class": "SimpleNet", **config.to_dict()}) == f"{label}={shown}"


def test_reference_values_not_todays_defaults_name_a_run():
    # The original's settings keep the original's name whatever today's defaults are.
    assert run_name("SimpleNet", reference_config()) == "SimpleNet_LR_0.0001_decay_0.95_BS_64"
    assert run_name("SimpleNet", TrainConfig(model="simple_net")) == \
        "SimpleNet_LR_0.001_decay_cosine_BS_64_warmup_100"


def test_help_prints_each_default_once():
    for build in PARSERS.values():
        text = build().format_help()
        assert "(default 64)" not in text and text.count("(default: 64)") == 1


def test_abbreviated_flags_are_refused(capsys):
    with pytest.raises(SystemExit):
        pipeline.build_parser().parse_args(["--epoch", "2"])
    assert "unrecognized arguments: --epoch" in capsys.readouterr().err


def test_parsers_are_plain_argparse():
    assert all(isinstance(build(), argparse.ArgumentParser) for build in PARSERS.values())
