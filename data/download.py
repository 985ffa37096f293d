"""Fetch one file to disk so that a failure never leaves a broken file under the real name.

Datasets are large and links are flaky, so `download` writes to `<dest>.part`, resumes that file
with an HTTP Range request after a dropped connection (in the same call, or on a later run), and
renames it to `dest` only once it is complete and, when a sha256 is given, verified. Every failure
is a one-line `UserError` naming the URL or file and what to do about it.

`file://` URLs and plain local paths are copied the same way (not just returned), so callers can
always rely on `dest` existing afterwards and on the original staying untouched.
"""
from __future__ import annotations

import os
import re
import time
from collections.abc import Iterable
from itertools import chain
from pathlib import Path
from urllib.parse import urlsplit
from urllib.request import url2pathname

import requests
import urllib3
from tqdm import tqdm

from common.digest import file_hexdigest
from common.errors import UserError

CHUNK_BYTES = 1 << 16

# Failures worth another try: the next attempt resumes from the bytes already on disk.
_NETWORK_ERRORS = (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError)

_STATUS_HINTS = {
    401: "the link needs a login; use a public direct-download link",
    403: "the link needs a login or has expired; use a public direct-download link",
    404: "check the URL",
    410: "the file was removed; check the URL",
    429: "the server is rate-limiting downloads; try again later",
}


class _Transient(Exception):
    """A server-side failure (5xx, body cut short) that a retry may fix; str() says what happened."""


def download(url: str, dest: Path, *, sha256: str | None = None, timeout: float = 30, retries: int = 3,
             backoff: float = 1.0, expect_archive: bool = True, progress: bool = True) -> Path:
    """Fetch `url` (http(s)://, file:// or a local path) into `dest` and return `dest`.

    `retries` is the number of extra attempts after the first for connection errors, timeouts,
    dropped connections and 5xx answers, waiting `backoff * 2**n` seconds before retry n; 4xx
    answers are not retried. `timeout` bounds the connect and each read, in seconds.
    `expect_archive` refuses HTML pages (a login or confirmation page instead of the file).
    An existing `dest` is replaced; an existing `<dest>.part` is resumed.
    """
    dest = Path(dest)
    part = dest.with_name(dest.name + ".part")
    _make_parent(dest)
    if re.match(r"^https?://", url, flags=re.I):
        _fetch_with_retries(url, part, timeout=timeout, retries=retries, backoff=backoff,
                            expect_archive=expect_archive, progress=progress)
    else:
        _copy_local(url, part, expect_archive=expect_archive, progress=progress)
    _verify_sha256(part, dest, sha256)
    try:
        os.replace(part, dest)
    except OSError as err:
        raise UserError(f"{dest}: cannot move the finished download into place ({_why(err)}); "
                        "check permissions of its folder") from err
    return dest


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file (read in chunks: multi-GB archives do not fill memory)."""
    return file_hexdigest(path, "sha256")


def _make_parent(dest: Path) -> None:
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"{dest.parent}: cannot create the download folder ({_why(err)}); "
                        "choose another --dataset_dir") from err


def _fetch_with_retries(url: str, part: Path, *, timeout: float, retries: int, backoff: float,
                        expect_archive: bool, progress: bool) -> None:
    """Attempt the download up to 1 + retries times; each attempt resumes what is on disk."""
    last: Exception | None = None
    with requests.Session() as session:
        for attempt in range(retries + 1):
            if attempt:
                time.sleep(backoff * 2 ** (attempt - 1))
            try:
                _fetch_once(session, url, part, timeout, expect_archive, progress)
                return
            except (*_NETWORK_ERRORS, _Transient) as err:
                last = err
            except requests.RequestException as err:  # bad URL, redirect loop: retrying cannot help
                raise UserError(f"{url}: cannot download ({err}); check the URL") from err
    raise UserError(_give_up_message(url, part, last, retries + 1, timeout))


def _fetch_once(session: requests.Session, url: str, part: Path, timeout: float,
                expect_archive: bool, progress: bool) -> None:
    """One GET, continuing `part` with a Range request when it already holds bytes."""
    offset = part.stat().st_size if part.exists() else 0
    # identity: the byte counts and Range offsets must refer to the file itself, not a gzip of it
    headers = {"Accept-Encoding": "identity", **({"Range": f"bytes={offset}-"} if offset else {})}
    with session.get(url, headers=headers, stream=True, timeout=timeout) as resp:
        if resp.status_code == 416 and offset:
            if _range_total(resp) == offset:
                return  # an earlier run got every byte but stopped before the rename
            part.unlink()
            return _fetch_once(session, url, part, timeout, expect_archive, progress)
        _check_status(resp, url)
        if expect_archive and _is_html_type(resp.headers.get("Content-Type", "")):
            raise UserError(_html_message(url))
        start = offset if resp.status_code == 206 else 0  # 200 to a Range request: start over
        if start and _range_start(resp) != offset:
            part.unlink()
            raise _Transient("the server resumed at the wrong offset")
        expected = _expected_size(resp, start)
        chunks = resp.iter_content(CHUNK_BYTES)
        first = next(chunks, b"")
        if start == 0 and expect_archive and _looks_like_html(first):
            raise UserError(_html_message(url))
        with _progress_bar(part, expected, start, progress) as bar:
            _write_chunks(chain([first], chunks), part, "ab" if start else "wb", bar)
    if expected is not None and part.stat().st_size < expected:
        raise _Transient("the connection closed before the end of the file")


def _check_status(resp: requests.Response, url: str) -> None:
    """5xx may pass, so it is retried; 4xx will not, so it fails at once with a hint."""
    code = resp.status_code
    if code >= 500:
        raise _Transient(f"server error {code} {resp.reason}")
    if code >= 400:
        hint = _STATUS_HINTS.get(code, "check the URL")
        raise UserError(f"{url}: the server answered {code} {resp.reason}; {hint}")


def _range_total(resp: requests.Response) -> int | None:
    """File size from a `Content-Range: bytes */N` (416) or `bytes a-b/N` (206) header."""
    match = re.search(r"/(\d+)\s*$", resp.headers.get("Content-Range", ""))
    return int(match.group(1)) if match else None


def _range_start(resp: requests.Response) -> int | None:
    match = re.match(r"\s*bytes\s+(\d+)-", resp.headers.get("Content-Range", ""))
    return int(match.group(1)) if match else None


def _expected_size(resp: requests.Response, start: int) -> int | None:
    """Full file size when the server says it, so a short body is caught even without an error."""
    length = resp.headers.get("Content-Length", "")
    return start + int(length) if length.isdigit() else None


def _is_html_type(content_type: str) -> bool:
    return content_type.split(";", 1)[0].strip().lower() in ("text/html", "application/xhtml+xml")


def _looks_like_html(first_bytes: bytes) -> bool:
    """Some servers label their error/confirmation pages application/octet-stream; sniff too."""
    head = first_bytes[:512].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    return head.startswith((b"<!doctype html", b"<html"))


def _html_message(url: str) -> str:
    return (f"{url}: served an HTML page, not an archive; is the link a direct download? "
            "(Google Drive answers large files with an HTML confirmation page: open the link in a "
            "browser, save the file and pass its local path instead)")


def _progress_bar(part: Path, total: int | None, initial: int, progress: bool) -> tqdm:
    """disable=None lets tqdm hide the bar when stderr is not a terminal (logs, CI)."""
    return tqdm(total=total, initial=initial, unit="B", unit_scale=True, unit_divisor=1024,
                desc=part.name.removesuffix(".part"), disable=None if progress else True, leave=False)


def _write_chunks(chunks: Iterable[bytes], part: Path, mode: str, bar: tqdm) -> None:
    """Write `chunks` to `part`. Network errors keep the bytes so far, for the next attempt to
    resume; a failed write (disk full, no permission) deletes the partial file, since retrying
    cannot fix it and a half-written file must not linger."""
    try:
        with open(part, mode) as fh:
            for chunk in chunks:
                fh.write(chunk)
                bar.update(len(chunk))
    except requests.RequestException:  # an OSError subclass, but a network problem
        raise
    except OSError as err:
        part.unlink(missing_ok=True)
        raise UserError(f"{part}: writing the download failed ({_why(err)}); free some disk space "
                        "or choose another --dataset_dir, then run again") from err


def _copy_local(source: str, part: Path, *, expect_archive: bool, progress: bool) -> None:
    """Copy a file:// URL or local path through the same .part/verify/rename path as a download."""
    path = _local_path(source)
    if not path.is_file():
        raise UserError(f"{source}: no such file; check the path")
    with open(path, "rb") as src:
        chunks = iter(lambda: src.read(CHUNK_BYTES), b"")
        first = next(chunks, b"")
        if expect_archive and _looks_like_html(first):
            raise UserError(f"{path}: is an HTML page, not an archive; was it saved from a download "
                            "page instead of the file itself?")
        with _progress_bar(part, path.stat().st_size, 0, progress) as bar:
            _write_chunks(chain([first], chunks), part, "wb", bar)


def _local_path(source: str) -> Path:
    if source.lower().startswith("file://"):
        return Path(url2pathname(urlsplit(source).path))
    return Path(source).expanduser()


def _verify_sha256(part: Path, dest: Path, expected: str | None) -> None:
    """A mismatching file is deleted: keeping it would make the next run trust a corrupt file."""
    if expected is None:
        return
    got = sha256_of(part)
    if got != expected.strip().lower():
        part.unlink()
        raise UserError(f"{dest}: sha256 mismatch, expected {expected.strip().lower()} but got {got}; "
                        "the download was corrupt or the file changed upstream, so it was deleted: "
                        "run again, or fix the expected checksum")


def _give_up_message(url: str, part: Path, err: Exception | None, attempts: int, timeout: float) -> str:
    """One line that says what kept failing and whether a re-run will resume."""
    resume = f" (the {part.stat().st_size} bytes in {part} are resumed next time)" \
        if part.exists() and part.stat().st_size else ""
    if _is_timeout(err):
        what = f"no answer within {timeout:g} s"
        fix = "check your network connection, or try again later"
    elif isinstance(err, _Transient):
        what, fix = str(err), "try again later"
    elif isinstance(err, requests.exceptions.ChunkedEncodingError):
        what, fix = "the connection kept dropping", "try again later"
    else:
        what = f"cannot connect ({_connection_reason(err)})"
        fix = "check the address and your network connection (offline?)"
    return f"{url}: {what}, {attempts} attempt(s); {fix}{resume}"


def _is_timeout(err: Exception | None) -> bool:
    """requests reports a read timeout in the middle of a body as a ConnectionError; look inside."""
    return isinstance(err, requests.Timeout) or (
        err is not None and any(isinstance(a, urllib3.exceptions.TimeoutError) for a in err.args))


def _connection_reason(err: Exception | None) -> str:
    """The OS's words ('Connection refused', 'Name or service not known'), not urllib3's essay."""
    match = re.search(r"\[Errno -?\d+\] ([^'\")\]]+)", str(err))
    return match.group(1).strip() if match else type(err).__name__


def _why(err: OSError) -> str:
    return err.strerror or str(err)
