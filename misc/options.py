"""Command-line options shared by pipeline.py and evaluate.py.

evaluate.py finds a run folder from the same training hyperparameters that named it, so both
front ends must declare them identically: they are declared once, here.
"""
from __future__ import annotations

import argparse
import math

from misc.params import add_params_option
from training.config import AUGMENT_CHOICES, DEVICE_PATTERN, SCHEDULE_CHOICES, TrainConfig

DEFAULT_WARMUP_STEPS = TrainConfig.warmup_steps

DEFAULT_SAVE_DIR = "data/files_to_gitignore/models"


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (epochs, batch sizes, counts)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number")
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0 (e.g. --num_workers, --save_every 0 = only at the end)."""
    value = int(text) if text.lstrip("-").isdigit() else None
    if value is None or value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be a whole number >= 0")
    return value


def positive_float(text: str) -> float:
    """argparse type: a finite float > 0 (learning rate, margin); 'inf' would only diverge."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number")
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"{value} must be a finite number greater than 0")
    return value


def device_name(text: str) -> str:
    """argparse type for --device, checked here so a typo is a usage error, not a torch traceback."""
    if not DEVICE_PATTERN.match(text):
        raise argparse.ArgumentTypeError(f"{text!r}: use auto, cpu, mps, cuda or cuda:N")
    return text


def add_data_options(parser: argparse.ArgumentParser) -> None:
    """Where images come from and how they are split."""
    group = parser.add_argument_group("data")
    group.add_argument("--dataset", default="synthetic",
                       help="synthetic (built in, default), uob (original UoB set, downloaded), "
                            "an http(s)/file URL of a zip/tar, or a local folder or archive")
    group.add_argument("--dataset_dir", default="data",
                       help="where datasets are stored, extracted and cached (default: data)")
    group.add_argument("--big_ims", action="store_true",
                       help="read full-size image files per sample instead of the decoded cache")
    group.add_argument("--eval_fraction", type=float, default=0.2,
                       help="fraction of items held out for evaluation (default 0.2)")
    group.add_argument("--split_seed", type=int, default=0,
                       help="seed of the item split; keep it fixed so evaluation never sees "
                            "trained items (default 0)")
    group.add_argument("--split", default=None,
                       help="for pre-split archives: which split to evaluate on (val, eval, test)")


def add_run_options(parser: argparse.ArgumentParser) -> None:
    """The training hyperparameters that name a run folder (and so find it again)."""
    group = parser.add_argument_group("training hyperparameters (they name the run folder)")
    group.add_argument("--save_dir", default=DEFAULT_SAVE_DIR,
                       help=f"where run folders are kept (default: {DEFAULT_SAVE_DIR})")
    group.add_argument("--batch_size", type=positive_int, default=TrainConfig.batch_size,
                       help=f"images per step, P items x K images (default {TrainConfig.batch_size})")
    group.add_argument("-lr", "--learning_rate", type=positive_float, default=TrainConfig.learning_rate,
                       help=f"Adam learning rate: the peak of the schedule (default {TrainConfig.learning_rate})")
    group.add_argument("-lrd", "--lr_decay", type=positive_float, default=None,
                       help="exponential schedule: learning rate x this after every epoch; giving it "
                            "selects --lr_schedule exponential, as earlier versions trained "
                            f"(default when exponential: {TrainConfig.lr_decay})")
    group.add_argument("--lr_schedule", choices=SCHEDULE_CHOICES, default=None,
                       help="cosine: linear warm-up over --warmup_steps, then a half cosine to 0 at "
                            "the last epoch; exponential: x --lr_decay per epoch, no warm-up "
                            "(default: cosine, exponential when -lrd is given)")
    group.add_argument("--warmup_steps", type=non_negative_int, default=None,
                       help=f"cosine schedule: optimizer steps of linear warm-up (default {DEFAULT_WARMUP_STEPS})")
    group.add_argument("-K", "--images_per_item", type=positive_int, default=TrainConfig.images_per_item,
                       help=f"K images of each item per batch (default {TrainConfig.images_per_item})")
    group.add_argument("--margin", type=positive_float, default=0.2,
                       help="triplet margin on L2-normalised embeddings (default 0.2)")
    group.add_argument("--mining", choices=("semihard", "hard", "all"), default="semihard",
                       help="online triplet mining: semihard (default), hard (batch-hard) or all")
    group.add_argument("--seed", type=int, default=0, help="training seed (default 0)")
    group.add_argument("--augment", choices=AUGMENT_CHOICES, default=TrainConfig.augment,
                       help="augmentation on the batch: none, light (flip, small crop, brightness/"
                            "contrast) or strong (resized crops, rotation, perspective, blur, colour "
                            f"jitter, erasing) (default {TrainConfig.augment})")
    group.add_argument("--no_augment", dest="augment", action="store_const", const="none",
                       help="same as --augment none")
    group.add_argument("--xbm", type=non_negative_int, default=TrainConfig.xbm, metavar="N",
                       help="cross-batch memory: also mine against the last N embeddings of the "
                            "epoch (0 = off, the default)")
    group.add_argument("--image_size", type=positive_int, default=None,
                       help="input size in pixels of every model (default: each model's own, "
                            "e.g. simple_net 64, big_net 96); the cache is built per size")
    group.add_argument("--embedding_size", type=positive_int, default=None,
                       help="embedding dimension (default: the model's own, e.g. 64 for simple_net)")
    group.add_argument("--pretrained_weights", default=None, metavar="FILE",
                       help="torchvision models: a local ImageNet state_dict for the backbone "
                            "(else torchvision's local cache; nothing is downloaded)")
    group.add_argument("--freeze_backbone", action="store_true",
                       help="torchvision models: train only the embedding head (needs pretrained weights)")


def add_common_options(parser: argparse.ArgumentParser) -> None:
    """Device and debugging switches."""
    parser.add_argument("--device", type=device_name, default="auto",
                        help="auto (CUDA with mixed precision, else MPS, else CPU), cpu, cuda or mps")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")


def run_fields(args: argparse.Namespace) -> dict:
    """The TrainConfig fields `add_run_options` declares, from parsed args (they name the run).

    ``-lrd`` without ``--lr_schedule`` means the exponential schedule (how it trained before the
    cosine one existed), which has no warm-up.
    """
    schedule = args.lr_schedule or ("exponential" if args.lr_decay is not None else "cosine")
    warmup = args.warmup_steps
    if warmup is None:
        warmup = DEFAULT_WARMUP_STEPS if schedule == "cosine" else 0
    return {"batch_size": args.batch_size, "images_per_item": args.images_per_item,
            "learning_rate": args.learning_rate, "lr_schedule": schedule,
            "lr_decay": TrainConfig.lr_decay if args.lr_decay is None else args.lr_decay,
            "warmup_steps": warmup, "margin": args.margin, "mining": args.mining,
            "seed": args.seed, "augment": args.augment, "xbm": args.xbm,
            "embedding_size": args.embedding_size, "freeze_backbone": args.freeze_backbone}


def add_shared_options(parser: argparse.ArgumentParser) -> None:
    """Everything pipeline.py and evaluate.py both take: data, run hyperparameters, device, --params."""
    add_data_options(parser)
    add_run_options(parser)
    add_common_options(parser)
    add_params_option(parser)
