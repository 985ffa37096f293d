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
    "shop/item_b/._b_0.jpg": b"junk",  # a macOS resource fork, as tar copies them
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
    with pytest.raises(UserError) as err:
        safe_extract(path, tmp_path / "empty")
    assert str(err.value) == f"{tmp_path / 'empty'}: already exists and is not empty; delete it to extract {path} again"


@pytest.mark.parametrize("member,why", [
    ("../evil.txt", "'..'"),
    ("shop/../../evil.txt", "'..'"),
    ("..\\evil.txt", "'..'"),
    ("/tmp/evil.txt", "absolute"),
    ("C:\\evil.txt", "absolute"),
    ("C:evil.txt", "absolute"),
    ("c:evil.txt", "absolute"),
])
def test_zip_members_escaping_the_target_are_refused_before_writing(tmp_path, member, why):
    path = make_zip(tmp_path / "bad.zip", {"shop/item/ok.jpg": b"fine", member: b"evil"})
    target = tmp_path / "out"
    with pytest.raises(UserError) as err:
        safe_extract(path, target)
    why = "climbs out of the target folder with '..'" if why == "'..'" else "has an absolute path"
    assert str(err.value) == f"{path}: member {member!r} {why}; refusing to extract this archive"
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
    with pytest.raises(UserError, match=r"times its own size \(limit 200\); refusing to extract \(zip bomb\?\)"):
        safe_extract(path, tmp_path / "out")  # the default limit
    assert_nothing_written(tmp_path, tmp_path / "out")


def test_zip_bomb_by_total_size_is_refused(tmp_path):
    files = {"a/": b"", **{f"a/{i}.bin": os.urandom(600) for i in range(3)}}  # the folder entry counts 0
    path = make_zip(tmp_path / "big.zip", files, zipfile.ZIP_STORED)
    with pytest.raises(UserError) as err:
        safe_extract(path, tmp_path / "out", max_total_bytes=1000)
    assert str(err.value) == (f"{path}: unpacks to more than 1000 bytes; refusing to extract (zip bomb?); "
                              "use an archive you trust with less data")
    assert safe_extract(path, tmp_path / "out", max_total_bytes=1800) == tmp_path / "out"  # exactly


def test_too_many_members_is_refused(tmp_path):
    path = make_tar(tmp_path / "many.tar", {f"a/{i}.jpg": b"x" for i in range(4)})
    with pytest.raises(UserError) as err:
        safe_extract(path, tmp_path / "out", max_members=3)
    assert str(err.value) == (f"{path}: has more than 3 members; refusing to extract (a real dataset this "
                              "large should be split into several archives)")
    assert safe_extract(path, tmp_path / "out", max_members=4) == tmp_path / "out"  # exactly at the limit


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
    with pytest.raises(UserError) as err:
        safe_extract(path, tmp_path / "out")
    assert str(err.value) == (f"{path}: member 'a/small.bin' holds more data than its header declares; "
                              "refusing to extract this archive")
    assert_nothing_written(tmp_path, tmp_path / "out")


@pytest.mark.parametrize("name,mode", [("bad.zip", None), ("bad.tar.gz", "w:gz"), ("bad.tar", "w")])
def test_truncated_archive_is_corrupt_not_a_traceback(tmp_path, name, mode):
    files = {f"shop/item/{i}.jpg": os.urandom(20_000) for i in range(3)}
    path = tmp_path / name
    make_zip(path, files) if mode is None else make_tar(path, files, mode)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(UserError) as err:
        safe_extract(path, tmp_path / "out")
    assert str(err.value).startswith(f"{path}: is corrupt or incomplete (")
    assert str(err.value).endswith("); delete it and download again") and "None" not in str(err.value)
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
    with pytest.raises(UserError) as err:
        safe_extract(junk, tmp_path / "out")
    assert str(err.value) == (f"{junk}: is corrupt or incomplete (not a readable zip or tar file); "
                              "delete it and download again")
    with pytest.raises(UserError, match="no such archive"):
        safe_extract(tmp_path / "nope.zip", tmp_path / "out")


def test_write_failure_cleans_up_staging(tmp_path, monkeypatch):
    def full_disk(path, mode="r"):
        raise OSError(28, "No space left on device")

    path = make_zip(tmp_path / "d.zip", DATASET)
    monkeypatch.setattr(archive_module, "open", full_disk, raising=False)
    with pytest.raises(UserError) as err:
        safe_extract(path, tmp_path / "out")
    assert str(err.value) == (f"{tmp_path / 'out'}: cannot extract {path} here (No space left on device); "
                              "check free disk space and permissions")
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
    ("notes.gz", False), ("shop #2.zip", True),
])
def test_is_archive(name, expected):
    assert is_archive(name) is expected


def test_folder_entries_become_folders_in_any_order_and_depth(tmp_path):
    """Folder entries may come before their parents exist, after files inside them, or from Windows
    tools that set no Unix mode: all end as folders, an empty one included."""
    path = tmp_path / "d.zip"
    windows_dir = zipfile.ZipInfo("shop/empty/")
    windows_dir.external_attr = 0x10  # MS-DOS directory flag only
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("shop/deep/er/", b"")
        zf.writestr("shop/item/1.jpg", b"one")
        zf.writestr("shop/item/", b"")
        zf.writestr(windows_dir, b"")
    root = safe_extract(path, tmp_path / "a" / "b" / "out")  # missing parents of the target are made
    assert root == tmp_path / "a" / "b" / "out" / "shop"
    assert (root / "deep" / "er").is_dir() and (root / "empty").is_dir()
    assert (root / "item" / "1.jpg").read_bytes() == b"one"


def test_tar_folder_entries_become_folders(tmp_path):
    source = tmp_path / "src" / "shop"
    (source / "item").mkdir(parents=True)
    (source / "empty").mkdir()
    (source / "item" / "1.jpg").write_bytes(b"one")
    with tarfile.open(tmp_path / "d.tar", "w") as tf:
        tf.add(source, arcname="shop")
    root = safe_extract(tmp_path / "d.tar", tmp_path / "out")
    assert (root / "empty").is_dir() and (root / "item" / "1.jpg").read_bytes() == b"one"


def test_members_larger_than_one_read_are_written_whole(tmp_path, monkeypatch):
    monkeypatch.setattr(archive_module, "_CHUNK_BYTES", 1000)
    root = safe_extract(make_zip(tmp_path / "d.zip", DATASET), tmp_path / "out")
    assert (root / "item_a" / "a_0.jpg").read_bytes() == DATASET["shop/item_a/a_0.jpg"]


def test_exactly_at_the_ratio_limit_is_accepted(tmp_path):
    path = make_zip(tmp_path / "d.zip", {"a/zeros.bin": bytes(100_000)})
    ratio = 100_000 / path.stat().st_size
    assert safe_extract(path, tmp_path / "out", max_ratio=ratio) == tmp_path / "out"


def zip_with_odd_member(path, mode=stat.S_IFREG, field=None, value=0):
    """A zip whose second member `shop/item/x.jpg` has Unix `mode`, or a central-directory `field`
    (byte offset: 8 flags, 10 compression method) set to `value` after writing."""
    info = zipfile.ZipInfo("shop/item/x.jpg")
    info.external_attr = (mode | 0o644) << 16
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("shop/item/ok.jpg", b"fine")
        zf.writestr(info, b"data")
    if field is not None:
        raw = bytearray(path.read_bytes())
        central = raw.index(b"PK\x01\x02", raw.index(b"PK\x01\x02") + 1)  # the second member's entry
        struct.pack_into("<H", raw, central + field, value)
        path.write_bytes(bytes(raw))
    return path


@pytest.mark.parametrize("odd,why", [
    ({"mode": stat.S_IFIFO}, "is a device, fifo or socket"),
    ({"field": 8, "value": 0x1}, "is encrypted; re-pack the archive without a password"),
    ({"field": 10, "value": 99},  # WinZip's AES
     "uses compression method 99, which Python cannot read; re-pack it as a standard zip"),
], ids=["fifo", "encrypted", "method-99"])
def test_zip_members_that_cannot_be_extracted_safely_are_refused(tmp_path, odd, why):
    path = zip_with_odd_member(tmp_path / "bad.zip", **odd)
    with pytest.raises(UserError) as err:
        safe_extract(path, tmp_path / "out")
    assert str(err.value) == f"{path}: member 'shop/item/x.jpg' {why}; refusing to extract this archive"
    assert_nothing_written(tmp_path, tmp_path / "out")


@pytest.mark.parametrize("entry,why", [
    (tar_entry("shop/dev", tarfile.BLKTYPE), "is a device or fifo"),
    (tar_entry("shop/odd", b"Z"), "has an unsupported member type"),
])
def test_tar_member_types_with_no_file_are_refused_with_the_reason(tmp_path, entry, why):
    path = make_tar(tmp_path / "bad.tar", {"shop/item/ok.jpg": b"fine", entry.name: entry})
    with pytest.raises(UserError) as err:
        safe_extract(path, tmp_path / "out")
    assert str(err.value) == f"{path}: member {entry.name!r} {why}; refusing to extract this archive"


def test_member_ending_early_without_an_error_is_corrupt(tmp_path, monkeypatch):
    """Belt and braces for readers that stop short of the declared size without raising."""
    path = make_zip(tmp_path / "bad.zip", {"a/small.bin": b"0123456789"})
    monkeypatch.setattr(zipfile.ZipFile, "open", lambda self, info: io.BytesIO(b"01234"))
    with pytest.raises(UserError) as err:
        safe_extract(path, tmp_path / "out")
    assert str(err.value) == (f"{path}: is corrupt or incomplete (member 'a/small.bin': ends after 5 of 10 "
                              "bytes); delete it and download again")
    assert_nothing_written(tmp_path, tmp_path / "out")


@pytest.mark.parametrize("damage", ["header", "data"])
def test_damaged_member_is_named_with_the_archive(tmp_path, damage):
    path = make_zip(tmp_path / "bad.zip", {"shop/a/1.jpg": os.urandom(50), "shop/b/1.jpg": b"x" * 50_000})
    raw = bytearray(path.read_bytes())
    local = raw.index(b"PK\x03\x04", 1)  # the second member's local header
    if damage == "header":
        raw[local: local + 4] = b"PK\x00\x00"
    else:
        data = raw.index(b"shop/b/1.jpg", local) + len("shop/b/1.jpg")
        raw[data + 10: data + 30] = os.urandom(20)
    path.write_bytes(bytes(raw))
    with pytest.raises(UserError) as err:
        safe_extract(path, tmp_path / "out")
    assert str(err.value).startswith(f"{path}: is corrupt or incomplete (member 'shop/b/1.jpg': ")
    assert_nothing_written(tmp_path, tmp_path / "out")


def test_library_messages_over_several_lines_become_one(tmp_path, monkeypatch):
    def failing_open(self, info):
        raise zipfile.BadZipFile("Bad CRC-32\n  for file")

    path = make_zip(tmp_path / "bad.zip", {"a/small.bin": b"0123456789"})
    monkeypatch.setattr(zipfile.ZipFile, "open", failing_open)
    with pytest.raises(UserError) as err:
        safe_extract(path, tmp_path / "out")
    assert str(err.value) == (f"{path}: is corrupt or incomplete (member 'a/small.bin': Bad CRC-32 for file); "
                              "delete it and download again")
