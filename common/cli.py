"""Shared glue for the command-line front ends (pipeline.py, evaluate.py)."""
import argparse
import difflib
import io
import sys
import warnings
from pathlib import Path
from typing import Callable, NoReturn, Sequence

from common.errors import UserError


def run_main(main: Callable[[Sequence[str] | None], int | None], argv: Sequence[str] | None = None) -> int:
    """Run ``main`` and turn a ``UserError`` into ``error: <message>`` on stderr, exit code 2.

    An ``OSError`` that reaches this far (a file where a folder should be, no permission, a full
    disk) is the machine's answer to a path the user gave, so it is reported the same way, naming
    the file. ``--debug`` anywhere in argv lets the traceback through instead, for bug reports.
    Ctrl-C exits with 130 and one line, not a traceback.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    _never_fail_on_odd_names()
    try:
        with warnings.catch_warnings():
            warnings.showwarning = show_warning_line
            return int(main(args) or 0)
    except (UserError, OSError) as err:
        if "--debug" in args:
            raise
        message = str(err) if isinstance(err, UserError) else _describe_os_error(err)
        print(f"error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if "--debug" in args:
            raise
        print("interrupted: finished checkpoints, downloads and caches are kept; re-run the same "
              "command to carry on", file=sys.stderr)
        return 130


def show_warning_line(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                      file=None, line: str | None = None) -> None:
    """``warnings.showwarning`` for the front ends: ``warning: <message>`` on one line of stderr.

    Our own warnings already read ``<file>: <what>; <what to do>``; Python's default format would
    add the source file and line that raised it and echo that source line, which tells a user
    nothing. A library's warning keeps its category and origin at the end of the same line, for
    bug reports.
    """
    text = " ".join(str(message).split())
    if not _is_ours(filename):
        text += f" ({category.__name__} from {Path(filename).name}:{lineno})"
    print(f"warning: {text}", file=file or sys.stderr)


def _is_ours(filename: str) -> bool:
    """Whether a warning was raised by this project's code (the folder above common/)."""
    try:
        Path(filename).resolve().relative_to(_PROJECT_ROOT)
    except ValueError:
        return False
    return "site-packages" not in Path(filename).parts


_PROJECT_ROOT = Path(__file__).resolve().parent.parent


def _never_fail_on_odd_names() -> None:
    """File names that are not valid UTF-8 reach Python as lone surrogates, which a strict
    stdout cannot encode: printing such a path must show ``\\udcff``, not crash the run."""
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(errors="backslashreplace")


def _describe_os_error(err: OSError) -> str:
    """``<file>: <the OS's reason>; <what to check>`` from an OSError, on one line."""
    where = " -> ".join(str(name) for name in (err.filename, err.filename2) if name is not None)
    why = err.strerror or " ".join(str(err).split()) or type(err).__name__
    return (f"{where or 'file system'}: {why}; check that path (a file where a folder should be?), "
            "its permissions and the free disk space (--debug shows where it failed)")


class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends "(default: X)" once: not when the help already names the default, and not for
    switches and unset options, whose default (False, None) says nothing."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if action.default in (None, False, argparse.SUPPRESS) or "default" in text:
            return text
        return super()._get_help_string(action)


class SuggestingParser(argparse.ArgumentParser):
    """An ArgumentParser whose "unrecognized arguments" error names the closest real flag,
    because with abbreviations off a typo such as ``--epoch 2`` is rejected, and the user should
    not have to read all of ``--help`` to find ``--epochs``."""

    def error(self, message: str) -> NoReturn:
        prefix = "unrecognized arguments: "
        if message.startswith(prefix):
            hints = [hint for hint in map(self._suggestion, message[len(prefix):].split()) if hint]
            message = "; ".join([message, *hints])
        super().error(message)

    def _suggestion(self, word: str) -> str | None:
        if not word.startswith("-"):
            return None
        flag = word.split("=", 1)[0]
        known = [s for s in self._option_string_actions if s.startswith("--") or len(s) > 2]
        close = difflib.get_close_matches(flag, known, n=1, cutoff=0.6)
        return f"{flag}: did you mean {close[0]}?" if close else None
