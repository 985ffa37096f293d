"""Weights zips: run folders, zipped, to publish (`pack_run`) and to fetch (`fetch_run`).

A weights zip holds `<run folder name>/<epoch>.pth` plus the run's `training_stats.csv` and
`hparams.json` (ours: one run), or the original project's run folders of bare state_dicts (one
or several), which `pick_run` chooses from by `--model` and the hyperparameter flags. `last.pth`
and `best.pth` are usually byte copies of a numbered checkpoint (the trainer writes the same bytes
to each), so each checkpoint is packed once: such a copy travels as a line of
`checkpoint_aliases.json` and is re-created on install. Installing extracts the zip safely
(data.archive), finds the runs inside and moves them into `--save_dir`, never over a different
run that is already there.
"""
from __future__ import annotations

import filecmp
import hashlib
import json
import os
import re
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from common.atomic import atomic_write
from common.errors import UserError
from data.archive import safe_extract
from data.download import download
from evaluation.original_runs import original_model_of, serves_request
from models import MODEL_NAMES
from models.original_nets import ORIGINAL_NAMES
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


@dataclass
class InstalledRun:
    """A run folder of a weights zip, now under --save_dir."""

    path: Path
    model: str   # the model it holds: one of ours, or an original network (original_simple_net...)
    new: bool    # False: an identical copy was already installed, and is used as it is


def fetch_run(url: str, save_dir: Path, progress: bool = True) -> list[InstalledRun]:
    """Download a weights zip (resumable, kept under save_dir/downloads per URL) and install its runs."""
    url_hash = hashlib.sha1(url.encode()).hexdigest()[:12]
    archive = Path(save_dir) / "downloads" / f"weights-{url_hash}.zip"
    if not archive.exists():  # download() renames into place only when complete
        download(url, archive, progress=progress)
    return install_runs(archive, save_dir, source=url)


def install_runs(archive: Path, save_dir: Path, source: str | None = None) -> list[InstalledRun]:
    """Extract `archive`, check every run in it is of a known model, move them into save_dir.

    A downloaded file that is not a readable zip is deleted, so the next run downloads it again
    instead of failing on the same bad copy.
    """
    save_dir, archive = Path(save_dir), Path(archive)
    staging = save_dir / f".{archive.stem}.extracting"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        _extract_zip(archive, staging, source or str(archive))
        runs = _find_runs(staging, archive)
        for run in runs:
            _restore_copies(run, archive)
        models = [_model_of(run, archive) for run in runs]
        present = [_already_there(run, save_dir / run.name) for run in runs]  # all, before any move
        for run, there in zip(runs, present):
            if not there:
                _move_into_place(run, save_dir / run.name)
        return [InstalledRun(save_dir / run.name, model, new=not there)
                for run, model, there in zip(runs, models, present)]
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _extract_zip(archive: Path, staging: Path, source: str) -> None:
    try:
        if not zipfile.is_zipfile(archive):
            raise UserError(f"{source}: the downloaded file is not a zip archive")
        safe_extract(archive, staging)
    except UserError as err:
        archive.unlink(missing_ok=True)
        raise UserError(f"{err} (the download {archive} was deleted); check --weights_url "
                        "points at a weights zip") from err


def _find_runs(folder: Path, archive: Path) -> list[Path]:
    runs = sorted({p.parent for p in folder.rglob("*.pth") if has_checkpoints(p.parent)})
    if not runs:
        raise UserError(f"{archive}: holds no run folder (a folder with <epoch>.pth checkpoints); "
                        "a weights zip holds run folders, as made by --export_weights")
    names = [run.name for run in runs]
    if len(set(names)) < len(names):
        raise UserError(f"{archive}: holds two run folders of the same name; re-pack it")
    return runs


def _model_of(run: Path, archive: Path) -> str:
    """The run's model: an original network recognised by its weights, or the one ours records."""
    original = original_model_of(run)
    if original is not None:
        return original
    name = load_checkpoint(run).state.get("model_name")
    if name not in MODEL_NAMES:
        raise UserError(f"{archive}: its run {run.name} is of an unknown model {name!r}; "
                        f"this version knows {', '.join(MODEL_NAMES + ORIGINAL_NAMES)}")
    return name


def pick_run(runs: list[InstalledRun], model: str, wanted: set[str]) -> InstalledRun:
    """The downloaded run that `--model` (and the hyperparameters, naming `wanted` folders) asks for."""
    fitting = [run for run in runs if serves_request(run.model, model)]
    if len(fitting) > 1:
        fitting = [run for run in fitting if run.path.name in wanted] or fitting
    if len(fitting) == 1:
        return fitting[0]
    listing = ", ".join(f"{run.path} ({run.model})" for run in runs)
    if not fitting:
        raise UserError(f"--model {model}: the weights zip holds no such run (it holds {listing}); "
                        "pass the --model of the run to evaluate")
    raise UserError(f"--model {model}: the weights zip holds several such runs ({listing}); pick one "
                    "with the hyperparameter flags that name it, or --run_dir FOLDER")


def _already_there(run: Path, destination: Path) -> bool:
    """True for an identical copy; a different run of that name is never replaced or reused."""
    if not destination.exists():
        return False
    if _same_files(run, destination):
        return True
    raise UserError(f"{destination}: a different run with this name already exists; move it "
                    "away or pass another --save_dir to install the downloaded weights")


def _move_into_place(run: Path, destination: Path) -> None:
    destination.parent.mkdir(parents=True, exist_ok=True)
    os.replace(run, destination)


def _same_files(a: Path, b: Path) -> bool:
    names = sorted(p.name for p in a.iterdir())
    return names == sorted(p.name for p in b.iterdir() if not p.name.startswith(".")) and \
        all(filecmp.cmp(a / n, b / n, shallow=False) for n in names)
