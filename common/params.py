"""`--params params.yaml`: the pipeline's parameters as one grouped file, as the DVC variant keeps them.

A params file lets `dvc repro` (and a person) change an experiment by editing one versioned file
instead of a command line. Its values are not a second configuration system: each key maps to
the argparse destination of a command-line flag, every value goes through that flag's own type
check (`positive_int`, choices...), and the file's values become the parser's defaults, so flags
given on the command line still win. The same file serves pipeline.py and evaluate.py: each
front end takes the keys it has a flag for (evaluate.py has no --epochs) and ignores the rest,
while a key that no front end knows (a typo) is an error naming the file, the key and the valid
keys. Which key sets which flag is not listed here: it is each `Setting`'s ``param``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Sequence

import yaml

from common.atomic import atomic_write_text
from common.errors import UserError
from common.settings import Setting

PARAMS_FILE = "params.yaml"

def add_params_option(parser: argparse.ArgumentParser) -> None:
    """Give a front end the `--params FILE` flag that `parse_with_params` reads."""
    parser.add_argument("--params", dest="params_file", metavar="FILE", default=None,
                        help="read parameters from this YAML file (groups data/train/reports, "
                             f"e.g. {PARAMS_FILE}); flags given on the command line override it")


def parse_with_params(parser: argparse.ArgumentParser, argv: Sequence[str] | None,
                      settings: Sequence[Setting]) -> argparse.Namespace:
    """Parse ``argv`` with the values of its `--params FILE` (if any) as the parser's defaults.

    ``settings`` are every front end's settings, so that a key meant for the other front end is
    skipped, not reported as unknown.

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
        values = load_params(Path(params_file), settings)
        parser.set_defaults(**params_defaults(values, actions, params_file, settings))
    return parser.parse_args(argv)


def param_keys(settings: Sequence[Setting]) -> list[str]:
    """The keys a params file may hold, in declaration order."""
    return list(dict.fromkeys(spec.param for spec in settings if spec.param))


def load_params(path: Path, settings: Sequence[Setting]) -> dict[str, Any]:
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
    valid = param_keys(settings)
    flat: dict[str, Any] = {}
    for group, values in content.items():
        if not isinstance(values, dict):
            raise UserError(f"{path}: {group}: expected a group of keys, found {values!r}; "
                            f"valid keys: {', '.join(valid)}")
        for key, value in values.items():
            flat[f"{group}.{key}"] = value
    unknown = [key for key in flat if key not in valid]
    if unknown:
        raise UserError(f"{path}: unknown key {unknown[0]}; valid keys: {', '.join(valid)}")
    return flat


def params_defaults(params: dict[str, Any], actions: dict[str, argparse.Action],
                    source: str | Path, settings: Sequence[Setting]) -> dict[str, Any]:
    """Parser defaults (dest -> value) from file values, type-checked by each flag's own rules.

    Keys this front end has no flag for are skipped (see the module docstring); null means "the
    flag's default".
    """
    defaults: dict[str, Any] = {}
    for key, value in params.items():
        spec = next((s for s in settings if s.param == key and s.flag_dest() in actions), None)
        if spec is None or value is None:
            continue
        where = f"{source}: {key}"
        value = spec.file_value(value)
        if spec.inverted:
            value = not _bool(value, where)
        defaults[spec.flag_dest()] = _convert(actions[spec.flag_dest()], value, where)
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


def effective_params(args: argparse.Namespace, settings: Sequence[Setting],
                     overrides: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    """The parsed values grouped like params.yaml: what actually ran, file and flags combined.

    ``overrides`` replaces values by key, e.g. ``{"train.model": name}`` for the one model of a
    run folder when ``args`` lists several (--models_list).
    """
    values: dict[str, Any] = {}
    for spec in settings:
        if spec.param and spec.param not in values and hasattr(args, spec.flag_dest()):
            values[spec.param] = _plain(spec.value_from(args))
    values.update(overrides or {})
    grouped: dict[str, dict[str, Any]] = {}
    for key in param_keys(settings):
        if key in values:
            group, name = key.split(".", 1)
            grouped.setdefault(group, {})[name] = values[key]
    return grouped


def write_effective_params(args: argparse.Namespace, run_dir: Path, settings: Sequence[Setting],
                           overrides: dict[str, Any] | None = None) -> Path:
    """Write `<run_dir>/params.yaml`, so a run folder says how it was made and can be re-run.

    The file is itself a valid `--params` file: `pipeline.py --params <run_dir>/params.yaml`
    repeats the run.
    """
    path = Path(run_dir) / PARAMS_FILE
    source = getattr(args, "params_file", None)
    header = (f"# Effective parameters of this run: {source or 'defaults'} with the command-line "
              "flags applied.\n")
    body = yaml.safe_dump(effective_params(args, settings, overrides), sort_keys=False,
                          default_flow_style=False)
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
