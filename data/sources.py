"""Turn `--dataset` into a dataset root folder on disk, fetching or generating it once.

`--dataset` is `synthetic` (built in), `uob` (the original UoB image set), an http(s)/file URL of
an archive, or a local folder or archive. Everything fetched or generated lives under
`--dataset_dir`; everything decoded lives in its `files_to_gitignore/cache`.
"""
from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path

from data.archive import is_archive, safe_extract
from data.download import download
from data.synthetic import generate_synthetic, is_generated, read_marker
from common.errors import UserError

UOB_URL = "https://drive.google.com/u/0/uc?id=1O-492BRWL-_7qN6hL2S4A4BSrLTnoQyw&export=download&confirm=t"


def locate_dataset(dataset: str, dataset_dir: Path, seed: int = 0, progress: bool = True) -> Path:
    """Fetch, extract or generate `dataset` as needed and return its root folder."""
    dataset_dir = Path(dataset_dir)
    if dataset == "synthetic":
        return _synthetic_root(dataset_dir, seed)
    if dataset == "uob":
        return _fetch_archive(UOB_URL, dataset_dir, "uob_image_set", progress)
    if re.match(r"^(https?|file)://", dataset):
        return _fetch_archive(dataset, dataset_dir, _archive_stem(dataset), progress)
    local = Path(dataset).expanduser()
    if local.is_dir():
        return local
    if local.is_file() and is_archive(str(local)):
        return _extract_once(local, dataset_dir / "datasets" / _archive_stem(local.name))
    raise UserError(f"--dataset {dataset}: not 'synthetic', 'uob', a URL, a folder or an archive "
                    "(.zip/.tar[.gz|.bz2|.xz]) that exists")


def _synthetic_root(dataset_dir: Path, seed: int) -> Path:
    """The built-in dataset's folder, generated first when missing or made with other parameters."""
    root = dataset_dir / ("synthetic" if seed == 0 else f"synthetic_seed{seed}")
    if is_generated(root, seed=seed):
        return root
    print(f"generating the built-in synthetic dataset in {root} ...", end="", flush=True)
    started = time.perf_counter()
    generate_synthetic(root, seed=seed)
    marker = read_marker(root) or {}
    print(f" done in {time.perf_counter() - started:.1f} s ({marker.get('num_items', 0):,} items, "
          f"{marker.get('num_images', 0):,} photos)")
    return root


def _archive_stem(url_or_name: str) -> str:
    name = url_or_name.rstrip("/").rsplit("/", 1)[-1].split("?")[0]
    stem = re.sub(r"\.(zip|tar|tgz|tar\.gz|tar\.bz2|tar\.xz)$", "", name, flags=re.I)
    return re.sub(r"[^A-Za-z0-9_.-]", "_", stem) or "dataset"


def _fetch_archive(url: str, dataset_dir: Path, name: str, progress: bool) -> Path:
    """Download (resumably) and extract once; an already extracted folder is reused as is."""
    target = dataset_dir / name if name == "uob_image_set" else dataset_dir / "datasets" / name
    if _has_content(target):
        return target
    file_name = url.split("?")[0].rstrip("/").rsplit("/", 1)[-1]
    archive = dataset_dir / "downloads" / (file_name if is_archive(file_name) else f"{name}.zip")
    if not archive.exists():
        try:
            download(url, archive, progress=progress)
        except UserError as err:
            raise UserError(f"{err}; or train on --dataset synthetic or a local --dataset /path/to/folder") from err
    return _extract_once(archive, target)


def _extract_once(archive: Path, target: Path) -> Path:
    """Extract beside `target`, then move the dataset root (below any wrapper folder) to `target`.

    So `uob_image_set.zip` holding `uob_image_set/<item>/...` lands as `<target>/<item>/...`.
    """
    if _has_content(target):
        return target
    staging = target.with_name(f".{target.name}.extracting")
    shutil.rmtree(staging, ignore_errors=True)
    root = safe_extract(archive, staging)
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        target.rmdir()  # empty, checked above
    os.replace(root, target)
    shutil.rmtree(staging, ignore_errors=True)
    return target


def _has_content(folder: Path) -> bool:
    return folder.is_dir() and any(folder.iterdir())
