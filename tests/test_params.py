"""`--params FILE` with the real pipeline.py and evaluate.py parsers: file values become defaults,
flags win, every value passes its flag's type check."""
from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import yaml

import evaluate
import pipeline
from common.errors import UserError
from common.params import effective_params, load_params, param_keys, parse_with_params, write_effective_params
from training.options import ALL_SETTINGS

REPO = Path(__file__).resolve().parents[1]


def pipeline_like_parser() -> argparse.ArgumentParser:
    """pipeline.py's own parser: the flags a user types, not a copy of them."""
    return pipeline.build_parser()


def evaluate_like_parser() -> argparse.ArgumentParser:
    """evaluate.py's own parser: one --model, no --epochs, a --reports_dir."""
    return evaluate.build_parser()


def parse(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    return parse_with_params(parser, argv, ALL_SETTINGS)


def params_file(tmp_path: Path, content: dict | str) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(content if isinstance(content, str) else yaml.safe_dump(content))
    return path


SAMPLE = {
    "data": {"dataset": "my_photos", "big_ims": True, "split": None},
    "train": {"model": "big_net", "epochs": 3, "lr": 0.001, "lr_decay": 0.9, "batch_size": 16,
              "augment": False, "mining": "hard"},
    "reports": {"root": "out/reports", "projection": "tsne"},
}


def test_file_values_become_the_parsed_values(tmp_path):
    path = params_file(tmp_path, SAMPLE)
    args = parse(pipeline_like_parser(), ["--params", str(path)])
    assert args.params_file == str(path)
    assert (args.dataset, args.big_ims, args.split) == ("my_photos", True, None)
    assert args.models_list == ["big_net"]
    assert (args.epochs, args.learning_rate, args.lr_decay, args.batch_size) == (3, 0.001, 0.9, 16)
    assert args.augment == "none" and args.mining == "hard"  # augment: false = --no_augment
    assert args.margin == 0.2  # not in the file: the flag's default


def test_without_params_the_flags_defaults_apply():
    args = parse(pipeline_like_parser(), ["--epochs", "4"])
    assert args.params_file is None and args.epochs == 4 and args.learning_rate == 0.001


@pytest.mark.parametrize("order", ["params_first", "params_last"])
def test_command_line_flags_override_the_file(tmp_path, order):
    path = params_file(tmp_path, SAMPLE)
    flags = ["-lr", "0.01", "--epochs", "7", "-m", "simple", "simple_net"]
    argv = ["--params", str(path), *flags] if order == "params_first" else [*flags, f"--params={path}"]
    args = parse(pipeline_like_parser(), argv)
    assert (args.learning_rate, args.epochs, args.models_list) == (0.01, 7, ["simple", "simple_net"])
    assert args.lr_decay == 0.9  # still from the file


def test_each_front_end_takes_the_keys_it_has_flags_for(tmp_path):
    path = params_file(tmp_path, SAMPLE)
    args = parse(evaluate_like_parser(), ["--params", str(path)])
    assert args.model == "big_net" and args.reports_dir == "out/reports" and args.projection == "tsne"
    assert not hasattr(args, "epochs")


def test_yaml_exponent_without_dot_is_read_as_the_flag_would(tmp_path):
    # YAML 1.1 reads 1e-4 as a string; the flag's own type turns it into a number.
    path = params_file(tmp_path, "train:\n  lr: 1e-4\n")
    assert parse(pipeline_like_parser(), ["--params", str(path)]).learning_rate == 1e-4


def test_unknown_key_names_the_file_the_key_and_the_valid_keys(tmp_path):
    path = params_file(tmp_path, {"train": {"lrr": 0.1}})
    with pytest.raises(UserError) as err:
        parse(pipeline_like_parser(), ["--params", str(path)])
    message = str(err.value)
    assert str(path) in message and "train.lrr" in message and "train.lr," in message


def test_unknown_group_is_rejected(tmp_path):
    path = params_file(tmp_path, {"training": {"lr": 0.1}})
    with pytest.raises(UserError, match="training.lr"):
        load_params(path, ALL_SETTINGS)


@pytest.mark.parametrize("key, value, expected", [
    ("train.epochs", 0, "must be at least 1"),         # positive_int applies to file values
    ("train.epochs", 2.5, "not a whole number"),
    ("train.lr", "fast", "not a number"),
    ("train.mining", "easy", "not one of semihard, hard, all"),
    ("train.augment", "no", "not one of none, light, strong"),  # or true/false
    ("data.big_ims", 1, "expected true or false"),
    ("train.batch_size", [8, 16], "expected one value"),
    ("train.model", ["simple", "resnet"], "not one of"),
])
def test_bad_values_name_the_file_and_key(tmp_path, key, value, expected):
    group, name = key.split(".")
    path = params_file(tmp_path, {group: {name: value}})
    with pytest.raises(UserError) as err:
        parse(pipeline_like_parser(), ["--params", str(path)])
    assert f"{path}: {key}:" in str(err.value) and expected in str(err.value)


def test_one_model_expected_by_evaluate(tmp_path):
    path = params_file(tmp_path, {"train": {"model": ["simple", "simple_net"]}})
    with pytest.raises(UserError, match="train.model: expected one value"):
        parse(evaluate_like_parser(), ["--params", str(path)])


def test_missing_or_broken_file(tmp_path):
    with pytest.raises(UserError, match="--params .*nope.yaml: no such file"):
        parse(pipeline_like_parser(), ["--params", str(tmp_path / "nope.yaml")])
    path = params_file(tmp_path, "train:\n  lr: [0.1\n")
    with pytest.raises(UserError, match=r"params.yaml: not valid YAML \(line \d+"):
        parse(pipeline_like_parser(), ["--params", str(path)])
    path = params_file(tmp_path, "- just\n- a list\n")
    with pytest.raises(UserError, match="expected groups"):
        parse(pipeline_like_parser(), ["--params", str(path)])


def test_parser_without_params_option_is_a_programming_error():
    with pytest.raises(ValueError, match="add_params_option"):
        parse_with_params(argparse.ArgumentParser(), [], ALL_SETTINGS)


def test_effective_params_round_trip_through_the_run_folder(tmp_path):
    path = params_file(tmp_path, SAMPLE)
    args = parse(pipeline_like_parser(), ["--params", str(path), "--epochs", "9"])
    grouped = effective_params(args, ALL_SETTINGS)
    assert grouped["train"]["epochs"] == 9 and grouped["train"]["lr"] == 0.001
    assert grouped["train"]["augment"] == "none" and grouped["data"]["big_ims"] is True
    assert "root" not in grouped.get("reports", {})  # pipeline.py has no --reports_dir

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    written = write_effective_params(args, run_dir, ALL_SETTINGS, {"train.model": "big_net"})
    assert written == run_dir / "params.yaml"
    assert str(path) in written.read_text().splitlines()[0]
    again = parse(pipeline_like_parser(), ["--params", str(written)])
    assert {k: v for k, v in vars(again).items() if k != "params_file"} == \
           {k: v for k, v in vars(args).items() if k != "params_file"}


def test_repository_params_file_is_valid_for_both_front_ends():
    params = load_params(REPO / "params.yaml", ALL_SETTINGS)
    assert set(params) <= set(param_keys(ALL_SETTINGS))
    for parser in (pipeline_like_parser(), evaluate_like_parser()):
        parse(parser, ["--params", str(REPO / "params.yaml")])
