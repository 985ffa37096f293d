"""Weights zips: one run folder, zipped, to publish (`pack_run`) and to fetch (`install_run`).

A weights zip holds `<run folder name>/<epoch>.pth` plus the run's `training_stats.csv` and
`hparams.json`. Installing extracts it safely (data.archive), finds the run inside and moves it
into `--save_dir`, never over a different run that is already there.
"""
from __future__ import annotations

import filecmp
import hashlib
import os
import shutil
import zipfile
from pathlib import Path
from typing import BinaryIO

from common.atomic import atomic_write
from common.errors import UserError
from data.archive import safe_extract
from data.download import download
from models import MODEL_NAMES
from training.checkpoints import available_epochs, load_checkpoint

DEFAULT_WEIGHTS_URL = ("https://drive.google.com/u/0/uc?id=1bTp1vVcAyi4dhTxr_WGKPqTVPrTIM0gB"
                       "&export=download&confirm=t")


def pack_run(run_dir: Path, out_zip: Path) -> Path:
    """Zip `run_dir` as `<run name>/...` (checkpoints, stats, hparams; no locks or temp files)."""
    run_dir = Path(run_dir)
    if not available_epochs(run_dir):
        raise UserError(f"{run_dir}: no <epoch>.pth checkpoints to pack; train it first")
    out_zip = Path(out_zip)
    if out_zip.is_dir():
        raise UserError(f"--export_weights {out_zip}: is a folder; give the zip file to write, "
                        f"e.g. {out_zip / (run_dir.name + '.zip')}")
    out_zip.parent.mkdir(parents=True, exist_ok=True)

    def write_zip(handle: BinaryIO) -> None:
        with zipfile.ZipFile(handle, "w", zipfile.ZIP_DEFLATED) as archive:
            for path in sorted(run_dir.iterdir()):
                if path.is_file() and not path.name.startswith("."):
                    archive.write(path, f"{run_dir.name}/{path.name}")

    atomic_write(out_zip, write_zip)  # a failed or interrupted export leaves no half-written zip
    return out_zip


def fetch_run(url: str, save_dir: Path, progress: bool = True) -> Path:
    """Download a weights zip (resumable, kept under save_dir/downloads per URL) and install its run."""
    url_hash = hashlib.sha1(url.encode()).hexdigest()[:12]
    archive = Path(save_dir) / "downloads" / f"weights-{url_hash}.zip"
    if not archive.exists():  # download() renames into place only when complete
        download(url, archive, progress=progress)
    return install_run(archive, save_dir)


def install_run(archive: Path, save_dir: Path) -> Path:
    """Extract `archive`, check it holds exactly one run of a known model, move it into save_dir."""
    save_dir = Path(save_dir)
    staging = save_dir / f".{Path(archive).stem}.extracting"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        safe_extract(Path(archive), staging)
        run = _find_run(staging, archive)
        _check_architecture(run, archive)
        return _move_into_place(run, save_dir / run.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _find_run(folder: Path, archive: Path) -> Path:
    runs = sorted({p.parent for p in folder.rglob("*.pth") if available_epochs(p.parent)})
    if len(runs) != 1:
        found = "no run folder" if not runs else f"{len(runs)} run folders"
        raise UserError(f"{archive}: holds {found} (a folder with <epoch>.pth checkpoints); "
                        "a weights zip must hold exactly one run, as made by --export_weights")
    return runs[0]


def _check_architecture(run: Path, archive: Path) -> None:
    name = load_checkpoint(run).state.get("model_name")
    if name not in MODEL_NAMES:
        raise UserError(f"{archive}: its run {run.name} is of an unknown model {name!r}; "
                        f"this version knows {', '.join(MODEL_NAMES)}")


def _move_into_place(run: Path, destination: Path) -> Path:
    """Move the run in; an identical existing copy is reused, a different one is never replaced."""
    if destination.exists():
        if _same_files(run, destination):
            return destination
        raise UserError(f"{destination}: a different run with this name already exists; move it "
                        "away or pass another --save_dir to install the downloaded weights")
    destination.parent.mkdir(parents=True, exist_ok=True)
    os.replace(run, destination)
    return destination


def _same_files(a: Path, b: Path) -> bool:
    names = sorted(p.name for p in a.iterdir())
    return names == sorted(p.name for p in b.iterdir() if not p.name.startswith(".")) and \
        all(filecmp.cmp(a / n, b / n, shallow=False) for n in names)
