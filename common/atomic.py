"""Write a file so that readers see the old version or the new one, never half of either.

Checkpoints, stats, hparams, cache indexes, reports and weights zips all go through here: a
killed process, Ctrl-C or a full disk must never leave a truncated file under the real name.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO, Callable

from common.errors import UserError

TEMP_SUFFIX = ".tmp"


def atomic_write(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """Write via a temporary file in the same folder, fsync, rename: readers never see half a file.

    A failed write (a full disk, Ctrl-C) removes the temporary file and leaves ``path`` as it was;
    an OSError becomes a one-line UserError. A process killed before the rename leaves only a
    hidden ``.<name>.<pid>.tmp`` behind, which `remove_temp_files` clears on the next run.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}{TEMP_SUFFIX}")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except Exception as err:
        tmp.unlink(missing_ok=True)
        cause = _os_error_in(err)
        if cause is None:
            raise
        raise UserError(f"{path}: could not be written ({cause.strerror or cause}); the files "
                        "written before it are kept: free disk space or check the folder's "
                        "permissions, then re-run the same command") from err
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _os_error_in(err: BaseException | None) -> OSError | None:
    """The OSError behind ``err``: torch.save reports a full disk as a RuntimeError raised while
    closing its zip writer, with the ENOSPC only in the exception's context."""
    while err is not None and not isinstance(err, OSError):
        err = err.__cause__ or err.__context__
    return err


def atomic_write_text(path: Path, text: str) -> None:
    """`atomic_write` of UTF-8 text."""
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))
