"""Shared glue for the command-line front ends (pipeline.py, evaluate.py)."""
import sys
from typing import Callable, Sequence

from misc.errors import UserError


def run_main(main: Callable[[Sequence[str] | None], int | None], argv: Sequence[str] | None = None) -> int:
    """Run ``main`` and turn a ``UserError`` into ``error: <message>`` on stderr, exit code 2.

    ``--debug`` anywhere in argv lets the traceback through instead, for bug reports.
    Ctrl-C exits with 130 and one line, not a traceback.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        return int(main(args) or 0)
    except UserError as err:
        if "--debug" in args:
            raise
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if "--debug" in args:
            raise
        print("interrupted: the last completed checkpoint is kept; re-run the same command to resume",
              file=sys.stderr)
        return 130
