"""What writing ``last.pth`` after every epoch costs, as a share of the epoch it protects.

It trains ``simple_net`` (or the models asked for) for a few epochs on the built-in dataset through
the real trainer, takes the median training seconds of an epoch from training_stats.csv, then
writes that run's own checkpoint through `CheckpointSaver.save` as an epoch that keeps only
last.pth (no numbered file, no new best) several times and takes the median. Target: < 5 % of an
epoch for simple_net.

    python bench/bench_checkpoint.py [--models simple_net] [--epochs 4] [--repeats 10]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data.sources import locate_dataset  # noqa: E402
from data.splits import load_splits  # noqa: E402
from models import build_model  # noqa: E402
from training.checkpoints import LAST, CheckpointSaver, load_checkpoint  # noqa: E402
from training.config import TrainConfig  # noqa: E402
from training.runs import STATS_FILE, StatsFile  # noqa: E402
from training.trainer import train  # noqa: E402
from training.workflow import cache_dir  # noqa: E402


def epoch_seconds(run_dir: Path) -> float:
    """Median training seconds of the epochs after the first (which warms up)."""
    rows = StatsFile(run_dir / STATS_FILE).rows
    seconds = [float(r["seconds"]) for r in rows if r["seconds"] and int(r["epoch"]) > 1]
    return statistics.median(seconds)


def save_seconds(run_dir: Path, repeats: int, out_dir: Path) -> tuple[float, int]:
    """(median seconds, bytes) of writing the run's checkpoint as a last.pth-only epoch."""
    state = {k: v for k, v in load_checkpoint(run_dir).state.items()
             if k not in ("format_version", "epoch", "best")}
    out_dir.mkdir(parents=True, exist_ok=True)
    saver = CheckpointSaver(out_dir, save_every=0)
    times = []
    for epoch in range(1, repeats + 1):
        start = time.perf_counter()
        saver.save(epoch, state)  # not final, no score: last.pth only
        times.append(time.perf_counter() - start)
    return statistics.median(times), (out_dir / LAST).stat().st_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=["simple_net"])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--dataset_dir", default="data")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    root = locate_dataset("synthetic", Path(args.dataset_dir))
    print(f"built-in dataset {root}, CPU, {torch.get_num_threads()} threads, default hyperparameters\n")
    header = ("model", "epoch s", "last.pth write s", "last.pth MB", "write / epoch")
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("-" * (len(h) + 2) for h in header) + "|")
    for name in args.models:
        torch.manual_seed(0)
        model = build_model(name)
        splits = load_splits(root, model.input_size, cache_dir(args.dataset_dir), progress=False)
        with tempfile.TemporaryDirectory() as tmp:
            config = TrainConfig(model=name, epochs=args.epochs, device="cpu", num_workers=1,
                                 eval_every=10_000, save_every=0)
            result = train(config, model, splits.sets["train"], None, Path(tmp) / "runs",
                           data=splits.identity, log=lambda _: None)
            epoch = epoch_seconds(result.run_dir)
            write, size = save_seconds(result.run_dir, args.repeats, Path(tmp) / "saves")
        cells = (name, f"{epoch:.2f}", f"{write:.4f}", f"{size / 1e6:.2f}", f"{write / epoch:.1%}")
        print("| " + " | ".join(c.rjust(len(h)) for c, h in zip(cells, header)) + " |", flush=True)
    print("\nwrite = CheckpointSaver.save of an epoch that keeps only last.pth (serialise once, "
          "write to a temporary file, fsync, rename); epoch = median training seconds per epoch.")


if __name__ == "__main__":
    main()
