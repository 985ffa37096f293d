"""download(): resumable, verified, and a one-line UserError for every way a download goes wrong."""
import errno
import hashlib
import io
import os
import sys
import time
from http import HTTPStatus

import pytest

import data.download as download_module
from common.errors import UserError
from data.download import download, sha256_of
from tests.http_server import HTML_PAGE, Route, closed_port_url

BODY = os.urandom(300_000)
FAST = {"backoff": 0.0, "progress": False}  # no waiting between retries in tests


def part_of(dest):
    return dest.with_name(dest.name + ".part")


def test_plain_download_verifies_checksum_and_leaves_no_part(http_server, tmp_path):
    server = http_server({"/data.zip": BODY})
    dest = tmp_path / "new" / "sub" / "data.zip"  # folders that do not exist yet are made
    got = download(server.url("/data.zip"), dest, sha256=hashlib.sha256(BODY).hexdigest(), **FAST)
    assert got == dest and dest.read_bytes() == BODY
    assert not part_of(dest).exists()
    assert sha256_of(dest) == hashlib.sha256(BODY).hexdigest()


def test_dropped_connection_is_resumed_with_a_range_request(http_server, tmp_path):
    server = http_server({"/data.zip": Route(body=BODY, drop_first=1)})
    dest = download(server.url("/data.zip"), tmp_path / "data.zip", **FAST)
    assert dest.read_bytes() == BODY
    first, second = server.requests_for("/data.zip")
    assert "Range" not in first.headers
    resumed_at = int(second.headers["Range"].removeprefix("bytes=").removesuffix("-"))
    assert 0 < resumed_at <= len(BODY) // 2  # from what reached the disk, not from zero


def test_server_ignoring_range_restarts_from_zero(http_server, tmp_path):
    server = http_server({"/data.zip": Route(body=BODY, drop_first=1, ranges=False)})
    dest = download(server.url("/data.zip"), tmp_path / "data.zip", **FAST)
    assert dest.read_bytes() == BODY  # the 200 answer replaced the partial bytes, not appended
    first, second = server.requests_for("/data.zip")  # the 200 is used, not refused and fetched again
    assert "Range" in second.headers


def test_part_file_from_an_earlier_run_is_resumed(http_server, tmp_path):
    server = http_server({"/data.zip": BODY})
    dest = tmp_path / "data.zip"
    part_of(dest).write_bytes(BODY[:1000])
    download(server.url("/data.zip"), dest, **FAST)
    assert dest.read_bytes() == BODY
    assert [r.headers.get("Range") for r in server.requests] == ["bytes=1000-"]


def test_complete_part_file_answered_416_is_finished_without_refetching(http_server, tmp_path):
    server = http_server({"/data.zip": BODY})
    dest = tmp_path / "data.zip"
    part_of(dest).write_bytes(BODY)
    download(server.url("/data.zip"), dest, **FAST)
    assert dest.read_bytes() == BODY and len(server.requests) == 1


def test_resume_answered_from_the_wrong_offset_is_refetched_whole(http_server, tmp_path):
    server = http_server({"/data.zip": Route(body=BODY, misresume=400)})
    dest = tmp_path / "data.zip"
    part_of(dest).write_bytes(BODY[:1000])
    download(server.url("/data.zip"), dest, **FAST)
    assert dest.read_bytes() == BODY  # not the 1000 bytes followed by the body from byte 600
    assert [r.headers.get("Range") for r in server.requests] == ["bytes=1000-", None]


@pytest.mark.parametrize("stale_size", [len(BODY) + 10, len(BODY) * 2])
def test_stale_part_larger_than_the_file_is_replaced_not_renamed_into_place(http_server, tmp_path,
                                                                            stale_size):
    server = http_server({"/data.zip": BODY})
    dest = tmp_path / "data.zip"
    part_of(dest).write_bytes(b"x" * stale_size)  # left by an earlier, bigger version of the file
    download(server.url("/data.zip"), dest, **FAST)
    assert dest.read_bytes() == BODY and not part_of(dest).exists()
    assert [r.headers.get("Range") for r in server.requests] == [f"bytes={stale_size}-", None]


def test_checksum_mismatch_names_file_and_both_hashes_and_deletes_it(http_server, tmp_path):
    server = http_server({"/data.zip": BODY})
    dest = tmp_path / "data.zip"
    with pytest.raises(UserError) as err:
        download(server.url("/data.zip"), dest, sha256="ab" * 32, **FAST)
    message = str(err.value)
    assert str(dest) in message and "ab" * 32 in message and hashlib.sha256(BODY).hexdigest() in message
    assert "so it was deleted: run again, or fix the expected checksum" in message
    assert not dest.exists() and not part_of(dest).exists()


@pytest.mark.parametrize("route", [Route.html(), Route.html(content_type="application/octet-stream")],
                         ids=["content-type", "sniffed"])
def test_html_page_is_reported_as_not_a_direct_download(http_server, tmp_path, route):
    server = http_server({"/uc": route})
    dest = tmp_path / "data.zip"
    with pytest.raises(UserError) as err:
        download(server.url("/uc"), dest, **FAST)
    assert str(err.value) == (
        f"{server.url('/uc')}: served an HTML page, not an archive; is the link a direct download? "
        "(Google Drive answers large files with an HTML confirmation page: open the link in a browser, "
        "save the file and pass its local path instead)")
    assert not dest.exists() and not part_of(dest).exists()


def test_html_is_fine_when_no_archive_is_expected(http_server, tmp_path):
    server = http_server({"/page.html": Route.html()})
    dest = download(server.url("/page.html"), tmp_path / "page.html", expect_archive=False, **FAST)
    assert dest.read_bytes().startswith(b"<!DOCTYPE html>")


def test_404_fails_at_once_naming_the_url(http_server, tmp_path):
    server = http_server({})
    url = server.url("/missing.zip")
    with pytest.raises(UserError, match="404") as err:
        download(url, tmp_path / "x.zip", retries=3, **FAST)
    assert url in str(err.value) and len(server.requests) == 1


def test_500_is_retried_then_reported(http_server, tmp_path):
    server = http_server({"/data.zip": Route(body=BODY, status=500)})
    with pytest.raises(UserError) as err:
        download(server.url("/data.zip"), tmp_path / "data.zip", retries=2, **FAST)
    assert str(err.value) == (f"{server.url('/data.zip')}: server error 500 Internal Server Error, "
                              "3 attempt(s); try again later")  # nothing on disk to resume
    assert len(server.requests) == 3


def test_transient_500_recovers(http_server, tmp_path):
    server = http_server({"/data.zip": Route(body=BODY, fail_first=2)})
    assert download(server.url("/data.zip"), tmp_path / "d.zip", retries=2, **FAST).read_bytes() == BODY


def test_backoff_doubles_between_retries(http_server, tmp_path, monkeypatch):
    sleeps = []
    monkeypatch.setattr(download_module.time, "sleep", sleeps.append)
    server = http_server({"/data.zip": Route(status=503)})
    with pytest.raises(UserError):
        download(server.url("/data.zip"), tmp_path / "d.zip", retries=3, backoff=0.5, progress=False)
    assert sleeps == [0.5, 1.0, 2.0]


def test_connection_dropping_every_time_keeps_the_part_for_next_run(http_server, tmp_path):
    server = http_server({"/data.zip": Route(body=BODY, drop_first=10)})
    dest = tmp_path / "data.zip"
    with pytest.raises(UserError) as err:
        download(server.url("/data.zip"), dest, retries=1, **FAST)
    assert not dest.exists() and 0 < part_of(dest).stat().st_size < len(BODY)
    assert str(err.value) == (f"{server.url('/data.zip')}: the connection kept dropping, 2 attempt(s); "
                              f"try again later (the {part_of(dest).stat().st_size} bytes in "
                              f"{part_of(dest)} are resumed next time)")


@pytest.mark.parametrize("midway", [False, True], ids=["before-headers", "mid-body"])
def test_stalled_server_times_out_quickly_naming_the_url(http_server, tmp_path, midway):
    server = http_server({"/data.zip": Route(body=BODY, stall=5.0, stall_midway=midway)})
    started = time.monotonic()
    with pytest.raises(UserError) as err:
        download(server.url("/data.zip"), tmp_path / "data.zip", timeout=0.2, retries=1, **FAST)
    assert str(err.value).startswith(f"{server.url('/data.zip')}: no answer within 0.2 s, 2 attempt(s); "
                                     "check your network connection, or try again later")
    assert time.monotonic() - started < 3


def test_offline_names_the_url(tmp_path):
    url = closed_port_url()
    with pytest.raises(UserError) as err:
        download(url, tmp_path / "data.zip", retries=1, **FAST)
    assert str(err.value) == (f"{url}: cannot connect (Connection refused), 2 attempt(s); "
                              "check the address and your network connection (offline?)")


def test_disk_full_removes_the_part_and_says_why(http_server, tmp_path, monkeypatch):
    class FullDisk:
        """A file whose writes fail once 100 kB are in, like a filling disk."""

        def __init__(self, path, mode):
            self.file, self.written = open(path, mode), 0

        def write(self, chunk):
            self.written += len(chunk)
            if self.written > 100_000:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return self.file.write(chunk)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.file.close()

    monkeypatch.setattr(download_module, "open", FullDisk, raising=False)
    server = http_server({"/data.zip": BODY})
    dest = tmp_path / "data.zip"
    with pytest.raises(UserError) as err:
        download(server.url("/data.zip"), dest, **FAST)
    assert str(err.value) == (f"{part_of(dest)}: writing the download failed (No space left on device); "
                              "free some disk space or choose another --dataset_dir, then run again")
    assert not dest.exists() and not part_of(dest).exists()
    assert len(server.requests) == 1  # a full disk is not retried


def test_file_url_and_local_path_are_copied_and_verified(tmp_path):
    source = tmp_path / "src" / "data.zip"
    source.parent.mkdir()
    source.write_bytes(BODY)
    digest = hashlib.sha256(BODY).hexdigest()
    by_url = download(source.as_uri(), tmp_path / "a.zip", sha256=digest, **FAST)
    by_path = download(str(source), tmp_path / "b.zip", sha256=digest, **FAST)
    assert by_url.read_bytes() == by_path.read_bytes() == BODY and source.exists()


def test_missing_local_file_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="no such file"):
        download((tmp_path / "nope.zip").as_uri(), tmp_path / "dest.zip", **FAST)


def test_defaults_retry_three_times_with_doubling_waits_and_a_30_s_timeout(http_server, tmp_path,
                                                                           monkeypatch):
    sleeps, timeouts = [], []
    monkeypatch.setattr(download_module.time, "sleep", sleeps.append)
    get = download_module.requests.Session.get

    def recording_get(self, url, **kwargs):
        timeouts.append(kwargs["timeout"])
        return get(self, url, **kwargs)

    monkeypatch.setattr(download_module.requests.Session, "get", recording_get)
    server = http_server({"/data.zip": Route(status=503)})
    with pytest.raises(UserError, match="4 attempt"):
        download(server.url("/data.zip"), tmp_path / "d.zip", progress=False)
    assert sleeps == [1.0, 2.0, 4.0] and timeouts == [30] * 4


class Terminal(io.StringIO):
    """stderr as an interactive terminal, where tqdm shows its bar."""

    def isatty(self):
        return True


SMALL = os.urandom(10_000)  # 9.77 KiB: the bar counts in KiB, not kB or bytes


@pytest.mark.parametrize("case,first_render", [
    ("fresh", "0.00/9.77k"),
    ("resumed", "4.88k/9.77k"),  # starts at the 5000 bytes already on disk
    ("stale part", "0.00/9.77k"),  # a .part larger than the file is dropped and fetched again
    ("local file", "0.00/9.77k"),
])
def test_progress_bar_on_a_terminal_names_the_file_and_counts_kib(http_server, tmp_path, monkeypatch,
                                                                  case, first_render):
    monkeypatch.setattr(sys, "stderr", Terminal())
    server = http_server({"/data.zip": SMALL})
    dest = tmp_path / "data.zip"
    if case in ("resumed", "stale part"):
        part_of(dest).write_bytes(SMALL[:5000] if case == "resumed" else bytes(20_000))
    source = tmp_path / "source.zip"
    source.write_bytes(SMALL)
    download(str(source) if case == "local file" else server.url("/data.zip"), dest, backoff=0)
    shown = sys.stderr.getvalue()
    assert dest.read_bytes() == SMALL
    assert shown.startswith("\rdata.zip: ") and f"| {first_render} [" in shown and "B/s]" in shown
    assert shown.endswith("\r") and shown.rsplit("\r", 2)[-2].strip() == ""  # wiped at the end


def test_no_progress_bar_when_asked_even_on_a_terminal(http_server, tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "stderr", Terminal())
    server = http_server({"/data.zip": SMALL})
    download(server.url("/data.zip"), tmp_path / "data.zip", progress=False, backoff=0)
    assert sys.stderr.getvalue() == ""


@pytest.mark.parametrize("code,hint", [
    (400, "check the URL"),
    (401, "the link needs a login; use a public direct-download link"),
    (403, "the link needs a login or has expired; use a public direct-download link"),
    (410, "the file was removed; check the URL"),
    (429, "the server is rate-limiting downloads; try again later"),
])
def test_4xx_answers_fail_at_once_with_what_to_do(http_server, tmp_path, code, hint):
    server = http_server({"/data.zip": Route(body=BODY, status=code)})
    url = server.url("/data.zip")
    with pytest.raises(UserError) as err:
        download(url, tmp_path / "data.zip", **FAST)
    reason = HTTPStatus(code).phrase
    assert str(err.value) == f"{url}: the server answered {code} {reason}; {hint}"
    assert len(server.requests) == 1 and not part_of(tmp_path / "data.zip").exists()


def test_malformed_url_is_a_user_error_naming_it(tmp_path):
    with pytest.raises(UserError) as err:
        download("http://", tmp_path / "data.zip", **FAST)
    assert str(err.value).startswith("http://: cannot download (") and str(err.value).endswith("; check the URL")


def test_scheme_in_capitals_is_still_downloaded(http_server, tmp_path):
    server = http_server({"/data.zip": BODY})
    url = server.url("/data.zip").replace("http://", "HTTP://")
    assert download(url, tmp_path / "data.zip", **FAST).read_bytes() == BODY


def test_destination_that_is_a_folder_is_reported_not_overwritten(http_server, tmp_path):
    server = http_server({"/data.zip": BODY})
    dest = tmp_path / "data.zip"
    (dest / "kept").mkdir(parents=True)
    with pytest.raises(UserError) as err:
        download(server.url("/data.zip"), dest, **FAST)
    assert str(err.value).startswith(f"{dest}: cannot move the finished download into place (")
    assert str(err.value).endswith("); check permissions of its folder") and "Errno" not in str(err.value)
    assert (dest / "kept").is_dir()


def test_download_folder_that_cannot_be_made_is_a_user_error(tmp_path):
    (tmp_path / "taken").write_bytes(b"a file where the folder should go")
    dest = tmp_path / "taken" / "data.zip"
    with pytest.raises(UserError) as err:
        download(str(tmp_path / "source.zip"), dest, **FAST)
    assert str(err.value) == (f"{dest.parent}: cannot create the download folder (File exists); "
                              "choose another --dataset_dir")


def test_part_file_that_cannot_be_created_is_a_user_error(http_server, tmp_path, monkeypatch):
    def read_only(path, mode):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))

    monkeypatch.setattr(download_module, "open", read_only, raising=False)
    server = http_server({"/data.zip": BODY})
    dest = tmp_path / "data.zip"
    with pytest.raises(UserError, match=r"writing the download failed \(Permission denied\); free some"):
        download(server.url("/data.zip"), dest, **FAST)
    assert not part_of(dest).exists()


def test_download_asks_for_the_file_itself_not_a_compressed_copy(http_server, tmp_path):
    """Byte counts and Range offsets must refer to the file, so no gzip transfer encoding."""
    server = http_server({"/data.zip": BODY})
    download(server.url("/data.zip"), tmp_path / "data.zip", **FAST)
    headers = {name.lower(): value for name, value in server.requests[0].headers.items()}
    assert headers["accept-encoding"].lower() == "identity"


def test_stale_part_then_html_page_is_still_refused(http_server, tmp_path):
    server = http_server({"/data.zip": Route.html()})
    dest = tmp_path / "data.zip"
    part_of(dest).write_bytes(bytes(len(HTML_PAGE) + 100))
    with pytest.raises(UserError, match="served an HTML page"):
        download(server.url("/data.zip"), dest, **FAST)
    assert len(server.requests) == 2


def test_stale_part_then_stalled_server_still_times_out(http_server, tmp_path):
    server = http_server({"/data.zip": Route(body=BODY, stall=5.0, stall_skip=1)})
    dest = tmp_path / "data.zip"
    part_of(dest).write_bytes(bytes(len(BODY) + 100))
    started = time.monotonic()
    with pytest.raises(UserError, match="no answer within 0.2 s"):
        download(server.url("/data.zip"), dest, timeout=0.2, retries=0, **FAST)
    assert time.monotonic() - started < 3


@pytest.mark.parametrize("content_type", ["text/html; charset=utf-8", "TEXT/HTML", "application/xhtml+xml",
                                          "text/html; charset=utf-8; x=1"])
def test_html_labelled_by_content_type_is_refused_whatever_it_starts_with(http_server, tmp_path, content_type):
    server = http_server({"/uc": Route.html(body=b"<head><title>Sign in</title></head>", content_type=content_type)})
    with pytest.raises(UserError, match="served an HTML page"):
        download(server.url("/uc"), tmp_path / "data.zip", **FAST)


@pytest.mark.parametrize("body", [b"\xef\xbb\xbf<!DOCTYPE html><html></html>", b"\r\n  <!doctype html>",
                                  b"<HTML><body>Sign in</body></HTML>"], ids=["bom", "blank-lines", "no-doctype"])
def test_html_sniffed_from_an_octet_stream_is_refused(http_server, tmp_path, body):
    server = http_server({"/uc": Route.html(body=body, content_type="application/octet-stream")})
    with pytest.raises(UserError, match="served an HTML page"):
        download(server.url("/uc"), tmp_path / "data.zip", **FAST)


@pytest.mark.parametrize("route", [Route(body=BODY, content_type=None), Route(body=BODY, length=False)],
                         ids=["no-content-type", "no-content-length"])
def test_servers_leaving_out_headers_still_work(http_server, tmp_path, route):
    server = http_server({"/data.zip": route})
    assert download(server.url("/data.zip"), tmp_path / "data.zip", **FAST).read_bytes() == BODY


@pytest.mark.parametrize("part_bytes", [1000, len(BODY) + 10], ids=["resume", "stale"])
def test_range_answers_without_content_range_fetch_the_file_whole(http_server, tmp_path, part_bytes):
    server = http_server({"/data.zip": Route(body=BODY, content_range=False)})
    dest = tmp_path / "data.zip"
    part_of(dest).write_bytes(bytes(part_bytes))
    assert download(server.url("/data.zip"), dest, **FAST).read_bytes() == BODY
    assert [r.headers.get("Range") for r in server.requests] == [f"bytes={part_bytes}-", None]


def test_empty_file_is_downloaded_and_copied_as_empty(http_server, tmp_path):
    server = http_server({"/empty.zip": b""})
    (tmp_path / "src.zip").write_bytes(b"")
    assert download(server.url("/empty.zip"), tmp_path / "a.zip", **FAST).read_bytes() == b""
    assert download(str(tmp_path / "src.zip"), tmp_path / "b.zip", **FAST).read_bytes() == b""


def test_local_html_file_is_refused_naming_it(tmp_path):
    page = tmp_path / "saved.zip"
    page.write_bytes(HTML_PAGE)
    with pytest.raises(UserError) as err:
        download(str(page), tmp_path / "data.zip", **FAST)
    assert str(err.value) == (f"{page}: is an HTML page, not an archive; was it saved from a download "
                              "page instead of the file itself?")
    assert not (tmp_path / "data.zip").exists() and not part_of(tmp_path / "data.zip").exists()


def test_resume_from_the_wrong_offset_with_no_retry_left_says_so(http_server, tmp_path):
    server = http_server({"/data.zip": Route(body=BODY, misresume=400)})
    dest = tmp_path / "data.zip"
    part_of(dest).write_bytes(BODY[:1000])
    with pytest.raises(UserError) as err:
        download(server.url("/data.zip"), dest, retries=0, **FAST)
    assert str(err.value) == (f"{server.url('/data.zip')}: the server resumed at the wrong offset, "
                              "1 attempt(s); try again later")


def test_server_hanging_up_without_an_answer_is_retried_and_reported(http_server, tmp_path):
    server = http_server({"/data.zip": Route(hang_up=True)})
    with pytest.raises(UserError) as err:
        download(server.url("/data.zip"), tmp_path / "data.zip", retries=1, **FAST)
    assert str(err.value).startswith(f"{server.url('/data.zip')}: cannot connect (ConnectionError), 2 attempt(s)")
    assert len(server.requests) == 2
