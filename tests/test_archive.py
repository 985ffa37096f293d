"""safe_extract(): hostile or broken archives are refused whole, before anything is written."""
import io
import os
import stat
import struct
import tarfile
import zipfile

import pytest

import data.archive as archive_module
from common.errors import UserError
from data.archive import find_dataset_root, is_archive, safe_extract

DATASET = {
    "shop/item_a/a_0.jpg": os.urandom(3000),
    "shop/item_a/a_1.jpg": os.urandom(3000),
    "shop/item_b/b_0.jpg": os.urandom(3000),
    "shop/.DS_Store": b"junk",
    "__MACOSX/shop/item_a/._a_0.jpg": b"junk",
}


def make_zip(path, files, compression=zipfile.ZIP_DEFLATED):
    with zipfile.ZipFile(path, "w", compression) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return path


def make_tar(path, files, mode="w"):
    """`files` maps names to bytes, or to a ready TarInfo for links/devices."""
    with tarfile.open(path, mode) as tf:
        for name, data in files.items():
            if isinstance(data, tarfile.TarInfo):
                tf.addfile(data)
            else:
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    return path


def assert_nothing_written(tmp_path, target):
    """Neither the target nor a staging folder nor anything outside may be left behind."""
    assert not target.exists()
    assert [p.name for p in tmp_path.iterdir() if p.is_dir()] == []


@pytest.mark.parametrize("name,mode", [("d.zip", None), ("d.tar", "w"), ("d.tar.gz", "w:gz"),
                                       ("d.tgz", "w:gz"), ("d.tar.bz2", "w:bz2"), ("d.tar.xz", "w:xz")])
def test_extracts_dataset_skips_junk_and_returns_the_top_folder(tmp_path, name, mode):
    path = tmp_path / name
    make_zip(path, DATASET) if mode is None else make_tar(path, DATASET, mode)
    root = safe_extract(path, tmp_path / "out")
    assert root == tmp_path / "out" / "shop"
    assert sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) == \
        ["item_a/a_0.jpg", "item_a/a_1.jpg", "item_b/b_0.jpg"]
    assert (root / "item_a" / "a_1.jpg").read_bytes() == DATASET["shop/item_a/a_1.jpg"]
    assert not (tmp_path / "out" / "__MACOSX").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no staging left


def test_format_is_detected_from_content_not_name(tmp_path):
    path = make_tar(tmp_path / "download.zip", {"x/item/1.jpg": b"1", "x/item2/1.jpg": b"2"}, "w:gz")
    assert safe_extract(path, tmp_path / "out") == tmp_path / "out" / "x"


def test_existing_empty_target_is_fine_non_empty_is_refused(tmp_path):
    path = make_zip(tmp_path / "d.zip", DATASET)
    (tmp_path / "empty").mkdir()
    assert safe_extract(path, tmp_path / "empty").name == "shop"
    with pytest.raises(UserError, match="not empty; delete it"):
        safe_extract(path, tmp_path / "empty")


@pytest.mark.parametrize("member,why", [
    ("../evil.txt", "'..'"),
    ("shop/../../evil.txt", "'..'"),
    ("..\\evil.txt", "'..'"),
    ("/tmp/evil.txt", "absolute"),
    ("C:\\evil.txt", "absolute"),
    ("C:evil.txt", "absolute"),
])
def test_zip_members_escaping_the_target_are_refused_before_writing(tmp_path, member, why):
    path = make_zip(tmp_path / "bad.zip", {"shop/item/ok.jpg": b"fine", member: b"evil"})
    target = tmp_path / "out"
    with pytest.raises(UserError, match=why) as err:
        safe_extract(path, target)
    assert str(path) in str(err.value) and repr(member) in str(err.value)
    assert_nothing_written(tmp_path, target)
    assert not (tmp_path.parent / "evil.txt").exists()


@pytest.mark.parametrize("member", ["../evil.txt", "/tmp/evil.txt"])
def test_tar_members_escaping_the_target_are_refused(tmp_path, member):
    path = make_tar(tmp_path / "bad.tar", {"ok/1.jpg": b"fine", member: b"evil"})
    with pytest.raises(UserError, match=r"'\.\.'|absolute"):
        safe_extract(path, tmp_path / "out")
    assert_nothing_written(tmp_path, tmp_path / "out")


def test_zip_symlink_member_is_refused(tmp_path):
    link = zipfile.ZipInfo("shop/item/link.jpg")
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    path = tmp_path / "bad.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("shop/item/ok.jpg", b"fine")
        zf.writestr(link, "/etc/passwd")
    with pytest.raises(UserError, match="'shop/item/link.jpg' is a symbolic link"):
        safe_extract(path, tmp_path / "out")
    assert_nothing_written(tmp_path, tmp_path / "out")


def tar_entry(name, kind, linkname=""):
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, linkname
    return info


@pytest.mark.parametrize("entry,why", [
    (tar_entry("shop/link.jpg", tarfile.SYMTYPE, "/etc/passwd"), "symbolic link"),
    (tar_entry("shop/hard.jpg", tarfile.LNKTYPE, "/etc/passwd"), "hard link"),
    (tar_entry("shop/fifo", tarfile.FIFOTYPE), "device or fifo"),
    (tar_entry("shop/dev", tarfile.CHRTYPE), "device or fifo"),
])
def test_tar_links_and_devices_are_refused(tmp_path, entry, why):
    path = make_tar(tmp_path / "bad.tar.gz", {"shop/item/ok.jpg": b"fine", entry.name: entry}, "w:gz")
    with pytest.raises(UserError, match=why):
        safe_extract(path, tmp_path / "out")
    assert_nothing_written(tmp_path, tmp_path / "out")


def test_zip_bomb_by_ratio_is_refused(tmp_path):
    path = make_zip(tmp_path / "bomb.zip", {"a/zeros.bin": bytes(5_000_000)})
    with pytest.raises(UserError, match="times its own size.*zip bomb"):
        safe_extract(path, tmp_path / "out")
    assert_nothing_written(tmp_path, tmp_path / "out")


def test_zip_bomb_by_total_size_is_refused(tmp_path):
    path = make_zip(tmp_path / "big.zip", {f"a/{i}.bin": os.urandom(600) for i in range(3)},
                    zipfile.ZIP_STORED)
    with pytest.raises(UserError, match="more than 1000 bytes"):
        safe_extract(path, tmp_path / "out", max_total_bytes=1000)


def test_too_many_members_is_refused(tmp_path):
    path = make_tar(tmp_path / "many.tar", {f"a/{i}.jpg": b"x" for i in range(5)})
    with pytest.raises(UserError, match="more than 3 members"):
        safe_extract(path, tmp_path / "out", max_members=3)


def test_lying_header_sizes_cannot_sneak_data_past_the_limits(tmp_path):
    """Patch both size fields of a 1 MB member to 10 bytes: the reader must not produce 1 MB."""
    raw = bytearray(make_zip(tmp_path / "d.zip", {"a/zeros.bin": bytes(1_000_000)}).read_bytes())
    struct.pack_into("<I", raw, 22, 10)  # local header: uncompressed size
    struct.pack_into("<I", raw, raw.index(b"PK\x01\x02") + 24, 10)  # central directory: same
    path = tmp_path / "bad.zip"
    path.write_bytes(bytes(raw))
    with pytest.raises(UserError, match="corrupt or incomplete"):
        safe_extract(path, tmp_path / "out", max_total_bytes=100)
    assert_nothing_written(tmp_path, tmp_path / "out")


def test_member_yielding_more_than_declared_is_refused(tmp_path, monkeypatch):
    """Belt and braces for readers that do not stop at the declared size."""
    path = make_zip(tmp_path / "bad.zip", {"a/small.bin": b"0123456789"})
    monkeypatch.setattr(zipfile.ZipFile, "open", lambda self, info: io.BytesIO(bytes(10_000)))
    with pytest.raises(UserError, match="more data than its header declares"):
        safe_extract(path, tmp_path / "out")
    assert_nothing_written(tmp_path, tmp_path / "out")


@pytest.mark.parametrize("name,mode", [("bad.zip", None), ("bad.tar.gz", "w:gz"), ("bad.tar", "w")])
def test_truncated_archive_is_corrupt_not_a_traceback(tmp_path, name, mode):
    files = {f"shop/item/{i}.jpg": os.urandom(20_000) for i in range(3)}
    path = tmp_path / name
    make_zip(path, files) if mode is None else make_tar(path, files, mode)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(UserError, match="corrupt or incomplete.*; delete it and download again"):
        safe_extract(path, tmp_path / "out")
    assert_nothing_written(tmp_path, tmp_path / "out")


def test_damaged_member_data_is_corrupt_and_leaves_nothing(tmp_path):
    path = make_zip(tmp_path / "bad.zip", {"shop/a/1.jpg": os.urandom(50), "shop/b/1.jpg": b"x" * 50_000})
    raw = bytearray(path.read_bytes())
    second = raw.index(b"shop/b/1.jpg") + len("shop/b/1.jpg")  # data follows the local header
    raw[second + 10: second + 30] = os.urandom(20)
    path.write_bytes(bytes(raw))
    with pytest.raises(UserError, match="corrupt or incomplete"):
        safe_extract(path, tmp_path / "out")
    assert_nothing_written(tmp_path, tmp_path / "out")


def test_not_an_archive_and_missing_archive(tmp_path):
    junk = tmp_path / "page.zip"
    junk.write_bytes(b"<!DOCTYPE html><html></html>" * 100)
    with pytest.raises(UserError, match="corrupt or incomplete"):
        safe_extract(junk, tmp_path / "out")
    with pytest.raises(UserError, match="no such archive"):
        safe_extract(tmp_path / "nope.zip", tmp_path / "out")


def test_write_failure_cleans_up_staging(tmp_path, monkeypatch):
    def full_disk(path, mode="r"):
        raise OSError(28, "No space left on device")

    path = make_zip(tmp_path / "d.zip", DATASET)
    monkeypatch.setattr(archive_module, "open", full_disk, raising=False)
    with pytest.raises(UserError, match="No space left on device"):
        safe_extract(path, tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.zip"]


def test_find_dataset_root(tmp_path):
    (tmp_path / "a" / "wrap" / "shop" / "item1").mkdir(parents=True)
    (tmp_path / "a" / "wrap" / "shop" / "item2").mkdir()
    (tmp_path / "a" / ".DS_Store").write_bytes(b"")
    assert find_dataset_root(tmp_path / "a") == tmp_path / "a" / "wrap" / "shop"
    (tmp_path / "b" / "split" / "train" / "item").mkdir(parents=True)
    (tmp_path / "b" / "split" / "val" / "item").mkdir(parents=True)
    assert find_dataset_root(tmp_path / "b") == tmp_path / "b" / "split"
    (tmp_path / "c" / "only_item").mkdir(parents=True)
    (tmp_path / "c" / "only_item" / "1.jpg").write_bytes(b"")
    assert find_dataset_root(tmp_path / "c") == tmp_path / "c"


@pytest.mark.parametrize("name,expected", [
    ("data.zip", True), ("https://x.org/a/Data.TAR.GZ?dl=1", True), ("a.tgz", True), ("a.tar.bz2", True),
    ("a.tar.xz", True), ("a.tar", True), ("folder", False), ("https://drive.google.com/uc?id=1&x=.zip", False),
    ("notes.gz", False),
])
def test_is_archive(name, expected):
    assert is_archive(name) is expected
