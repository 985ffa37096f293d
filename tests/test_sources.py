"""`--dataset` sources: local folders and archives, URLs over a local server, offline errors."""
import io
import zipfile

import pytest
from PIL import Image

from common.errors import UserError
from data import sources
from data.sources import locate_dataset
from tests.http_server import Route, closed_port_url


def dataset_zip(top: str = "shop", corrupt: bool = False) -> bytes:
    """A zip of `<top>/<item>/<item>_<n>.jpg`, optionally with one corrupt image."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for item in range(3):
            for n in range(2):
                image = io.BytesIO()
                Image.new("RGB", (20, 20), (80 * item, 40, 90)).save(image, "JPEG")
                archive.writestr(f"{top}/{item}/{item}_{n}.jpg", image.getvalue())
        if corrupt:
            archive.writestr(f"{top}/1/1_9.jpg", b"\xff\xd8\xff not really a jpeg")
    return buffer.getvalue()


def item_names(root):
    return sorted(p.name for p in root.iterdir() if p.is_dir())


def test_local_folder_is_used_in_place(tmp_path):
    (tmp_path / "mine" / "a").mkdir(parents=True)
    assert locate_dataset(str(tmp_path / "mine"), tmp_path / "data") == tmp_path / "mine"


def test_local_archive_is_extracted_once_without_its_wrapper_folder(tmp_path):
    archive = tmp_path / "shop.zip"
    archive.write_bytes(dataset_zip())
    root = locate_dataset(str(archive), tmp_path / "data")
    assert root == tmp_path / "data" / "datasets" / "shop" and item_names(root) == ["0", "1", "2"]
    marker = root / "0" / "0_0.jpg"
    mtime = marker.stat().st_mtime_ns
    assert locate_dataset(str(archive), tmp_path / "data") == root
    assert marker.stat().st_mtime_ns == mtime


def test_url_archive_downloads_extracts_and_then_works_offline(tmp_path, http_server):
    server = http_server({"/shop.zip": Route(body=dataset_zip(corrupt=True))})
    root = locate_dataset(server.url("/shop.zip"), tmp_path / "data", progress=False)
    assert item_names(root) == ["0", "1", "2"] and (root / "1" / "1_9.jpg").exists()
    assert (tmp_path / "data" / "downloads" / "shop.zip").exists()
    server.stop()
    assert locate_dataset(server.url("/shop.zip"), tmp_path / "data", progress=False) == root


def test_uob_lands_as_item_folders_under_uob_image_set(tmp_path, http_server, monkeypatch):
    server = http_server({"/uc": Route(body=dataset_zip(top="uob_image_set"))})
    monkeypatch.setattr(sources, "UOB_URL", server.url("/uc") + "?id=x&export=download")
    root = locate_dataset("uob", tmp_path / "data", progress=False)
    assert root == tmp_path / "data" / "uob_image_set"
    assert (root / "2" / "2_1.jpg").exists()


def test_uob_offline_names_the_url_and_the_alternatives(tmp_path, monkeypatch):
    url = closed_port_url("/uc")
    monkeypatch.setattr(sources, "UOB_URL", url)
    monkeypatch.setattr("data.download.time.sleep", lambda seconds: None)
    with pytest.raises(UserError) as err:
        locate_dataset("uob", tmp_path / "data", progress=False)
    message = str(err.value)
    assert url.split("/uc")[0] in message and "--dataset synthetic" in message and "\n" not in message


def test_unknown_dataset_is_a_clear_error(tmp_path):
    with pytest.raises(UserError, match="--dataset nowhere"):
        locate_dataset("nowhere", tmp_path / "data")
