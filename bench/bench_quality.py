"""Retrieval quality against training time, on the built-in set and on a real-photo proxy set.

For each dataset it prints precision@1 and MAP@R on held-out items (never trained on) of:

- ``simple``, the colour baseline, and each trainable model's untrained weights;
- ``simple_net`` trained with the pipeline's defaults for the default epochs, with and without
  the cross-batch memory (``--xbm``), and with the previous defaults (Adam 1e-4 x0.95 per epoch,
  light augmentation);
- every other trainable model trained for a fixed wall-clock budget (the epochs that fit in it,
  from the time of a first epoch; the slow torchvision backbones only with ``--slow``);
- the same ``simple_net`` run trained by the plain loop a user would write: torchvision's
  ``ImageFolder`` + a ``DataLoader`` decoding and resizing the JPEG files per sample in one
  worker process per core, random
  P x K batches from the same sampler, the same augmentation, loss, optimizer and schedule. The
  last table is time-to-quality: the training seconds each loop needed to reach the plain loop's
  final precision@1, and the lower of the two loops' finals.

Wall seconds are training time only (evaluations excluded), summed from the runs' statistics
files. CPU seconds (user + system, of the process and its DataLoader workers, evaluations
included) are printed beside them: on a machine shared with other jobs, wall time measures the
neighbours as much as the code, CPU time measures the work. The real-photo set is built by
bench/real_photos.py (a proxy: see its docstring).

    python bench/bench_quality.py [--datasets builtin real] [--budget 90] [--slow]
"""
from __future__ import annotations

import argparse
import math
import os
import resource
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.real_photos import build_real_photos  # noqa: E402
from data.dataset import ImageSet  # noqa: E402
from data.sources import locate_dataset  # noqa: E402
from data.splits import load_splits  # noqa: E402
from evaluation.embed import embed  # noqa: E402
from evaluation.metrics import retrieval_metrics  # noqa: E402
from evaluation.report import in_percent  # noqa: E402
from models import build_model  # noqa: E402
from training.augment import augment  # noqa: E402
from training.config import TrainConfig  # noqa: E402
from training.loss import triplet_loss  # noqa: E402
from training.runs import STATS_FILE, StatsFile, run_name  # noqa: E402
from training.sampler import PKSampler  # noqa: E402
from training.schedule import learning_rate  # noqa: E402
from training.trainer import train  # noqa: E402

FAST_MODELS = ("big_net", "facenet")
SLOW_MODELS = ("efficientnet_b3", "resnet18", "resnet50")
PREVIOUS_DEFAULTS = {"learning_rate": 1e-4, "lr_schedule": "exponential", "lr_decay": 0.95,
                     "warmup_steps": 0, "augment": "light"}
PLAIN_WORKERS = os.cpu_count() or 1  # what a user gives a DataLoader: one decoding process per core
Curve = list[tuple[float, float, float, float]]  # (wall s, CPU s so far, precision@1 %, MAP@R %)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", nargs="+", choices=("builtin", "real"), default=["builtin", "real"])
    parser.add_argument("--epochs", type=int, default=TrainConfig.epochs, help="the default run's epochs")
    parser.add_argument("--budget", type=float, default=90.0,
                        help="seconds of training for each other model (default 90)")
    parser.add_argument("--xbm", type=int, default=512, help="memory size of the --xbm row")
    parser.add_argument("--eval_every", type=int, default=2,
                        help="epochs between evaluations: the resolution of the time-to-quality table")
    parser.add_argument("--slow", action="store_true", help=f"also {', '.join(SLOW_MODELS)}")
    parser.add_argument("--no_plain", action="store_true", help="leave out the plain-loop comparison")
    parser.add_argument("--work_dir", type=Path, default=None,
                        help="keep datasets, caches and runs here (default: a temporary folder)")
    args = parser.parse_args()
    torch.set_num_threads(min(2, torch.get_num_threads()))
    print(f"{torch.get_num_threads()} threads; training seconds exclude evaluation\n")
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work_dir or Path(tmp)
        for dataset in args.datasets:
            bench_dataset(dataset, work, args)


def bench_dataset(dataset: str, work: Path, args: argparse.Namespace) -> None:
    root = (locate_dataset("synthetic", work / "data", progress=False) if dataset == "builtin"
            else build_real_photos(work / "data" / "real_photos", progress=lambda _: None))
    started = time.perf_counter()
    rows: list[tuple[str, str, str, float, float, float, float]] = []
    simple = build_model("simple")
    _, eval_set = _splits(root, simple.input_size, work)
    metrics = _metrics(simple, eval_set)
    rows.append(("simple", "colour baseline, no training", "-", 0.0, 0.0, *metrics))

    base = TrainConfig(model="simple_net", epochs=args.epochs, eval_every=args.eval_every,
                       save_every=0, device="cpu", num_workers=1)
    default_curve = _trained_rows(rows, "simple_net", "defaults", base, root, work, dataset)
    _trained_rows(rows, "simple_net", f"defaults + --xbm {args.xbm}", replace(base, xbm=args.xbm),
                  root, work, dataset)
    _trained_rows(rows, "simple_net", "previous defaults (1e-4, x0.95/epoch, light)",
                  replace(base, **PREVIOUS_DEFAULTS), root, work, dataset)
    for name in FAST_MODELS + (SLOW_MODELS if args.slow else ()):
        config = replace(base, model=name, epochs=_epochs_in_budget(name, base, root, work, args.budget))
        _trained_rows(rows, name, f"{args.budget:.0f} s budget", config, root, work, dataset)
    plain_curve = None if args.no_plain else _plain_rows(rows, base, root, work)

    print(f"## {dataset}: {root}\n{len(eval_set)} held-out images of {len(eval_set.items)} items\n")
    print("| model | training | epochs | train s (wall) | CPU s | precision@1 | MAP@R |")
    print("|---|---|---|---|---|---|---|")
    for model, setting, epochs, seconds, cpu, p1, map_r in rows:
        print(f"| `{model}` | {setting} | {epochs} | {seconds:.0f} | {cpu:.0f} | {p1:.1f}% | {map_r:.1f}% |")
    if plain_curve:
        _print_time_to_quality(default_curve, plain_curve, args.epochs)
    print(f"\n(benchmark wall time for {dataset}: {time.perf_counter() - started:.0f} s)\n", flush=True)


def _splits(root: Path, size: int, work: Path) -> tuple[ImageSet, ImageSet]:
    splits = load_splits(root, size, work / "cache", progress=False)
    return splits.sets["train"], splits.pick_eval(("val", "eval", "test"))


def _metrics(model: torch.nn.Module, eval_set: ImageSet) -> tuple[float, float]:
    """(precision@1, MAP@R) in %, the unit of the runs' statistics files."""
    result = in_percent(retrieval_metrics(embed(model, eval_set), eval_set.labels, k=5))
    return result["precision@1"], result["map@r"]


def _trained_rows(rows: list, name: str, setting: str, config: TrainConfig, root: Path, work: Path,
                  dataset: str) -> Curve:
    """Train ``config`` from scratch; add its untrained row (once per model) and its trained row."""
    torch.manual_seed(config.seed)
    model = build_model(name)
    train_set, eval_set = _splits(root, model.input_size, work)
    config = replace(config, image_size=model.input_size)
    cpu: list[float] = []  # CPU seconds at each epoch line (epoch 0 first)
    start = _cpu_seconds()
    train(config, model, train_set, eval_set, work / "runs" / dataset,
          log=lambda _: cpu.append(_cpu_seconds() - start))
    curve, untrained = _read_curve(_run_dir(config, model, work / "runs" / dataset), cpu)
    if not any(row[0] == name and row[2] == "0" for row in rows):
        rows.append((name, "untrained weights", "0", 0.0, 0.0, *untrained))
    rows.append((name, setting, str(config.epochs), *curve[-1]))
    return curve


def _run_dir(config: TrainConfig, model: torch.nn.Module, save_dir: Path) -> Path:
    return save_dir / run_name(type(model).__name__, config)


def _cpu_seconds() -> float:
    """User + system CPU time of this process and its finished children (DataLoader workers)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _read_curve(run_dir: Path, cpu: list[float]) -> tuple[Curve, tuple[float, float]]:
    """(wall s, CPU s so far, p@1, MAP@R) at each evaluated epoch, and the epoch-0 metrics.

    ``cpu`` holds the CPU seconds at each epoch line of this call (epoch 0 first, when it ran).
    """
    stats = StatsFile(run_dir / STATS_FILE).rows
    cpu = cpu[-(len(stats) - 1):] if len(cpu) >= len(stats) - 1 else [math.nan] * (len(stats) - 1)
    curve, seconds = [], 0.0
    for row, cpu_seconds in zip(stats[1:], cpu):
        seconds += float(row["seconds"])
        if row["precision@1"]:
            curve.append((seconds, cpu_seconds, float(row["precision@1"]), float(row["map@r"])))
    return curve, (float(stats[0]["precision@1"]), float(stats[0]["map@r"]))


def _epochs_in_budget(name: str, base: TrainConfig, root: Path, work: Path, budget: float) -> int:
    """How many epochs of ``name`` fit in ``budget`` seconds, from one timed epoch."""
    model = build_model(name)
    train_set, _ = _splits(root, model.input_size, work)
    probe = replace(base, model=name, epochs=1, image_size=model.input_size, eval_every=1)
    result = train(probe, model, train_set, None, work / "probe" / name, log=lambda _: None)
    seconds = float(StatsFile(result.run_dir / STATS_FILE).rows[-1]["seconds"])
    return max(1, math.floor(budget / seconds))


def _plain_rows(rows: list, config: TrainConfig, root: Path, work: Path) -> Curve:
    """The same run as `defaults` through ImageFolder + DataLoader (JPEG decoding per sample)."""
    from torch.utils.data import DataLoader
    from torchvision import datasets, transforms

    torch.manual_seed(config.seed)
    model = build_model(config.model)
    train_set, eval_set = _splits(root, model.input_size, work)
    folder = _image_folder(train_set, work / "plain" / root.name)
    size = model.input_size
    images = datasets.ImageFolder(str(folder), transform=transforms.Compose(
        [transforms.Resize((size, size)), transforms.ToTensor()]))
    sampler = PKSampler(images.targets, config.items_per_batch, config.images_per_item, config.seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    generator = torch.Generator().manual_seed(config.seed)
    curve, seconds, cpu_start = [], 0.0, _cpu_seconds()
    for epoch in range(1, config.epochs + 1):
        started = time.perf_counter()
        model.train()
        loader = DataLoader(images, batch_sampler=sampler.batches(epoch), num_workers=PLAIN_WORKERS)
        for step, (x, labels) in enumerate(loader):
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(config, (epoch - 1) * len(sampler) + step, len(sampler))
            loss = triplet_loss(model(augment(x, generator, config.augment)), labels,
                                config.margin, config.mining).loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        seconds += time.perf_counter() - started
        if epoch % config.eval_every == 0 or epoch == config.epochs:
            p1, map_r = _metrics(model, eval_set)
            curve.append((seconds, _cpu_seconds() - cpu_start, p1, map_r))
    rows.append((config.model, "same run, plain ImageFolder + DataLoader loop", str(config.epochs),
                 *curve[-1]))
    return curve


def _image_folder(train_set: ImageSet, folder: Path) -> Path:
    """``folder/<item>/<file>`` links to the training split's files: what ImageFolder expects."""
    for path, label in zip(train_set.paths, train_set.labels):
        link = folder / train_set.items[label] / Path(path).name
        if not link.exists():
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(Path(path).resolve())
    return folder


def _print_time_to_quality(trainer: Curve, plain: Curve, epochs: int) -> None:
    """Seconds each loop needs to reach a precision@1, and per epoch.

    Two targets: the plain loop's final precision@1 (the trainer may end a point below it: the
    two runs differ in their random augmentation streams, which moves a final precision@1 by
    about its standard error), and the lower of the two finals, which both loops reach.
    """
    plain_final, trainer_final = plain[-1][2], trainer[-1][2]
    print("\ntime to a precision@1 (from the evaluated epochs), and per epoch:\n")
    print("| target precision@1 | plain loop wall s | CPU s | pipeline trainer wall s | CPU s | less wall / CPU |")
    print("|---|---|---|---|---|---|")
    for label, target in ((f"plain loop's final, {plain_final:.1f}%", plain_final),
                          (f"lower final, {min(plain_final, trainer_final):.1f}%",
                           min(plain_final, trainer_final))):
        print(f"| {label} | {_time_to(plain, target)} | {_time_to(trainer, target)} | "
              f"{_ratio(plain, trainer, target)} |")
    print(f"| per epoch | {plain[-1][0] / epochs:.1f} | {plain[-1][1] / epochs:.1f} | "
          f"{trainer[-1][0] / epochs:.1f} | {trainer[-1][1] / epochs:.1f} | "
          f"{plain[-1][0] / trainer[-1][0]:.1f}x / {plain[-1][1] / trainer[-1][1]:.1f}x |")


def _reached(curve: Curve, target: float) -> tuple[float, float, float, float] | None:
    return next((point for point in curve if point[2] >= target), None)


def _time_to(curve: Curve, target: float) -> str:
    point = _reached(curve, target)
    return "not reached | -" if point is None else f"{point[0]:.0f} | {point[1]:.0f}"


def _ratio(plain: Curve, trainer: Curve, target: float) -> str:
    slow, fast = _reached(plain, target), _reached(trainer, target)
    if slow is None or fast is None:
        return "-"
    return f"**{slow[0] / fast[0]:.1f}x** / {slow[1] / fast[1]:.1f}x"


if __name__ == "__main__":
    main()
