"""A setting declared once: its flag, help, params.yaml key and run-name label in one object.

Snap Vision's settings reach the user through several doors: argparse flags on two front ends, keys
of a params.yaml file, parts of a run folder's name and columns of the run listing. Each of those
is generated from one `Setting`, so adding a setting is one declaration (plus its use), and the
doors cannot drift apart. Training hyperparameters carry theirs as the metadata of their
`TrainConfig` field (see `setting_field`), so the field's default is the flag's default too.
"""
from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, Iterable

BOTH = frozenset({"pipeline", "evaluate"})
PIPELINE = frozenset({"pipeline"})
EVALUATE = frozenset({"evaluate"})


@dataclass(frozen=True)
class Setting:
    """One setting of the command line.

    flags: the option strings, long one last (``("-lr", "--learning_rate")``); the last one
        names the argparse destination unless ``dest`` says otherwise.
    help: what it does and when to change it (argparse appends the default).
    group: the --help section it is listed under.
    front_ends: which front ends take it: pipeline.py, evaluate.py or both.
    param: its ``group.key`` in params.yaml, or None when the file cannot set it.
    inverted: the flag says the opposite of the value (``--no_switch`` sets ``switch`` false);
        the params.yaml key and the config field hold the value, the flag its negation.
    alias: a second flag that sets one value (``("--no_augment", "none")``), kept for old commands.
    param_aliases: params.yaml values read as others (``((False, "none"),)``), kept for old files.
    """

    flags: tuple[str, ...]
    help: str
    group: str
    front_ends: frozenset[str] = BOTH
    default: Any = None
    type: Callable[[str], Any] | None = None
    choices: tuple[Any, ...] | None = None
    nargs: str | None = None
    metavar: str | None = None
    dest: str | None = None
    param: str | None = None
    inverted: bool = False
    alias: tuple[str, Any] | None = None
    param_aliases: tuple[tuple[Any, Any], ...] = ()

    @property
    def name(self) -> str:
        """The argparse destination (and, for a config field, the field's name)."""
        return self.dest or self.flags[-1].lstrip("-")

    @property
    def is_switch(self) -> bool:
        """A flag that takes no value: it is present or absent."""
        return self.type is None and self.choices is None and isinstance(self.default, bool)

    def flag_default(self) -> Any:
        return (not self.default) if self.inverted else self.default

    def add_to(self, parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> argparse.Action:
        """Declare this setting's flag on ``parser``."""
        kwargs: dict[str, Any] = {"help": self.help, "default": self.flag_default()}
        if self.inverted or self.is_switch:
            kwargs["action"] = "store_true"
        else:
            kwargs.update(type=self.type, choices=self.choices, nargs=self.nargs, metavar=self.metavar)
        flag_dest = self.flags[-1].lstrip("-")
        if flag_dest != self.name and not self.inverted:
            kwargs["dest"] = self.name
        action = parser.add_argument(*self.flags, **{k: v for k, v in kwargs.items() if v is not None
                                                     or k == "default"})
        if self.alias is not None:
            flag, value = self.alias
            parser.add_argument(flag, dest=self.flag_dest(), action="store_const", const=value,
                                help=f"same as {self.flags[-1]} {value}")
        return action

    def file_value(self, value: Any) -> Any:
        """A params.yaml value as the flag would take it (``param_aliases`` applied to booleans)."""
        if isinstance(value, bool):
            return dict(self.param_aliases).get(value, value)
        return value

    def flag_dest(self) -> str:
        """Where argparse stores it: the field name, or the inverted flag's own name."""
        return self.flags[-1].lstrip("-") if self.inverted else self.name

    def value_from(self, args: argparse.Namespace) -> Any:
        """The setting's value (not the flag's) from parsed arguments."""
        value = getattr(args, self.flag_dest())
        return (not value) if self.inverted else value


_SAME = object()


def setting_field(default: Any, *, label: str | None = None, reference: Any = None,
                  flag_default: Any = _SAME, **setting: Any) -> Any:
    """A dataclass field whose default is also its setting's default (declared once).

    ``setting`` holds the `Setting` arguments; without ``flags`` the field has no flag (it is set
    by the program, e.g. from the model). ``flag_default=None`` makes the flag's default "not
    given", for settings whose default depends on another (the config resolves it, see
    `TrainConfig.from_args`). ``label`` and ``reference`` are for fields that change
    what training produces: the short label that names the run folder (``_K_8``) and lists it,
    appended when the value differs from ``reference``. The reference is fixed, not the current
    default, so changing a default never renames an existing run.
    """
    spec = Setting(default=default if flag_default is _SAME else flag_default, **setting) \
        if "flags" in setting else None
    name_part = (label, reference) if label else None
    return dataclasses.field(default=default, metadata={"setting": spec, "name_part": name_part})


def field_settings(cls: type) -> dict[str, Setting]:
    """field name -> Setting of a dataclass's fields declared with `setting_field` and a flag."""
    return {f.name: f.metadata["setting"] for f in dataclasses.fields(cls)
            if f.metadata.get("setting") is not None}


def field_name_parts(cls: type) -> dict[str, tuple[str, Any]]:
    """field name -> (label, reference) of the fields declared with a run-name label."""
    return {f.name: f.metadata["name_part"] for f in dataclasses.fields(cls)
            if f.metadata.get("name_part") is not None}


def add_settings(parser: argparse.ArgumentParser, settings: Iterable[Setting], front_end: str) -> None:
    """Declare the flags of ``settings`` that ``front_end`` takes, under their --help groups."""
    groups: dict[str, Any] = {}
    for spec in settings:
        if front_end in spec.front_ends:
            if spec.group not in groups:
                groups[spec.group] = parser.add_argument_group(spec.group)
            spec.add_to(groups[spec.group])

