"""Training throughput per model, and what the loop costs beyond the model's own arithmetic.

For each model it trains short epochs through the real trainer (`training.trainer.train`, on
random images held in memory at the model's input size) and after each measured epoch replays its
batches, already converted and on the device, through nothing but forward + loss + backward +
optimizer step. The overhead ratio is epoch wall time / that pure time (target <= 1.15), the
median over five measured epochs of each epoch's ratio to its own replay; the
augmentation share says how much of the difference is augmentation. It also counts embeddings
computed per triplet: the original embedded 3 images per triplet, online mining embeds each image
of a batch once and forms many triplets from them.

    python bench/bench_train.py [--models simple_net big_net facenet] [--batch_size 64] [--steps 32]

Defaults are the training defaults (batch 64, K 4, light augmentation); 32 steps per measured
epoch keep one burst of load from deciding a ratio (16 steps swung it by 25 %).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data.tensors import to_tensor  # noqa: E402
from models import MODEL_NAMES, build_model  # noqa: E402
from training.augment import augment  # noqa: E402
from training.config import TrainConfig  # noqa: E402
from training.distributed import pick_device  # noqa: E402
from training.loss import triplet_loss  # noqa: E402
from training.runs import STATS_FILE, StatsFile  # noqa: E402
from training.sampler import PKSampler  # noqa: E402
from training.trainer import train  # noqa: E402

ORIGINAL_EMBEDDINGS_PER_TRIPLET = 3  # anchor, positive and negative each went through the model
MEASURED_EPOCHS = (2, 3, 4, 5, 6)  # epoch 1 warms up; each measured epoch is replayed right after it
Batch = tuple[torch.Tensor, torch.Tensor]  # (float images on the device, labels)


class RandomImages:
    """An in-memory ImageSet: K random images per item, so reading costs what a cache read does."""

    def __init__(self, num_images: int, size: int, per_item: int):
        self.labels = np.arange(num_images, dtype=np.int64) // per_item
        self.items = [str(i) for i in range(self.labels[-1] + 1)]
        self.paths = [f"{label}/{n}.jpg" for n, label in enumerate(self.labels)]
        self.size = size
        shape = (num_images, size, size, 3)
        self.images = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)

    def __len__(self) -> int:
        return len(self.labels)

    def batch(self, rows: np.ndarray | list[int]) -> np.ndarray:
        return self.images[np.asarray(rows)]


def epoch_seconds(config: TrainConfig, model: torch.nn.Module, images: RandomImages,
                  save_dir: Path) -> tuple[float, float]:
    """(seconds, active triplets per step) of epoch ``config.epochs``, as the trainer logged them.

    Asking for one more epoch each time resumes the run, so only that epoch trains.
    """
    result = train(config, model, images, None, save_dir, log=lambda _: None)
    row = next(r for r in StatsFile(result.run_dir / STATS_FILE).rows if int(r["epoch"]) == config.epochs)
    return float(row["seconds"]), float(row["triplets"])


def pure_seconds(config: TrainConfig, model: torch.nn.Module, batches: list[Batch],
                 device: torch.device) -> tuple[float, float]:
    """(seconds, mined triplets per step): forward + loss + backward + step on in-memory batches."""
    amp = device.type == "cuda"
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    scaler = torch.amp.GradScaler(device.type, enabled=amp)
    model.train()

    def step(x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
            embeddings = model(x)
        out = triplet_loss(embeddings, labels, config.margin, config.mining)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(out.loss).backward()
        scaler.step(optimizer)
        scaler.update()
        return out.mined

    step(*batches[0])  # warm-up, like the trainer's first epoch
    _sync(device)
    start = time.perf_counter()
    mined = sum(step(x, labels) for x, labels in batches)
    _sync(device)
    return time.perf_counter() - start, float(mined) / len(batches)


def augment_seconds(batches: list[Batch], device: torch.device, level: str) -> float:
    generator = torch.Generator().manual_seed(0)
    _sync(device)
    start = time.perf_counter()
    for x, _ in batches:
        augment(x, generator, level)
    _sync(device)
    return time.perf_counter() - start


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_model(name: str, args: argparse.Namespace, device: torch.device,
                save_dir: Path) -> dict[str, float]:
    """Trainer epoch and its pure replay, five times, interleaved. The overhead is the median of the
    five paired ratios: each epoch is compared with its own replay a second later, so slow drifts in
    the machine's load cancel, and the median keeps one burst from deciding (the fastest-of-three
    of each side, used before, swung between 1.08x and 1.15x from run to run)."""
    torch.manual_seed(0)
    model = build_model(name)
    images = RandomImages(args.steps * args.batch_size, model.input_size, args.images_per_item)
    epoch_s, pure_s, augment_s = [], [], []
    for epoch in MEASURED_EPOCHS:
        config = TrainConfig(model=name, epochs=epoch, batch_size=args.batch_size,
                             images_per_item=args.images_per_item, device=device.type,
                             num_workers=args.num_workers, augment=args.augment)
        seconds, active = epoch_seconds(config, model, images, save_dir)
        sampler = PKSampler(images.labels, config.items_per_batch, config.images_per_item, config.seed)
        batches = [(to_tensor(images.batch(rows)).to(device),
                    torch.from_numpy(images.labels[rows]).to(device)) for rows in sampler.batches(epoch)]
        pure, mined = pure_seconds(config, model, batches, device)
        epoch_s.append(seconds)
        pure_s.append(pure)
        augment_s.append(augment_seconds(batches, device, config.augment))
    num_images = len(batches) * args.batch_size
    return {"input": model.input_size, "train_ips": num_images / min(epoch_s),
            "pure_ips": num_images / min(pure_s),
            "overhead": float(np.median(np.divide(epoch_s, pure_s))),
            "augment": min(augment_s) / min(pure_s),
            "per_mined": args.batch_size / mined, "per_active": args.batch_size / max(active, 1e-9)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+",
                        default=[m for m in ("simple_net", "big_net", "facenet") if m in MODEL_NAMES])
    parser.add_argument("--batch_size", type=int, default=TrainConfig.batch_size)
    parser.add_argument("--images_per_item", type=int, default=TrainConfig.images_per_item)
    parser.add_argument("--steps", type=int, default=32, help="steps per epoch")
    parser.add_argument("--num_workers", type=int, default=TrainConfig.num_workers)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--augment", default=TrainConfig.augment, choices=("none", "light", "strong"))
    args = parser.parse_args()
    device = pick_device(args.device)
    print(f"device {device}, {torch.get_num_threads()} threads, batch {args.batch_size} "
          f"(K={args.images_per_item}), {args.steps} steps per epoch, semi-hard mining, "
          f"augmentation {args.augment}\n")
    header = ("model", "input", "train img/s", "pure img/s", "overhead", "augment",
              "emb/triplet mined", "emb/triplet active", "original", "fewer passes")
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("-" * (len(h) + 2) for h in header) + "|")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            r = bench_model(name, args, device, Path(tmp))
            cells = (name, f"{r['input']}", f"{r['train_ips']:.1f}", f"{r['pure_ips']:.1f}",
                     f"{r['overhead']:.2f}x", f"{r['augment']:.0%}", f"{r['per_mined']:.3f}",
                     f"{r['per_active']:.3f}", f"{ORIGINAL_EMBEDDINGS_PER_TRIPLET}",
                     f"{ORIGINAL_EMBEDDINGS_PER_TRIPLET / r['per_mined']:.0f}x")
            print("| " + " | ".join(c.rjust(len(h)) for c, h in zip(cells, header)) + " |",
                  flush=True)
    print("\noverhead = trainer epoch wall time / pure forward+loss+backward+step on the same batches "
          "already on the device (target <= 1.15); augment = augmentation time / pure time; "
          "emb/triplet = images embedded per mined (or loss-active) triplet.")


if __name__ == "__main__":
    main()
