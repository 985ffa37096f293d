"""download(): resumable, verified, and a one-line UserError for every way a download goes wrong."""
import errno
import hashlib
import os
import time

import pytest

import data.download as download_module
from common.errors import UserError
from data.download import download, sha256_of
from tests.http_server import Route, closed_port_url

BODY = os.urandom(300_000)
FAST = {"backoff": 0.0, "progress": False}  # no waiting between retries in tests


def part_of(dest):
    return dest.with_name(dest.name + ".part")


def test_plain_download_verifies_checksum_and_leaves_no_part(http_server, tmp_path):
    server = http_server({"/data.zip": BODY})
    dest = tmp_path / "sub" / "data.zip"
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
    assert "Range" in server.requests_for("/data.zip")[1].headers


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
    assert not dest.exists() and not part_of(dest).exists()


@pytest.mark.parametrize("route", [Route.html(), Route.html(content_type="application/octet-stream")],
                         ids=["content-type", "sniffed"])
def test_html_page_is_reported_as_not_a_direct_download(http_server, tmp_path, route):
    server = http_server({"/uc": route})
    dest = tmp_path / "data.zip"
    with pytest.raises(UserError, match="served an HTML page, not an archive.*Google Drive") as err:
        download(server.url("/uc"), dest, **FAST)
    assert server.url("/uc") in str(err.value)
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
    with pytest.raises(UserError, match=r"server error 500.*3 attempt") as err:
        download(server.url("/data.zip"), tmp_path / "data.zip", retries=2, **FAST)
    assert server.url("/data.zip") in str(err.value) and len(server.requests) == 3


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
    with pytest.raises(UserError, match="resumed next time") as err:
        download(server.url("/data.zip"), dest, retries=1, **FAST)
    assert server.url("/data.zip") in str(err.value)
    assert not dest.exists() and 0 < part_of(dest).stat().st_size < len(BODY)


@pytest.mark.parametrize("midway", [False, True], ids=["before-headers", "mid-body"])
def test_stalled_server_times_out_quickly_naming_the_url(http_server, tmp_path, midway):
    server = http_server({"/data.zip": Route(body=BODY, stall=5.0, stall_midway=midway)})
    started = time.monotonic()
    with pytest.raises(UserError, match=r"no answer within 0.2 s") as err:
        download(server.url("/data.zip"), tmp_path / "data.zip", timeout=0.2, retries=1, **FAST)
    assert server.url("/data.zip") in str(err.value)
    assert time.monotonic() - started < 3


def test_offline_names_the_url(tmp_path):
    url = closed_port_url()
    with pytest.raises(UserError, match="cannot connect.*offline") as err:
        download(url, tmp_path / "data.zip", retries=1, **FAST)
    assert url in str(err.value)


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
    with pytest.raises(UserError, match="No space left on device") as err:
        download(server.url("/data.zip"), dest, **FAST)
    assert str(part_of(dest)) in str(err.value)
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
