"""`--params params.yaml`: the pipeline's parameters as one grouped file, as the DVC variant keeps them.

A params file lets `dvc repro` (and a person) change an experiment by editing one versioned file
instead of a command line. Its values are not a second configuration system: each key maps to
the argparse destination of a command-line flag, every value goes through that flag's own type
check (`positive_int`, choices...), and the file's values become the parser's defaults, so flags
given on the command line still win. The same file serves pipeline.py and evaluate.py: each
front end takes the keys it has a flag for (evaluate.py has no --epochs) and ignores the rest,
while a key that no front end knows (a typo) is an error naming the file, the key and the valid
keys.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Sequence

import yaml

from misc.errors import UserError
from misc.atomic import atomic_write_text

PARAMS_FILE = "params.yaml"

# "group.key" -> the argparse dests it may set, first one the parser has wins. `train.model`
# is pipeline.py's --models_list (one or more models) and evaluate.py's --model (one).
PARAM_DESTS: dict[str, tuple[str, ...]] = {
    "data.dataset": ("dataset",),
    "data.dataset_dir": ("dataset_dir",),
    "data.eval_fraction": ("eval_fraction",),
    "data.split_seed": ("split_seed",),
    "data.split": ("split",),
    "data.big_ims": ("big_ims",),
    "train.model": ("models_list", "model"),
    "train.embedding_size": ("embedding_size",),
    "train.epochs": ("epochs",),
    "train.batch_size": ("batch_size",),
    "train.images_per_item": ("images_per_item",),
    "train.lr": ("learning_rate",),
    "train.lr_decay": ("lr_decay",),
    "train.lr_schedule": ("lr_schedule",),
    "train.warmup_steps": ("warmup_steps",),
    "train.margin": ("margin",),
    "train.mining": ("mining",),
    "train.seed": ("seed",),
    "train.augment": ("augment",),
    "train.xbm": ("xbm",),
    "train.image_size": ("image_size",),
    "train.eval_every": ("eval_every",),
    "train.save_every": ("save_every",),
    "train.num_workers": ("num_workers",),
    "train.device": ("device",),
    "train.save_dir": ("save_dir",),
    "reports.root": ("reports_dir",),
    "reports.projection": ("projection",),
    "reports.num_neighbours": ("num_neighbours",),
}
# Boolean values kept from earlier files: `augment: false` is `--augment none` (`--no_augment`),
# `augment: true` the default level.
BOOLEAN_ALIASES = {"train.augment": {False: "none", True: None}}


def add_params_option(parser: argparse.ArgumentParser) -> None:
    """Give a front end the `--params FILE` flag that `parse_with_params` reads."""
    parser.add_argument("--params", dest="params_file", metavar="FILE", default=None,
                        help="read parameters from this YAML file (groups data/train/reports, "
                             f"e.g. {PARAMS_FILE}); flags given on the command line override it")


def parse_with_params(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse ``argv`` with the values of its `--params FILE` (if any) as the parser's defaults.

    The file is read before the real parse because its values must be defaults, not arguments:
    only then does a flag on the command line override them whatever the order of the two.
    """
    actions = _actions(parser)
    if "params_file" not in actions:
        raise ValueError("call add_params_option(parser) before parse_with_params")
    argv = list(sys.argv[1:] if argv is None else argv)
    pre = argparse.ArgumentParser(add_help=False)
    add_params_option(pre)
    params_file = pre.parse_known_args(argv)[0].params_file
    if params_file is not None:
        parser.set_defaults(**params_defaults(load_params(Path(params_file)), actions, params_file))
    return parser.parse_args(argv)


def load_params(path: Path) -> dict[str, Any]:
    """The file's values as ``{"group.key": value}``, unknown groups and keys rejected."""
    if not path.is_file():
        raise UserError(f"--params {path}: no such file; give the path of a YAML file such as {PARAMS_FILE}")
    try:
        content = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise UserError(f"{path}: not valid YAML ({_yaml_problem(err)}); fix the file") from err
    if content is None:
        return {}
    if not isinstance(content, dict):
        raise UserError(f"{path}: expected groups (data:, train:, reports:) at the top, found a "
                        f"{type(content).__name__}; see {PARAMS_FILE} in the repository")
    flat: dict[str, Any] = {}
    for group, values in content.items():
        if not isinstance(values, dict):
            raise UserError(f"{path}: {group}: expected a group of keys, found {values!r}; "
                            f"valid keys: {', '.join(PARAM_DESTS)}")
        for key, value in values.items():
            flat[f"{group}.{key}"] = value
    unknown = [key for key in flat if key not in PARAM_DESTS]
    if unknown:
        raise UserError(f"{path}: unknown key {unknown[0]}; valid keys: {', '.join(PARAM_DESTS)}")
    return flat


def params_defaults(params: dict[str, Any], actions: dict[str, argparse.Action],
                    source: str | Path) -> dict[str, Any]:
    """Parser defaults (dest -> value) from file values, type-checked by each flag's own rules.

    Keys this front end has no flag for are skipped (see the module docstring); null means "the
    flag's default".
    """
    defaults: dict[str, Any] = {}
    for key, value in params.items():
        action = next((actions[d] for d in PARAM_DESTS[key] if d in actions), None)
        if action is None or value is None:
            continue
        where = f"{source}: {key}"
        if key in BOOLEAN_ALIASES and isinstance(value, bool):
            value = BOOLEAN_ALIASES[key][value]
            if value is None:
                continue
        defaults[action.dest] = _convert(action, value, where)
    return defaults


def _convert(action: argparse.Action, value: Any, where: str) -> Any:
    """Check and convert one file value exactly as argparse would the same text on the command line."""
    if action.nargs == 0:  # store_true / store_false switches
        return action.const if _bool(value, where) else action.default
    many = action.nargs in ("+", "*") or isinstance(action.nargs, int)
    if isinstance(value, list) and not many:
        raise UserError(f"{where}: expected one value, got the list {value}; give a single value")
    if isinstance(value, dict):
        raise UserError(f"{where}: expected a value, got a group {value}; give a single value")
    converted = [_convert_one(action, item, where) for item in (value if isinstance(value, list) else [value])]
    return converted if many else converted[0]


def _convert_one(action: argparse.Action, value: Any, where: str) -> Any:
    flag = "/".join(action.option_strings) or action.dest
    text = str(value)  # YAML gives ints/floats/bools; argparse types expect the command-line text
    try:
        converted = action.type(text) if callable(action.type) else text
    except (argparse.ArgumentTypeError, TypeError, ValueError) as err:
        raise UserError(f"{where}: {value!r} is not valid for {flag} ({err}); fix the value") from err
    if action.choices is not None and converted not in action.choices:
        raise UserError(f"{where}: {value!r} is not one of {', '.join(map(str, action.choices))} "
                        f"({flag}); fix the value")
    return converted


def _bool(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise UserError(f"{where}: expected true or false, got {value!r}; fix the value")
    return value


def effective_params(args: argparse.Namespace, model: str | None = None) -> dict[str, dict[str, Any]]:
    """The parsed values grouped like params.yaml: what actually ran, file and flags combined.

    ``model`` names the one model of a run folder when ``args`` lists several (--models_list).
    """
    values = vars(args)
    grouped: dict[str, dict[str, Any]] = {}
    for key, dests in PARAM_DESTS.items():
        dest = next((d for d in dests if d in values), None)
        if dest is None:
            continue
        value = _plain(values[dest])
        if key == "train.model" and model is not None:
            value = model
        group, name = key.split(".", 1)
        grouped.setdefault(group, {})[name] = value
    return grouped


def write_effective_params(args: argparse.Namespace, run_dir: Path, model: str | None = None) -> Path:
    """Write `<run_dir>/params.yaml`, so a run folder says how it was made and can be re-run.

    The file is itself a valid `--params` file: `pipeline.py --params <run_dir>/params.yaml`
    repeats the run.
    """
    path = Path(run_dir) / PARAMS_FILE
    source = getattr(args, "params_file", None)
    header = (f"# Effective parameters of this run: {source or 'defaults'} with the command-line "
              "flags applied.\n")
    body = yaml.safe_dump(effective_params(args, model), sort_keys=False, default_flow_style=False)
    atomic_write_text(path, header + body)
    return path


def _actions(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    # argparse has no public listing of a parser's actions; `_actions` is stable since 2.7.
    # The first action of a dest is its main flag (--augment before its alias --no_augment).
    actions: dict[str, argparse.Action] = {}
    for action in parser._actions:
        actions.setdefault(action.dest, action)
    return actions


def _plain(value: Any) -> Any:
    """YAML-safe form of a namespace value (paths as text, tuples as lists)."""
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple):
        return list(value)
    return value


def _yaml_problem(err: Exception) -> str:
    mark = getattr(err, "problem_mark", None)
    problem = getattr(err, "problem", None) or type(err).__name__
    return f"line {mark.line + 1}: {problem}" if mark is not None else str(problem)
