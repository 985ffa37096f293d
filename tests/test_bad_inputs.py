"""What happens when…: every bad input and fault, through the public entry points, in one table.

Each `Row` is one situation: it builds the bad input (or provokes the fault) in a fresh folder,
runs `pipeline.main` / `evaluate.main` through `common.cli.run_main` as the command line would
(or the library call where no flag reaches it), and states the expected exit status, a
fragment of what the user is told, and what must survive. One parametrised test checks every
row the same way: no traceback, errors on one `error: ...` line, and nothing the user had lost.

Two rows kill a real `pipeline.py` process with SIGKILL (once mid-epoch, once halfway through
writing a checkpoint) and resume it with the same command; everything else runs in-process on
tiny generated datasets.
"""
from __future__ import annotations

import csv
import errno
import functools
import hashlib
import io
import json
import os
import shutil
import signal
import stat
import struct
import subprocess
import sys
import threading
import traceback
import warnings
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import torch
from PIL import Image

import common.atomic as atomic_module
import data.cache as cache_module
import data.download as download_module
import data.sources as sources_module
import evaluate
import pipeline
import training.trainer as trainer_module
from common.cli import run_main
from data.download import download
from tests.datasets import make_dataset
from tests.http_server import Route, closed_port_url
from tests.tiny_run import RUN_NAME, TINY_FLAGS, TinyRun

REPO = Path(__file__).resolve().parents[1]
TINY = list(TINY_FLAGS)
FAST_DOWNLOAD = {"timeout": 0.5, "retries": 1, "backoff": 0.0}


# ---------------------------------------------------------------------------------------------
# Running the entry points


@dataclass
class Result:
    """What one command did: exit status, stdout, stderr, and facts noted before a resume."""

    code: int
    out: str
    err: str
    noted: dict[str, Any] = field(default_factory=dict)


@dataclass
class Env:
    """One row's world: a fresh folder, captured output, patches, a local HTTP server."""

    tmp: Path
    capsys: pytest.CaptureFixture
    monkeypatch: pytest.MonkeyPatch
    serve: Callable
    trained: TinyRun

    def pipeline(self, *argv: object) -> Result:
        return self.run(pipeline.main, argv)

    def evaluate(self, *argv: object) -> Result:
        return self.run(evaluate.main, argv)

    def run(self, main: Callable, argv: tuple) -> Result:
        """As `python <front end> argv` would: argparse exits, a stray exception prints a traceback."""
        self.capsys.readouterr()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("default")
            try:
                code = run_main(main, [str(a) for a in argv])
            except SystemExit as exit_:
                code = exit_.code
            except Exception:  # what the interpreter would do with it: traceback, status 1
                traceback.print_exc()
                code = 1
        out, err = self.capsys.readouterr()
        shown = "".join(warnings.formatwarning(w.message, w.category, w.filename, w.lineno) for w in caught)
        return Result(code, out, shown + err)

    def prepare(self, dataset: Path | str, *extra: object) -> Result:
        """Index, decode and cache a dataset and print its statistics (no training); whatever
        happens, a dataset folder is left exactly as it was."""
        before = files_in(dataset)
        result = self.pipeline("-m", "simple_net", "--prepare_only", "--dataset_stats", "--dataset", dataset,
                               "--dataset_dir", self.tmp / "data", *extra)
        assert files_in(dataset) == before, "the dataset folder changed"
        return result

    def own_run(self) -> list[str]:
        """Flags for training/evaluating a copy of the trained run (rows may damage their copy)."""
        save_dir = self.tmp / "models"
        if not save_dir.exists():
            shutil.copytree(self.trained.save_dir, save_dir)
        return ["--dataset", str(self.trained.dataset), "--dataset_dir", str(self.trained.dataset_dir),
                "--save_dir", str(save_dir), *TINY]

    @property
    def run_dir(self) -> Path:
        """The row's run folder, ``models/<dataset>/<run>`` (the shared dataset's unless a row
        trained on another one)."""
        found = sorted((self.tmp / "models").glob(f"*/{RUN_NAME}"))
        return found[0] if len(found) == 1 else self.tmp / "models" / self.trained.dataset.name / RUN_NAME


def files_in(folder: Path | str) -> dict[str, tuple[int, int]]:
    """(size, mtime) of every file under `folder` (links not followed); {} if it is no folder."""
    folder = Path(folder)
    if not folder.is_dir():
        return {}
    return {str(p.relative_to(folder)): (p.lstat().st_size, p.lstat().st_mtime_ns) for p in folder.rglob("*")}


def shop(env: Env, items: int = 5, per_item: int = 3) -> Path:
    return make_dataset(env.tmp / "shop", num_items=items, per_item=per_item)


def spawn(env: Env, script: Path, argv: list[str]) -> subprocess.Popen:
    """A real Python process running `script argv`, its output line by line as it happens."""
    child_env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1", "MPLBACKEND": "Agg",
                 "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, str(script), *argv], cwd=env.tmp, env=child_env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_for_line(process: subprocess.Popen, prefix: str, limit: float = 60.0) -> None:
    """Block until the process prints a line starting with `prefix` (killed after `limit` s)."""
    watchdog = threading.Timer(limit, process.kill)
    watchdog.start()
    seen = []
    try:
        for line in process.stdout:
            seen.append(line)
            if line.startswith(prefix):
                return
    finally:
        watchdog.cancel()
    raise AssertionError(f"the process ended without printing {prefix!r}:\n{''.join(seen)}")


def kill(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGKILL)
    process.wait()
    process.stdout.close()


# ---------------------------------------------------------------------------------------------
# Bad files


def png_header_claiming(side: int) -> bytes:
    """A PNG whose header declares side x side pixels, with almost no data: a decompression bomb."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0")) + \
        chunk(b"IEND", b"")


def truncated_jpeg() -> bytes:
    """Headers intact, scan data cut in half: opens (and passes PIL's verify), fails to decode."""
    buffer = io.BytesIO()
    noise = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(buffer, "JPEG")
    return buffer.getvalue()[: len(buffer.getvalue()) // 2]


def png_bytes(colour: tuple[int, int, int] = (10, 20, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (24, 24), colour).save(buffer, "PNG")
    return buffer.getvalue()


def dataset_zip(path: Path, extra: dict[str | zipfile.ZipInfo, bytes] | None = None) -> Path:
    """A zip of shop/<item>/<n>.png (3 items x 2 images) plus `extra` members."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for item in range(3):
            for n in range(2):
                archive.writestr(f"shop/item{item}/{n}.png", png_bytes((80 * item, 40, 90)))
        for name, body in (extra or {}).items():
            archive.writestr(name, body)
    return path


def zip_with_symlink(path: Path) -> Path:
    """The dataset zip plus a member that is a symbolic link to /etc/passwd."""
    link = zipfile.ZipInfo("shop/item0/l.png")
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    return dataset_zip(path, {link: b"/etc/passwd"})


def zip_declaring_terabytes(path: Path) -> Path:
    """Six tiny stored members whose central directory claims ~4 GiB each (24 GiB in all)."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        for n in range(6):
            archive.writestr(f"shop/item/{n}.png", b"x")
    raw = bytearray(path.read_bytes())
    entry = raw.find(b"PK\x01\x02")
    while entry != -1:
        struct.pack_into("<I", raw, entry + 24, 0xFFFFFFF0)  # uncompressed size
        entry = raw.find(b"PK\x01\x02", entry + 4)
    path.write_bytes(bytes(raw))
    return path


def pickle_that_runs_code(path: Path, marker: Path) -> None:
    """A checkpoint whose unpickling would call exec() and create `marker`."""
    class Payload:
        def __reduce__(self):
            return exec, (f"with open({str(marker)!r}, 'w') as f: f.write('code ran')",)
    torch.save({"format_version": 1, "epoch": 3, "model": Payload()}, path)


class FillingDisk:
    """Stands in for `open` on a disk that fills up after `room` bytes: later writes fail with
    ENOSPC, as they would on a real full disk (the file itself is created and partly written)."""

    def __init__(self, room: int):
        self.room = room

    def __call__(self, path, mode="r", *args, **kwargs):
        if "b" not in mode or not set(mode) & set("wa"):
            return open(path, mode, *args, **kwargs)
        return _FillingFile(path, mode, self)


class _FillingFile(io.BufferedWriter):
    def __init__(self, path, mode: str, disk: FillingDisk):
        super().__init__(io.FileIO(path, mode.replace("b", "")))
        self.disk = disk

    def write(self, data) -> int:
        self.disk.room -= len(data)
        if self.disk.room < 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return super().write(data)


def stats_epochs(run_dir: Path) -> list[int]:
    with open(run_dir / "training_stats.csv", newline="") as f:
        return [int(row["epoch"]) for row in csv.DictReader(f)]


def checkpoints(run_dir: Path) -> list[str]:
    """The numbered checkpoints (not last.pth / best.pth), in epoch order."""
    numbered = [p.name for p in run_dir.glob("*.pth") if p.stem.isdigit()]
    return sorted(numbered, key=lambda name: int(name.split(".")[0]))


def leftovers(folder: Path) -> list[str]:
    """Temporary or lock files a failed step must not leave behind."""
    return sorted(p.name for p in folder.rglob("*") if p.name.endswith((".tmp", ".part", ".lock"))
                  or ".extracting" in p.name)


# ---------------------------------------------------------------------------------------------
# Datasets


def missing_folder(env: Env) -> Result:
    return env.prepare(env.tmp / "no_such_folder")


def empty_folder(env: Env) -> Result:
    (env.tmp / "empty").mkdir()
    return env.prepare(env.tmp / "empty")


def item_folder_without_images(env: Env) -> Result:
    (shop(env) / "item_empty").mkdir()
    return env.prepare(env.tmp / "shop")


def item_folder_with_one_image(env: Env) -> Result:
    root = shop(env)
    (root / "item_single").mkdir()
    (root / "item_single" / "only.png").write_bytes(png_bytes())
    return env.prepare(root)


def only_two_items(env: Env) -> Result:
    return env.prepare(shop(env, items=2))


def no_item_has_two_images(env: Env) -> Result:
    root = shop(env, items=6, per_item=1)
    return env.pipeline("-m", "simple_net", "--epochs", "1", "--dataset", root, "--dataset_dir",
                        env.tmp / "data", "--save_dir", env.tmp / "models", *TINY)


def with_file(name: str, body: bytes | Callable[[], bytes]) -> Callable[[Env], Result]:
    """A row action: the small dataset plus one file `item_000/<name>` holding `body`."""
    def act(env: Env) -> Result:
        root = shop(env)
        (root / "item_000" / name).write_bytes(body() if callable(body) else body)
        return env.prepare(root)
    return act


def with_image(name: str, image: Callable[[], Image.Image]) -> Callable[[Env], Result]:
    """A row action: the small dataset plus `image()` saved as `item_000/<name>`."""
    def act(env: Env) -> Result:
        root = shop(env)
        image().save(root / "item_000" / name)
        return env.prepare(root)
    return act


def all_images_unreadable(env: Env) -> Result:
    for item in "abc":
        (env.tmp / "junk" / item).mkdir(parents=True)
        for n in range(2):
            (env.tmp / "junk" / item / f"{n}.jpg").write_bytes(b"not a jpeg")
    return env.prepare(env.tmp / "junk")


def bomb_under_big_ims(env: Env) -> Result:
    root = shop(env)
    (root / "item_000" / "huge.png").write_bytes(png_header_claiming(11_000))
    return env.prepare(root, "--big_ims")


def truncated_jpeg_under_big_ims(env: Env) -> Result:
    """--big_ims checks headers only, so a body cut short surfaces when a batch decodes it."""
    root = shop(env, items=6, per_item=2)
    (root / "item_000" / "cut.jpg").write_bytes(truncated_jpeg())
    return env.pipeline("-m", "simple_net", "--epochs", "1", "--big_ims", "--dataset", root,
                        "--dataset_dir", env.tmp / "data", "--save_dir", env.tmp / "models", *TINY)


def links_out_of_the_dataset(env: Env) -> Result:
    root = shop(env)
    outside = make_dataset(env.tmp / "elsewhere", num_items=1, per_item=2)
    (root / "item_000" / "link.png").symlink_to(outside / "item_000" / "item_000_0.png")
    (root / "linked_item").symlink_to(outside / "item_000", target_is_directory=True)
    (root / "item_001" / "dangling.png").symlink_to(env.tmp / "gone.png")
    result = env.prepare(root)
    result.noted["outside"] = sorted(p.name for p in (outside / "item_000").iterdir())
    return result


def links_ignored_targets_untouched(env: Env, result: Result) -> None:
    stats_line("items 5")(env, result)
    assert result.noted["outside"] == ["item_000_0.png", "item_000_1.png"]


NON_UTF8_ITEM = os.fsdecode(b"caf\xe9")  # a Latin-1 folder name: not valid UTF-8
NON_UTF8_FILE = os.fsdecode(b"broken\xff.jpg")


def non_utf8_names(env: Env) -> Result:
    """Index, cache, print, figure and embed a dataset with names that are not UTF-8."""
    root = shop(env, items=5, per_item=3)
    item = root / NON_UTF8_ITEM
    item.mkdir()
    for n in range(3):
        (item / os.fsdecode(b"photo\xe9%d.png" % n)).write_bytes(png_bytes((200, 100, 50 + n)))
    (item / NON_UTF8_FILE).write_bytes(b"not a jpeg")
    prepared = env.prepare(root)
    evaluated = env.evaluate("--model", "simple", "--dataset", root, "--dataset_dir", env.tmp / "data",
                             "--eval_fraction", "0.5", "--split_seed", "1", "--save_fig", "--num_pages", "0",
                             "--reports_dir", env.tmp / "reports", "--save_embeddings", env.tmp / "emb.npz")
    return Result(max(prepared.code, evaluated.code), prepared.out + evaluated.out,
                  prepared.err + evaluated.err)


def keeps_non_utf8_names(env: Env, result: Result) -> None:
    meta = json.loads(next((env.tmp / "data" / "files_to_gitignore" / "cache").glob("*.json")).read_text())
    assert [path for path, _ in meta["skipped"]] == [f"{NON_UTF8_ITEM}/{NON_UTF8_FILE}"]  # exact round trip
    assert "caf\\udce9" in result.out and "broken\\udcff.jpg" in result.out
    assert len(list((env.tmp / "reports").rglob("embedding.png"))) == 1  # item names in its legend
    saved = np.load(env.tmp / "emb.npz")
    assert "caf\\udce9" in set(saved["items"]) and len(saved["paths"]) == len(saved["embeddings"])


def dataset_dir_is_a_file(env: Env) -> Result:
    (env.tmp / "a_file").write_text("not a folder")
    return env.prepare(shop(env), "--dataset_dir", env.tmp / "a_file")


def disk_full_writing_the_cache(env: Env) -> Result:
    def no_space(fd: int, offset: int, length: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    env.monkeypatch.setattr(cache_module.os, "posix_fallocate", no_space, raising=False)
    return env.prepare(shop(env))


def cache_holds_only_its_lock(env: Env, result: Result) -> None:
    """No half-written array or metadata; the lock file (empty, reused next time) is all."""
    cache = env.tmp / "data" / "files_to_gitignore" / "cache"
    assert [p.suffix for p in cache.iterdir()] == [".lock"]


def damaged_cache(env: Env) -> Result:
    root = shop(env)
    env.prepare(root)
    array = next((env.tmp / "data" / "files_to_gitignore" / "cache").glob("*.npy"))
    array.write_bytes(array.read_bytes()[:200])
    return env.prepare(root)


# ---------------------------------------------------------------------------------------------
# Archives and downloads


def local_archive(build: Callable[[Path], Path]) -> Callable[[Env], Result]:
    """A row action: `--dataset <archive>` where `build(path)` writes the archive."""
    def act(env: Env) -> Result:
        archive = build(env.tmp / "shop.zip")
        result = env.prepare(archive)
        result.noted["archive"] = hashlib.sha256(archive.read_bytes()).hexdigest()
        return result
    return act


def refused_archive_left_nothing(env: Env, result: Result) -> None:
    assert hashlib.sha256((env.tmp / "shop.zip").read_bytes()).hexdigest() == result.noted["archive"]
    assert not (env.tmp / "escaped.png").exists() and not (env.tmp.parent / "escaped.png").exists()
    datasets = env.tmp / "data" / "datasets"
    assert not datasets.exists() or list(datasets.iterdir()) == []


def truncated_archive(path: Path) -> Path:
    dataset_zip(path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return path


def served(route: Callable[[bytes], Route]) -> Callable[[Env], Result]:
    """A row action: `--dataset <url>`, the URL answered by `route(<a good dataset zip>)`.

    Retries, back-off and timeouts are shortened so that failing rows take a second, not minutes.
    """
    def act(env: Env) -> Result:
        env.monkeypatch.setattr(sources_module, "download", functools.partial(download, **FAST_DOWNLOAD))
        body = served_zip(env).read_bytes()
        server = env.serve({"/shop.zip": route(body)})
        result = env.prepare(server.url("/shop.zip"))
        result.noted["requests"] = server.requests_for("/shop.zip")
        return result
    return act


def served_zip(env: Env) -> Path:
    """The dataset zip plus 300 kB of noise (a non-image file), so that a download spans several
    chunks: enough to be cut halfway or to fill a small disk."""
    return dataset_zip(env.tmp / "served.zip", {"shop/item0/noise.bin": os.urandom(300_000)})


def nothing_downloaded(env: Env, result: Result) -> None:
    downloads = env.tmp / "data" / "downloads"
    assert not downloads.exists() or [p.name for p in downloads.iterdir()] == []
    assert not (env.tmp / "data" / "datasets").exists()


def offline(env: Env) -> Result:
    env.monkeypatch.setattr(sources_module, "download", functools.partial(download, **FAST_DOWNLOAD))
    return env.prepare(closed_port_url("/shop.zip"))


def resumed_with_range(env: Env, result: Result) -> None:
    first, second = result.noted["requests"]
    assert "Range" not in first.headers and second.headers["Range"].startswith("bytes=")
    assert (env.tmp / "data" / "downloads" / "shop.zip").read_bytes() == (env.tmp / "served.zip").read_bytes()
    assert leftovers(env.tmp / "data" / "downloads") == leftovers(env.tmp / "data" / "datasets") == []


def disk_full_downloading(env: Env) -> Result:
    env.monkeypatch.setattr(download_module, "open", FillingDisk(room=100_000), raising=False)
    server = env.serve({"/shop.zip": served_zip(env).read_bytes()})
    return env.prepare(server.url("/shop.zip"))


def wrong_checksum(env: Env) -> Result:
    """No flag takes a checksum (the UoB link publishes none), so the library call runs under the
    front ends' own error handler (common.cli.run_main), which prints what a user would see."""
    server = env.serve({"/shop.zip": b"the file changed upstream"})
    dest = env.tmp / "data" / "shop.zip"

    def fetch(argv: list[str]) -> int:
        download(server.url("/shop.zip"), dest, sha256="0" * 64, progress=False, **FAST_DOWNLOAD)
        return 0
    return env.run(fetch, ())


def no_file_under_its_name(env: Env, result: Result) -> None:
    assert list((env.tmp / "data").iterdir()) == []


def weights_zip(build: Callable[[zipfile.ZipFile], None]) -> Callable[[Env], Result]:
    """A row action: `evaluate.py --download_weights` of a zip that `build` fills."""
    def act(env: Env) -> Result:
        archive = env.tmp / "weights.zip"
        with zipfile.ZipFile(archive, "w") as zf:
            build(zf)
        return env.evaluate("--model", "simple_net", "--download_weights", "--weights_url", archive.as_uri(),
                            "--save_dir", env.tmp / "models", "--dataset", env.trained.dataset,
                            "--dataset_dir", env.trained.dataset_dir, "--no_figures")
    return act


def no_run_installed(env: Env, result: Result) -> None:
    installed = [p.name for p in (env.tmp / "models").iterdir() if p.name != "downloads"]
    assert installed == []


def weights_404(env: Env) -> Result:
    server = env.serve({})
    return env.evaluate("--model", "simple_net", "--download_weights", "--weights_url", server.url("/w.zip"),
                        "--save_dir", env.tmp / "models", "--no_figures")


# ---------------------------------------------------------------------------------------------
# Checkpoints


def evaluate_own_run(*extra: object) -> Callable[[Env], Result]:
    def act(env: Env) -> Result:
        return env.evaluate("--model", "simple_net", "--no_figures", *env.own_run(), *extra)
    return act


def malicious_checkpoint(env: Env) -> Result:
    argv = env.own_run()
    marker = env.tmp / "code_ran.txt"
    pickle_that_runs_code(env.run_dir / "3.pth", marker)
    result = env.evaluate("--model", "simple_net", "--checkpoint", "3", "--no_figures", *argv)
    result.noted["marker"] = marker
    return result


def no_code_ran(env: Env, result: Result) -> None:
    assert not result.noted["marker"].exists()
    torch.load(env.run_dir / "3.pth", weights_only=False)  # proof that the payload is live
    assert result.noted["marker"].read_text() == "code ran"


def truncate_newest(env: Env) -> None:
    """Damage both files that hold epoch 2 (2.pth and last.pth), leaving 1.pth the newest good."""
    for name in ("2.pth", "last.pth"):
        newest = env.run_dir / name
        newest.write_bytes(newest.read_bytes()[:1000])


def truncated_checkpoint(latest: bool) -> Callable[[Env], Result]:
    def act(env: Env) -> Result:
        argv = env.own_run()
        truncate_newest(env)
        epoch = [] if latest else ["--checkpoint", "2"]
        return env.evaluate("--model", "simple_net", "--no_figures", *epoch, *argv)
    return act


def resume_past_truncated_checkpoint(env: Env) -> Result:
    argv = env.own_run()
    truncate_newest(env)
    return env.pipeline("-m", "simple_net", "--epochs", "3", "--save_every", "1", *argv)


def checkpoints_1_to_3_and_stats_without_gaps(env: Env, result: Result) -> None:
    assert checkpoints(env.run_dir) == ["1.pth", "2.pth", "3.pth"]
    assert stats_epochs(env.run_dir) == [0, 1, 2, 3]
    torch.load(env.run_dir / "2.pth", weights_only=True)  # rewritten whole


# ---------------------------------------------------------------------------------------------
# Training faults


def train_own_run(epochs: int, *extra: object) -> Callable[[Env], Result]:
    def act(env: Env) -> Result:
        return env.pipeline("-m", "simple_net", "--epochs", epochs, "--save_every", "1", *env.own_run(), *extra)
    return act


def run_kept_intact(env: Env, result: Result) -> None:
    """Checkpoints byte for byte as they were, every stats row kept, no lock or temp files.

    (A row for the failed epoch may follow; resuming drops rows past the newest checkpoint.)
    """
    original = env.trained.save_dir / env.trained.dataset.name / RUN_NAME
    for name in ("1.pth", "2.pth", "last.pth"):
        assert (env.run_dir / name).read_bytes() == (original / name).read_bytes(), name
    assert stats_epochs(env.run_dir)[:3] == stats_epochs(original) == [0, 1, 2]
    assert checkpoints(env.run_dir) == ["1.pth", "2.pth"] and leftovers(env.run_dir) == []


def nan_loss(env: Env) -> Result:
    real = trainer_module.triplet_loss

    def poisoned(*args, **kwargs):
        out = real(*args, **kwargs)
        return out._replace(loss=out.loss * float("nan"))
    env.monkeypatch.setattr(trainer_module, "triplet_loss", poisoned)
    return train_own_run(4)(env)


def ctrl_c_in_epoch(env: Env) -> Result:
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
    env.monkeypatch.setattr(trainer_module, "_train_epoch", interrupted)
    return train_own_run(4)(env)


def ctrl_c_in_checkpoint_write(env: Env) -> Result:
    def interrupted(contents, f):
        f.write(b"half a checkpoint")
        raise KeyboardInterrupt
    env.monkeypatch.setattr("training.checkpoints.torch.save", interrupted)
    return train_own_run(3)(env)


def disk_full_in_checkpoint_write(env: Env) -> Result:
    env.monkeypatch.setattr(atomic_module, "open", FillingDisk(room=100_000), raising=False)
    return train_own_run(3)(env)


def damaged_stats_file(env: Env) -> Result:
    argv = env.own_run()
    (env.run_dir / "training_stats.csv").write_text("epoch,mean training loss\nthree,0.5\n")
    return env.pipeline("-m", "simple_net", "--epochs", "3", *argv)


def stats_file_and_checkpoints_untouched(env: Env, result: Result) -> None:
    assert (env.run_dir / "training_stats.csv").read_text() == "epoch,mean training loss\nthree,0.5\n"
    assert checkpoints(env.run_dir) == ["1.pth", "2.pth"] and leftovers(env.run_dir) == []


def export_into_a_folder(env: Env) -> Result:
    argv = env.own_run()
    (env.tmp / "exports").mkdir()
    return env.evaluate("--model", "simple_net", "--export_weights", "exports", *argv)


def nothing_exported(env: Env, result: Result) -> None:
    assert list((env.tmp / "exports").iterdir()) == [] and not list(env.tmp.glob(".*.tmp"))


def save_dir_is_a_file(env: Env) -> Result:
    (env.tmp / "a_file").write_text("not a folder")
    return env.pipeline("-m", "simple_net", "--epochs", "1", "--dataset", env.trained.dataset, "--dataset_dir",
                        env.trained.dataset_dir, "--save_dir", env.tmp / "a_file", *TINY)


def fresh_training(env: Env, epochs: int, save_every: int, dataset: Path | None = None) -> list[str]:
    """Flags of a new run (no checkpoints yet), on the shared dataset unless one is given."""
    return ["-m", "simple_net", "--epochs", str(epochs), "--save_every", str(save_every), "--eval_every", "100",
            "--dataset", str(dataset or env.trained.dataset), "--dataset_dir", str(env.tmp / "data"),
            "--save_dir", str(env.tmp / "models"), *TINY]


def second_run_while_the_first_trains(env: Env) -> Result:
    argv = fresh_training(env, epochs=10_000, save_every=1)
    first = spawn(env, REPO / "pipeline.py", argv)
    try:
        wait_for_line(first, "epoch 1/")
        return env.pipeline(*argv)
    finally:
        kill(first)


def first_run_unharmed(env: Env, result: Result) -> None:
    assert "1.pth" in checkpoints(env.run_dir)
    torch.load(env.run_dir / "1.pth", weights_only=True)


def killed_during_an_epoch(env: Env) -> Result:
    """SIGKILL right after epoch 3's line: in epoch 4, with rows 0-3 and last.pth of epoch 3
    written (--save_every 2: 2.pth is the newest numbered one); the same command must resume from
    epoch 3, losing only the epoch in progress.

    A dataset of 180 images makes an epoch take long enough (~20 steps) that the kill always
    lands inside epoch 4, however slowly this process reads the line.
    """
    argv = fresh_training(env, epochs=6, save_every=2,
                          dataset=make_dataset(env.tmp / "bigger", num_items=30, per_item=6))
    process = spawn(env, REPO / "pipeline.py", argv)
    wait_for_line(process, "epoch 3/")
    kill(process)
    noted = {"checkpoints": checkpoints(env.run_dir), "rows": stats_epochs(env.run_dir)}
    result = env.pipeline(*argv)
    result.noted.update(noted)
    return result


def resumed_without_duplicate_or_lost_epochs(env: Env, result: Result) -> None:
    assert result.noted["checkpoints"] == ["2.pth"] and result.noted["rows"] == [0, 1, 2, 3]
    assert f"resuming {env.run_dir} from epoch 3" in result.out
    assert checkpoints(env.run_dir) == ["2.pth", "4.pth", "6.pth"]
    assert stats_epochs(env.run_dir) == list(range(7))
    assert leftovers(env.run_dir) == []


DYING_WRITER = '''
"""pipeline.py, except that the process SIGKILLs itself halfway through writing the file that
DIE_WRITING names, at epoch 3."""
import os, signal, sys
import training.checkpoints
from common.cli import run_main
import pipeline

real_atomic_write = training.checkpoints.atomic_write
last_writes = 0


def dying_atomic_write(path, write):
    global last_writes
    def half_then_die(f):
        write(f)
        f.truncate(f.tell() // 2)
        f.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    last_writes += path.name == "last.pth"
    dying = path.name == os.environ["DIE_WRITING"] and (path.name != "last.pth" or last_writes == 3)
    real_atomic_write(path, half_then_die if dying else write)


training.checkpoints.atomic_write = dying_atomic_write
sys.exit(run_main(pipeline.main))
'''


def killed_writing(name: str, save_every: int) -> Callable[[Env], Result]:
    """SIGKILL halfway through writing ``name`` at epoch 3 (3.pth, or last.pth with no 3.pth)."""
    def act(env: Env) -> Result:
        driver = env.tmp / "dying_pipeline.py"
        driver.write_text(DYING_WRITER)
        env.monkeypatch.setenv("DIE_WRITING", name)
        argv = fresh_training(env, epochs=4, save_every=save_every)
        process = spawn(env, driver, argv)
        process.wait(timeout=60)
        process.stdout.close()
        noted = {"code": process.returncode, "checkpoints": checkpoints(env.run_dir),
                 "temp": [p.name for p in env.run_dir.glob(f".{name}.*.tmp")]}
        result = env.pipeline(*argv)
        result.noted.update(noted)
        return result
    return act


def resumed_from_epoch_2(env: Env, result: Result) -> None:
    """Epoch 3 was not complete on disk, so the run resumes from epoch 2 and redoes 3 once."""
    assert result.noted["code"] == -signal.SIGKILL and len(result.noted["temp"]) == 1  # died mid-write
    assert f"resuming {env.run_dir} from epoch 2" in result.out
    assert stats_epochs(env.run_dir) == [0, 1, 2, 3, 4]
    assert leftovers(env.run_dir) == []
    assert torch.load(env.run_dir / "last.pth", weights_only=True)["epoch"] == 4


def resumed_from_the_last_good_checkpoint(env: Env, result: Result) -> None:
    resumed_from_epoch_2(env, result)
    assert result.noted["checkpoints"] == ["1.pth", "2.pth"]
    assert checkpoints(env.run_dir) == ["1.pth", "2.pth", "3.pth", "4.pth"]
    torch.load(env.run_dir / "3.pth", weights_only=True)


def resumed_from_the_previous_last(env: Env, result: Result) -> None:
    resumed_from_epoch_2(env, result)
    assert result.noted["checkpoints"] == ["2.pth"] and checkpoints(env.run_dir) == ["2.pth", "4.pth"]


# ---------------------------------------------------------------------------------------------
# Runs and their data


def changed_dataset(*extra: object) -> Callable[[Env], Result]:
    """The shared run's dataset with one item folder added, then the same command (epochs 3)."""
    def act(env: Env) -> Result:
        argv = env.own_run()
        copy = env.tmp / "shop"
        shutil.copytree(env.trained.dataset, copy)
        make_dataset(env.tmp / "more", num_items=13, per_item=4)
        (env.tmp / "more" / "item_012").rename(copy / "item_012")
        argv[argv.index("--dataset") + 1] = str(copy)
        return env.pipeline("-m", "simple_net", "--epochs", "3", *argv, *extra)
    return act


def digests_of_both_datasets(env: Env, result: Result) -> None:
    """Continued on new content, the run still lists every image it trained on before."""
    digests = (env.run_dir / "train_images.sha1").read_text().splitlines()
    assert any("trained on earlier data" in line or "item_012" in line for line in digests)
    assert stats_epochs(env.run_dir) == [0, 1, 2, 3]


def another_dataset(env: Env) -> Result:
    argv = env.own_run()
    other = make_dataset(env.tmp / "outlet", num_items=12, per_item=4)
    argv[argv.index("--dataset") + 1] = str(other)
    return env.pipeline("-m", "simple_net", "--epochs", "1", *argv)


def own_run_folder(env: Env, result: Result) -> None:
    """Same flags on another dataset: a new run in models/outlet/, the shop run untouched."""
    assert "already trained" not in result.out
    assert stats_epochs(env.tmp / "models" / "outlet" / RUN_NAME) == [0, 1]
    assert stats_epochs(env.tmp / "models" / "shop" / RUN_NAME) == [0, 1, 2]


def only_unseen_items_scored(env: Env, result: Result) -> None:
    """Another split's eval items include trained ones: those are left out, the rest scored."""
    line = next(line for line in result.out.splitlines() if "left out" in line)
    left_out, total = (int(word) for word in line.split()[2:5:2])
    assert 0 < left_out < total and "note:" in result.out and "another split" in result.out


def legacy_run(env: Env) -> Result:
    """A run folder as older versions left it: directly in save_dir, no dataset recorded."""
    argv = env.own_run()
    legacy = env.tmp / "models" / RUN_NAME
    (env.tmp / "models" / "shop" / RUN_NAME).rename(legacy)
    (legacy / "train_images.sha1").unlink()
    hparams = json.loads((legacy / "hparams.json").read_text())
    del hparams["data"]
    (legacy / "hparams.json").write_text(json.dumps(hparams))
    for path in legacy.glob("*.pth"):
        state = torch.load(path, weights_only=True)
        del state["data"]
        torch.save(state, path)
    listed = env.evaluate("--list_runs", *argv)
    result = env.evaluate("--model", "simple_net", "--no_figures", *argv)
    result.out = listed.out + result.out
    assert "(dataset unknown)" in listed.out and "items (dataset unknown" in result.out
    return result


# ---------------------------------------------------------------------------------------------
# Front-end flags


def pipeline_flags(*flags: object) -> Callable[[Env], Result]:
    def act(env: Env) -> Result:
        return env.pipeline("--dataset", env.tmp / "never_read", "--dataset_dir", env.tmp / "data", *flags)
    return act


def evaluate_flags(*flags: object) -> Callable[[Env], Result]:
    def act(env: Env) -> Result:
        return env.evaluate("--dataset", env.tmp / "never_read", "--dataset_dir", env.tmp / "data", *flags)
    return act


def with_debug(env: Env) -> Result:
    return env.prepare(env.tmp / "no_such_folder", "--debug")


# ---------------------------------------------------------------------------------------------
# The table


@dataclass(frozen=True)
class Row:
    """One situation: how it is provoked, and what the user must see and still have afterwards.

    code: 0 handled (a warning at most), 2 an `error: ...` line or an argparse usage error,
    130 Ctrl-C, 1 only for --debug (the traceback). says: a fragment of stderr, or of stdout
    when code is 0. keeps: further checks of what survived.
    """

    situation: str
    act: Callable[[Env], Result]
    code: int
    says: str
    keeps: Callable[[Env, Result], None] | None = None


def stats_line(text: str) -> Callable[[Env, Result], None]:
    def check(env: Env, result: Result) -> None:
        assert any(" ".join(line.split()) == text for line in result.out.splitlines()), result.out
    return check


ROWS = [
    # datasets
    Row("dataset folder missing", missing_folder, 2, "no_such_folder: not 'synthetic', 'uob', a URL, a folder"),
    Row("dataset folder empty", empty_folder, 2, "empty: no images found; expected <root>/<item>/<image>.jpg"),
    Row("item folder with no images", item_folder_without_images, 0, "items 5"),
    Row("item folder with one image", item_folder_with_one_image, 0,
        "single-image 1 item(s) (never used as queries)"),
    Row("fewer than 3 items", only_two_items, 2, "only 2 item folder(s) with readable images; at least 3"),
    Row("no item has 2 images", no_item_has_two_images, 2,
        "0 items with >= 2 images make 0 groups of K=2"),
    Row("truncated JPEG", with_file("cut.jpg", truncated_jpeg), 0,
        "warning: skipped 1 unreadable image(s) in", stats_line("skipped 1 unreadable image(s)")),
    Row("zero-byte image file", with_file("zero.jpg", b""), 0, "item_000/zero.jpg (cannot identify image file"),
    Row("text file named .jpg", with_file("fake.jpg", b"hello"), 0, "item_000/fake.jpg (cannot identify image"),
    Row("non-image files", with_file("notes.txt", b"hello"), 0, "ignored 1 non-image file(s)"),
    Row("PNG with alpha", with_image("alpha.png", lambda: Image.new("RGBA", (20, 20), (255, 0, 0, 0))), 0,
        "skipped 0 unreadable image(s)", stats_line("images 16")),
    Row("grayscale image", with_image("gray.png", lambda: Image.new("L", (20, 20), 128)), 0,
        "skipped 0 unreadable image(s)", stats_line("images 16")),
    Row("16-bit image", with_image("deep.png", lambda: Image.fromarray(np.full((20, 20), 40000, np.uint16))),
        0, "skipped 0 unreadable image(s)", stats_line("images 16")),
    Row("CMYK JPEG", with_image("cmyk.jpg", lambda: Image.new("CMYK", (20, 20), (0, 90, 90, 0))), 0,
        "skipped 0 unreadable image(s)", stats_line("images 16")),
    Row("decompression bomb (header claims 400 Mpx)", with_file("bomb.png", png_header_claiming(20_000)), 0,
        "item_000/bomb.png (Image size (400000000 pixels) exceeds limit"),
    Row("image over MAX_PIXELS (121 Mpx)", with_file("huge.png", png_header_claiming(11_000)), 0,
        "item_000/huge.png (11000x11000 pixels exceeds the 120,000,000 limit)"),
    Row("image over MAX_PIXELS with --big_ims", bomb_under_big_ims, 0,
        "item_000/huge.png (11000x11000 pixels exceeds the 120,000,000 limit)"),
    Row("truncated JPEG found mid-training with --big_ims", truncated_jpeg_under_big_ims, 2,
        "item_000/cut.jpg: cannot read image (image file is truncated"),
    Row("every image unreadable", all_images_unreadable, 2, "junk: none of its 6 image files can be read"),
    Row("symlinks out of the dataset, dangling symlink", links_out_of_the_dataset, 0,
        "ignored 3 non-image file(s)", links_ignored_targets_untouched),
    Row("non-UTF-8 file and folder names", non_utf8_names, 0, "skipped 1 unreadable image(s)",
        keeps_non_utf8_names),
    Row("--dataset_dir is a file", dataset_dir_is_a_file, 2, "cannot create the image cache folder (Not a "
        "directory); choose another --dataset_dir"),
    Row("disk full while caching images", disk_full_writing_the_cache, 2,
        "cannot write the image cache (No space left on device)", cache_holds_only_its_lock),
    Row("image cache damaged", damaged_cache, 0, "image cache is unreadable (ValueError); rebuilding it",
        stats_line("images 15")),
    # archives and downloads
    Row("zip-slip member ../x", local_archive(lambda p: dataset_zip(p, {"../../escaped.png": png_bytes()})), 2,
        "member '../../escaped.png' climbs out of the target folder", refused_archive_left_nothing),
    Row("absolute member path", local_archive(lambda p: dataset_zip(p, {"/tmp/escaped.png": png_bytes()})), 2,
        "member '/tmp/escaped.png' has an absolute path", refused_archive_left_nothing),
    Row("symlink member", local_archive(zip_with_symlink), 2, "member 'shop/item0/l.png' is a symbolic link",
        refused_archive_left_nothing),
    Row("zip bomb (ratio)", local_archive(lambda p: dataset_zip(p, {"shop/item0/zeros.png": bytes(10_000_000)})),
        2, "times its own size (limit 200); refusing to extract (zip bomb?)", refused_archive_left_nothing),
    Row("zip bomb (declares 24 GiB)", local_archive(zip_declaring_terabytes), 2,
        "unpacks to more than 21474836480 bytes; refusing to extract (zip bomb?)", refused_archive_left_nothing),
    Row("truncated archive", local_archive(truncated_archive), 2, "is corrupt or incomplete",
        refused_archive_left_nothing),
    Row("HTML page instead of an archive", served(lambda body: Route.html()), 2,
        "served an HTML page, not an archive", nothing_downloaded),
    Row("HTTP 404", served(lambda body: Route(status=404)), 2, "the server answered 404 Not Found; check the URL",
        nothing_downloaded),
    Row("HTTP 500", served(lambda body: Route(status=500)), 2,
        "server error 500 Internal Server Error, 2 attempt(s); try again later", nothing_downloaded),
    Row("server stalls", served(lambda body: Route(body=body, stall=5)), 2,
        "no answer within 0.5 s, 2 attempt(s)", nothing_downloaded),
    Row("no network", offline, 2, "cannot connect (Connection refused), 2 attempt(s)"),
    Row("connection dropped mid-file", served(lambda body: Route(body=body, drop_first=1)), 0, "items 3",
        resumed_with_range),
    Row("disk full while downloading", disk_full_downloading, 2,
        "writing the download failed (No space left on device)", nothing_downloaded),
    Row("wrong checksum", wrong_checksum, 2, "sha256 mismatch", no_file_under_its_name),
    Row("weights zip with no run inside", weights_zip(lambda zf: zf.writestr("readme.txt", "hi")), 2,
        "holds no run folder", no_run_installed),
    Row("weights URL answers 404", weights_404, 2, "the server answered 404"),
    # checkpoints
    Row("checkpoint pickle that would run code", malicious_checkpoint, 2,
        "3.pth: refused to load: it holds Python objects", no_code_ran),
    Row("checkpoint of another architecture", evaluate_own_run("--model", "big_net", "--run_dir",
                                                               Path("models") / "shop" / RUN_NAME), 2,
        "holds a simple_net (SimpleNet) model but big_net (BigNet) was requested", run_kept_intact),
    Row("checkpoint of another embedding size", evaluate_own_run("--embedding_size", "16", "--run_dir",
                                                                 Path("models") / "shop" / RUN_NAME), 2,
        "weights do not fit SimpleNet", run_kept_intact),
    Row("truncated .pth asked for by number", truncated_checkpoint(latest=False), 2,
        "2.pth: corrupt or unreadable checkpoint"),
    Row("truncated newest .pth, evaluate latest", truncated_checkpoint(latest=True), 0, "(epoch 1 of"),
    Row("truncated newest .pth, resume training", resume_past_truncated_checkpoint, 0, "epoch 3/3",
        checkpoints_1_to_3_and_stats_without_gaps),
    Row("--checkpoint of a missing epoch", evaluate_own_run("--checkpoint", "7"), 2,
        "no checkpoint for epoch 7; available epochs: 1, 2; last.pth: 2; best.pth: 2"),
    # training faults
    Row("NaN loss", nan_loss, 2, "training diverged in epoch 3 (loss nan); nothing was saved for it and the "
        "checkpoints (1, 2; last.pth: 2; best.pth: 2) are kept", run_kept_intact),
    Row("batch size not P x K", train_own_run(2, "--batch_size", "10", "-K", "4"), 2,
        "--batch_size 10: must be P items x K=4 images"),
    Row("Ctrl-C during an epoch", ctrl_c_in_epoch, 130, "interrupted: finished checkpoints", run_kept_intact),
    Row("Ctrl-C while writing a checkpoint", ctrl_c_in_checkpoint_write, 130, "interrupted:", run_kept_intact),
    Row("disk full while writing a checkpoint", disk_full_in_checkpoint_write, 2,
        "3.pth: could not be written (No space left on device); the files written before it are kept",
        run_kept_intact),
    Row("training_stats.csv damaged", damaged_stats_file, 2,
        "training_stats.csv: not a training stats file this version can continue (line 2 has no epoch number)",
        stats_file_and_checkpoints_untouched),
    Row("--export_weights names a folder", export_into_a_folder, 2,
        "--export_weights exports: is a folder; give the zip file to write, e.g. exports/" + RUN_NAME + ".zip",
        nothing_exported),
    Row("--save_dir is a file", save_dir_is_a_file, 2, "a_file/shop/" + RUN_NAME + ": Not a directory"),
    Row("second run on the same run folder", second_run_while_the_first_trains, 2,
        "is training this run folder; wait for it to finish", first_run_unharmed),
    Row("SIGKILL during an epoch, same command again", killed_during_an_epoch, 0, "epoch 6/6",
        resumed_without_duplicate_or_lost_epochs),
    Row("SIGKILL while writing a checkpoint, same command again", killed_writing("3.pth", 1), 0, "epoch 4/4",
        resumed_from_the_last_good_checkpoint),
    Row("SIGKILL while writing last.pth, same command again", killed_writing("last.pth", 2), 0, "epoch 4/4",
        resumed_from_the_previous_last),
    # runs and their data
    Row("items added to a run's dataset", changed_dataset(), 2,
        "but the data now has 1 item(s) added (item_012); pass --accept_changed_data", run_kept_intact),
    Row("items added, --accept_changed_data", changed_dataset("--accept_changed_data"), 0,
        "from epoch 2", digests_of_both_datasets),
    Row("same flags on another dataset", another_dataset, 0, "epoch 1/1", own_run_folder),
    Row("training with another --split_seed", train_own_run(3, "--split_seed", "5"), 2,
        "another split (split seed 0, 20% held out -> split seed 5, 20% held out)", run_kept_intact),
    Row("evaluating with another --split_seed", evaluate_own_run("--split_seed", "5"), 0,
        "the run trained on images with the same content", only_unseen_items_scored),
    Row("run folder from before runs recorded their data", legacy_run, 0,
        "dataset unknown (the run recorded neither its data nor its training images)"),
    # flags
    Row("unknown model", pipeline_flags("-m", "resnet99"), 2, "invalid choice: 'resnet99'"),
    Row("zero epochs", pipeline_flags("--epochs", "0"), 2, "--epochs: 0 must be at least 1"),
    Row("negative epochs", pipeline_flags("--epochs", "-3"), 2, "--epochs: -3 must be at least 1"),
    Row("zero batch size", pipeline_flags("--batch_size", "0"), 2, "--batch_size: 0 must be at least 1"),
    Row("infinite learning rate", pipeline_flags("-lr", "inf"), 2, "inf must be a finite number"),
    Row("unknown device", pipeline_flags("--device", "tpu"), 2, "'tpu': use auto, cpu, mps, cuda"),
    Row("--num_disp 0", evaluate_flags("--num_disp", "0"), 2, "--num_disp: 0 must be at least 1"),
    Row("negative --num_pages", evaluate_flags("--num_pages", "-1"), 2, "'-1' must be a whole number >= 0"),
    Row("--checkpoint not a number", evaluate_flags("--checkpoint", "newest"), 2,
        "'newest': use 'latest', 'best' or an epoch number"),
    Row("--show_case typo", evaluate_flags("--show_case", "fial"), 2, "invalid choice: 'fial'"),
    Row("any error with --debug", with_debug, 1, "Traceback (most recent call last)"),
]


@pytest.mark.parametrize("row", ROWS, ids=[row.situation for row in ROWS])
def test_what_happens_when(row: Row, tmp_path: Path, capsys, monkeypatch, http_server, tiny_run) -> None:
    monkeypatch.chdir(tmp_path)  # relative paths in rows, and nothing strays into the repository
    env = Env(tmp_path, capsys, monkeypatch, http_server, tiny_run)
    result = row.act(env)
    shown = result.err if row.code else result.out + result.err
    assert result.code == row.code, shown
    assert " ".join(row.says.split()) in " ".join(shown.split()), shown  # stats columns are padded
    if row.code == 1:
        assert "common.errors.UserError" in result.err
    else:
        assert "Traceback" not in result.err, result.err
    if row.code == 2 and "usage:" not in result.err:
        errors = [line for line in result.err.splitlines() if "error:" in line]
        assert len(errors) == 1 and errors[0].startswith("error: "), result.err
        assert result.err.rstrip("\n").splitlines()[-1] == errors[0]
    if row.code == 2 and "usage:" in result.err:
        assert result.err.startswith("usage: ")
    if row.code == 130:
        assert result.err.count("\n") == 1, result.err
    if row.keeps:
        row.keeps(env, result)
