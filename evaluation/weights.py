"""Weights zips: one run folder, zipped, to publish (`pack_run`) and to fetch (`install_run`).

A weights zip holds `<run folder name>/<epoch>.pth` plus the run's `training_stats.csv` and
`hparams.json`. `last.pth` and `best.pth` are usually byte copies of a numbered checkpoint (the
trainer writes the same bytes to each), so each checkpoint is packed once: such a copy travels as
a line of `checkpoint_aliases.json` and is re-created on install. Installing extracts the zip
safely (data.archive), finds the run inside and moves it into `--save_dir`, never over a
different run that is already there.
"""
from __future__ import annotations

import filecmp
import hashlib
import json
import os
import re
import shutil
import zipfile
from pathlib import Path
from typing import BinaryIO

from common.atomic import atomic_write
from common.errors import UserError
from data.archive import safe_extract
from data.download import download
from models import MODEL_NAMES
from training.checkpoints import BEST, LAST, available_epochs, checkpoint_path, has_checkpoints, load_checkpoint

ALIASES_FILE = "checkpoint_aliases.json"
_NUMBERED = re.compile(r"^\d+\.pth$")
DEFAULT_WEIGHTS_URL = ("https://drive.google.com/u/0/uc?id=1bTp1vVcAyi4dhTxr_WGKPqTVPrTIM0gB"
                       "&export=download&confirm=t")


def pack_run(run_dir: Path, out_zip: Path) -> Path:
    """Zip `run_dir` as `<run name>/...` (checkpoints, stats, hparams; no locks or temp files)."""
    run_dir = Path(run_dir)
    if not has_checkpoints(run_dir):
        raise UserError(f"{run_dir}: no checkpoints to pack; train it first")
    out_zip = Path(out_zip)
    if out_zip.is_dir():
        raise UserError(f"--export_weights {out_zip}: is a folder; give the zip file to write, "
                        f"e.g. {out_zip / (run_dir.name + '.zip')}")
    out_zip.parent.mkdir(parents=True, exist_ok=True)

    aliases = _copies(run_dir)

    def write_zip(handle: BinaryIO) -> None:
        with zipfile.ZipFile(handle, "w", zipfile.ZIP_DEFLATED) as archive:
            for path in sorted(run_dir.iterdir()):
                if path.is_file() and not path.name.startswith(".") and path.name not in aliases:
                    archive.write(path, f"{run_dir.name}/{path.name}")
            if aliases:
                archive.writestr(f"{run_dir.name}/{ALIASES_FILE}", json.dumps(aliases, indent=2))

    atomic_write(out_zip, write_zip)  # a failed or interrupted export leaves no half-written zip
    return out_zip


def _copies(run_dir: Path) -> dict[str, str]:
    """{"last.pth": "50.pth", ...}: alias files that are byte copies of another checkpoint."""
    numbered = [checkpoint_path(run_dir, e) for e in available_epochs(run_dir)]
    aliases: dict[str, str] = {}
    for name in (LAST, BEST):
        path = run_dir / name
        if not path.is_file():
            continue
        kept = [p for p in numbered if p.stat().st_size == path.stat().st_size
                and filecmp.cmp(p, path, shallow=False)]
        if kept:
            aliases[name] = kept[0].name
        else:
            numbered.append(path)  # best.pth may copy a last.pth that has no numbered twin
    return aliases


def _restore_copies(run: Path, archive: Path) -> None:
    """Re-create the alias files a packed run lists in checkpoint_aliases.json."""
    listing = run / ALIASES_FILE
    if not listing.is_file():
        return
    try:
        aliases = json.loads(listing.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        aliases = None
    for alias, original in (aliases.items() if isinstance(aliases, dict) else [(None, None)]):
        if alias not in (LAST, BEST) or not isinstance(original, str) or \
                not (_NUMBERED.match(original) or original == LAST) or not (run / original).is_file():
            raise UserError(f"{archive}: {ALIASES_FILE} does not name last.pth/best.pth copies of "
                            "checkpoints in the zip; re-export the run with --export_weights")
        shutil.copyfile(run / original, run / alias)
    listing.unlink()


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
        _restore_copies(run, Path(archive))
        _check_architecture(run, archive)
        return _move_into_place(run, save_dir / run.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _find_run(folder: Path, archive: Path) -> Path:
    runs = sorted({p.parent for p in folder.rglob("*.pth") if has_checkpoints(p.parent)})
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
