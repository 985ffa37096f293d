"""Extract zip and tar archives from untrusted sources without letting them write anywhere else.

Datasets come as archives from arbitrary URLs, so extraction assumes the archive may be hostile
or broken: every member is checked before anything is written (no `..`, no absolute or drive
paths, no symlinks, hard links or devices), sizes are capped against zip bombs (declared sizes up
front, actual bytes while writing, so lying headers gain nothing), and the files go into a hidden
sibling folder that is renamed to `target` only when everything succeeded. A broken archive is a
one-line `UserError`, not a traceback and not a half-extracted dataset.
"""
from __future__ import annotations

import lzma
import re
import secrets
import shutil
import stat
import tarfile
import zipfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import IO
from urllib.parse import urlsplit

from common.errors import UserError

ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")
# Files that archivers on macOS/Windows add beside the data; they would show up as bogus items.
JUNK_NAMES = frozenset({"__MACOSX", ".DS_Store", "Thumbs.db"})

_CHUNK_BYTES = 1 << 20
# What the zip/tar readers and their decompressors raise on truncated or damaged data.
_READ_ERRORS = (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error, lzma.LZMAError, OSError)
_ZIP_METHODS = frozenset({zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA})


@dataclass(frozen=True)
class _Member:
    """One archive entry, the same shape for zip and tar so the checks are written once."""

    name: str
    is_dir: bool
    size: int
    problem: str | None  # why it must not be extracted (a link, a device, encrypted), if anything
    open: Callable[[], IO[bytes]]


_Plan = list[tuple[tuple[str, ...], _Member]]  # (safe path components, member) to write, in order


@dataclass(frozen=True)
class _Limits:
    max_total_bytes: int
    max_ratio: float
    max_members: int


def is_archive(path_or_url: str) -> bool:
    """True when the name ends in a suffix `safe_extract` handles (query strings ignored)."""
    path = urlsplit(path_or_url).path if "://" in path_or_url else path_or_url
    return path.lower().endswith(ARCHIVE_SUFFIXES)


def safe_extract(archive: Path, target: Path, *, max_total_bytes: int = 20 * 2**30,
                 max_ratio: float = 200.0, max_members: int = 1_000_000) -> Path:
    """Extract a zip or tar (.tar, .tar.gz/.tgz, .tar.bz2, .tar.xz) into `target`; return the
    dataset root inside it (see `find_dataset_root`).

    The format is detected from the content, not the name. `target` must not exist or be empty.
    Refuses, before writing anything, archives with unsafe members, more than `max_members`
    entries, more than `max_total_bytes` uncompressed, or an uncompressed/compressed size ratio
    above `max_ratio`. Junk such as `__MACOSX/` and `.DS_Store` is skipped.
    """
    archive, target = Path(archive), Path(target)
    limits = _Limits(max_total_bytes, max_ratio, max_members)
    _require_empty(target, archive)
    with _open_members(archive) as members:
        plan = _checked_plan(members, archive, limits)
        _extract_atomically(plan, archive, target)
    return find_dataset_root(target)


def find_dataset_root(folder: Path) -> Path:
    """Descend through lone wrapper folders (zipping a folder puts everything under its name) to
    the folder whose subfolders are the items or the splits. A lone folder holding only files is
    an item itself, so it is not descended into."""
    folder = Path(folder)
    while True:
        children = [c for c in folder.iterdir() if not _is_junk_name(c.name)]
        if len(children) != 1 or not children[0].is_dir() or not _has_subfolder(children[0]):
            return folder
        folder = children[0]


def _has_subfolder(folder: Path) -> bool:
    return any(c.is_dir() and not _is_junk_name(c.name) for c in folder.iterdir())


def _is_junk_name(name: str) -> bool:
    """`._name` files are macOS resource forks that tar copies next to every real file."""
    return name in JUNK_NAMES or name.startswith("._")


def _require_empty(target: Path, archive: Path) -> None:
    """Never merge into existing files: the result would be neither the old nor the new dataset."""
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise UserError(f"{target}: already exists and is not empty; delete it to extract {archive} again")


@contextmanager
def _open_members(archive: Path) -> Iterator[Iterator[_Member]]:
    """Open `archive` as zip or tar, whatever its name says, and yield its members lazily."""
    if not archive.is_file():
        raise UserError(f"{archive}: no such archive; check the path")
    try:
        handle = zipfile.ZipFile(archive) if zipfile.is_zipfile(archive) else tarfile.open(archive, "r:*")
    except _READ_ERRORS as err:
        raise _corrupt(archive, "not a readable zip or tar file") from err
    with handle:
        yield _zip_members(handle) if isinstance(handle, zipfile.ZipFile) else _tar_members(handle)


def _zip_members(zf: zipfile.ZipFile) -> Iterator[_Member]:
    for info in zf.infolist():
        file_type = stat.S_IFMT(info.external_attr >> 16)  # Unix mode bits, 0 when made on Windows
        yield _Member(info.filename, info.is_dir() or file_type == stat.S_IFDIR, info.file_size,
                      _zip_problem(info, file_type), partial(zf.open, info))


def _zip_problem(info: zipfile.ZipInfo, file_type: int) -> str | None:
    if file_type == stat.S_IFLNK:
        return "is a symbolic link"
    if file_type not in (0, stat.S_IFREG, stat.S_IFDIR):
        return "is a device, fifo or socket"
    if info.flag_bits & 0x1:
        return "is encrypted; re-pack the archive without a password"
    if info.compress_type not in _ZIP_METHODS:
        return (f"uses compression method {info.compress_type}, which Python cannot read; "
                "re-pack it as a standard zip")
    return None


def _tar_members(tf: tarfile.TarFile) -> Iterator[_Member]:
    """Iterating (not getmembers) lets a bomb or a bad member stop the scan before the stream ends."""
    for info in tf:
        yield _Member(info.name, info.isdir(), info.size, _tar_problem(info), partial(tf.extractfile, info))


def _tar_problem(info: tarfile.TarInfo) -> str | None:
    if info.issym():
        return f"is a symbolic link (to {info.linkname!r})"
    if info.islnk():
        return f"is a hard link (to {info.linkname!r})"
    if info.isdev():
        return "is a device or fifo"
    if not (info.isreg() or info.isdir()):
        return "has an unsupported member type"
    return None


def _checked_plan(members: Iterable[_Member], archive: Path, limits: _Limits) -> _Plan:
    """Validate every member (path, type, count, sizes) and return what to write, junk left out."""
    plan, total = [], 0
    try:
        for count, member in enumerate(members, start=1):
            if count > limits.max_members:
                raise UserError(f"{archive}: has more than {limits.max_members} members; refusing to "
                                "extract (a real dataset this large should be split into several archives)")
            parts = _safe_parts(member.name, archive)
            if member.problem:
                raise _refuse(archive, member.name, member.problem)
            total += 0 if member.is_dir else member.size
            if total > limits.max_total_bytes:
                raise UserError(f"{archive}: unpacks to more than {limits.max_total_bytes} bytes; refusing "
                                "to extract (zip bomb?); use an archive you trust with less data")
            if parts and not any(_is_junk_name(p) for p in parts):
                plan.append((parts, member))
    except _READ_ERRORS as err:
        raise _corrupt(archive, err) from err
    _check_ratio(total, archive, limits.max_ratio)
    return plan


def _safe_parts(name: str, archive: Path) -> tuple[str, ...]:
    """Path components of a member, refusing anything that could land outside the target.
    Backslashes count as separators, since Windows tools write them and Windows honours them."""
    unified = name.replace("\\", "/")
    if unified.startswith("/") or re.match(r"^[A-Za-z]:", unified):
        raise _refuse(archive, name, "has an absolute path")
    parts = tuple(p for p in unified.split("/") if p not in ("", "."))
    if ".." in parts:
        raise _refuse(archive, name, "climbs out of the target folder with '..'")
    return parts


def _check_ratio(total: int, archive: Path, max_ratio: float) -> None:
    """Images barely compress, so a huge ratio means a bomb, not a dataset."""
    ratio = total / max(archive.stat().st_size, 1)
    if ratio > max_ratio:
        raise UserError(f"{archive}: would unpack to {total} bytes, {ratio:.0f} times its own size (limit "
                        f"{max_ratio:g}); refusing to extract (zip bomb?); use an archive you trust")


def _extract_atomically(plan: _Plan, archive: Path, target: Path) -> None:
    """Write into a hidden sibling and rename it to `target` at the end: any failure, Ctrl-C
    included, leaves no partial dataset that a later run would mistake for a finished one."""
    staging = target.parent / f".{target.name}.extracting-{secrets.token_hex(4)}"
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        staging.mkdir()
        for parts, member in plan:
            _extract_member(member, staging.joinpath(*parts), archive)
        if target.exists():
            target.rmdir()  # empty, checked by _require_empty
        staging.rename(target)
    except OSError as err:  # reads were already turned into UserError; this is the disk side
        raise UserError(f"{target}: cannot extract {archive} here ({err.strerror or err}); check free "
                        "disk space and permissions") from err
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _extract_member(member: _Member, path: Path, archive: Path) -> None:
    """Copy one member, counting the bytes that actually come out: more than the header declared
    means the size checks were fooled, fewer means the archive is cut short."""
    if member.is_dir:
        path.mkdir(parents=True, exist_ok=True)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with _reading(archive, member.name):
        source = member.open()
    written = 0
    with source, open(path, "wb") as out:
        while True:
            with _reading(archive, member.name):
                chunk = source.read(_CHUNK_BYTES)
            if not chunk:
                break
            written += len(chunk)
            if written > member.size:
                raise _refuse(archive, member.name, "holds more data than its header declares")
            out.write(chunk)
    if written != member.size:
        raise _corrupt(archive, f"ends after {written} of {member.size} bytes", member.name)


@contextmanager
def _reading(archive: Path, member: str) -> Iterator[None]:
    try:
        yield
    except _READ_ERRORS as err:
        raise _corrupt(archive, err, member) from err


def _refuse(archive: Path, member: str, why: str) -> UserError:
    return UserError(f"{archive}: member {member!r} {why}; refusing to extract this archive")


def _corrupt(archive: Path, err: BaseException | str, member: str | None = None) -> UserError:
    detail = " ".join(str(err).split())  # library messages may span lines; ours must not
    where = f" (member {member!r}: {detail})" if member else f" ({detail})"
    return UserError(f"{archive}: is corrupt or incomplete{where}; delete it and download again")
