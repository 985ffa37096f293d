"""Training hyperparameters as one plain dataclass, so a run can be named, saved and compared.

Each field that the user can set declares its flag, help text, params.yaml key and run-name label
once, in its metadata (`common.settings.setting_field`): the argparse options of both front ends,
the params.yaml mapping, the run folder's name and the run listing are generated from here.

Everything here is a plain Python type: the config goes into `hparams.json` and into every
checkpoint, and both must load with `torch.load(weights_only=True)` and `json.load`.
"""
from __future__ import annotations

import argparse
import re
from dataclasses import asdict, dataclass, fields
from typing import Any

from common.argtypes import non_negative_int, positive_float, positive_int
from common.errors import UserError
from common.settings import PIPELINE, Setting, field_name_parts, field_settings, setting_field
from training.augment import LEVELS as AUGMENT_LEVELS
from training.mining import STRATEGIES

SCHEDULE_CHOICES = ("cosine", "exponential")
DEVICE_PATTERN = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")
NAMING = "training hyperparameters (they name the run folder)"
CONTROL = "training run control"


def device_name(text: str) -> str:
    """argparse type for --device, checked here so a typo is a usage error, not a torch traceback."""
    if not DEVICE_PATTERN.match(text):
        raise argparse.ArgumentTypeError(f"{text!r}: use auto, cpu, mps, cuda or cuda:N")
    return text


@dataclass
class TrainConfig:
    """Hyperparameters of one training run.

    lr_schedule: "cosine" (default): the learning rate rises linearly from 0 over
        ``warmup_steps`` optimizer steps, then follows a half cosine from ``learning_rate`` down to
        0 at the last step of ``epochs`` (see training.schedule). "exponential": the previous
        behaviour, ``learning_rate x lr_decay**epoch``, no warm-up.
    lr_decay: used by the exponential schedule only: the learning rate is multiplied by
        ``lr_decay`` after *every* epoch. The original multiplied it every 10 epochs; per-epoch
        actually anneals over a 50-epoch run (0.95**50 ~ 0.08 instead of 0.95**5 ~ 0.77).
    warmup_steps: optimizer steps of linear warm-up (cosine schedule); counted in steps, so it
        does not depend on how many images an epoch holds.
    augment: "none", "light" (flip, small crop/shift, brightness/contrast: the previous
        default) or "strong" (product photos: resized crops with aspect change, rotation,
        perspective, blur, colour jitter with a small hue shift, random erasing); training.augment.
    image_size: the model's input size in pixels (set by the front end from the built model).
    xbm: cross-batch memory size in embeddings (0 = off): triplets are also mined between the
        batch and the embeddings of the recent batches of the epoch (training.xbm).
    margin: triplet margin on Euclidean distances of the model's output embeddings. 0.2 is the
        FaceNet value for L2-normalised embeddings (distances in [0, 2]); the original used 1.0
        with unnormalised outputs.
    mining: "semihard" (FaceNet), "hard" (batch-hard) or "all" (batch-all); see training.loss.
    batch_size: images per step on each process, = P items x K (``images_per_item``) images.
    embedding_size, pretrained, freeze_backbone: how the model was built; they change what
        training produces, so they name the run folder (``pretrained`` is set from the model).
    amp: mixed precision (float16 autocast + GradScaler), CUDA only; None = on when on CUDA.
    """

    model: str
    epochs: int = setting_field(
        50, flags=("--epochs",), type=positive_int, group=CONTROL, front_ends=PIPELINE,
        param="train.epochs", help="train up to this epoch (raise it to continue a finished run)")
    batch_size: int = setting_field(
        64, flags=("--batch_size",), type=positive_int, group=NAMING, param="train.batch_size",
        help="images per step, P items x K images")
    images_per_item: int = setting_field(
        4, flags=("-K", "--images_per_item"), type=positive_int, group=NAMING,
        param="train.images_per_item", label="K", reference=4, help="K images of each item per batch")
    learning_rate: float = setting_field(
        1e-3, flags=("-lr", "--learning_rate"), type=positive_float, group=NAMING, param="train.lr",
        help="Adam learning rate: the peak of the schedule")
    lr_schedule: str = setting_field(
        "cosine", flag_default=None, flags=("--lr_schedule",), choices=SCHEDULE_CHOICES, group=NAMING,
        param="train.lr_schedule", help="cosine: linear warm-up over --warmup_steps, then a half cosine "
        "to 0 at the last epoch; exponential: x --lr_decay per epoch, no warm-up (default: cosine, "
        "exponential when -lrd is given)")
    lr_decay: float = setting_field(
        0.95, flag_default=None, flags=("-lrd", "--lr_decay"), type=positive_float, group=NAMING,
        param="train.lr_decay", help="exponential schedule: learning rate x this after every epoch "
        "(the original: every 10 epochs); giving it selects --lr_schedule exponential, as earlier "
        "versions trained (default when exponential: 0.95)")
    warmup_steps: int = setting_field(
        100, flag_default=None, flags=("--warmup_steps",), type=non_negative_int, group=NAMING,
        param="train.warmup_steps", label="warmup", reference=0,
        help="cosine schedule: optimizer steps of linear warm-up (default 100)")
    margin: float = setting_field(
        0.2, flags=("--margin",), type=positive_float, group=NAMING, param="train.margin",
        label="margin", reference=0.2, help="triplet margin on L2-normalised embeddings")
    mining: str = setting_field(
        "semihard", flags=("--mining",), choices=tuple(STRATEGIES), group=NAMING, param="train.mining",
        label="mining", reference="semihard",
        help="online triplet mining: semihard, hard (batch-hard) or all (batch-all)")
    seed: int = setting_field(
        0, flags=("--seed",), type=int, group=NAMING, param="train.seed", label="seed", reference=0,
        help="training seed (batch order, augmentation, initialisation)")
    augment: str = setting_field(
        "light", flags=("--augment",), choices=AUGMENT_LEVELS, group=NAMING, param="train.augment",
        alias=("--no_augment", "none"), param_aliases=((False, "none"), (True, "light")),
        label="augment", reference="light",
        help="augmentation on the batch: none, light (flip, small crop, brightness/contrast) or "
             "strong (resized crops, rotation, perspective, blur, colour jitter, erasing); "
             "params.yaml's true/false mean light/none, as they did")
    xbm: int = setting_field(
        0, flags=("--xbm",), type=non_negative_int, metavar="N", group=NAMING, param="train.xbm",
        label="xbm", reference=0,
        help="cross-batch memory: also mine against the last N embeddings of the epoch (0 = off)")
    embedding_size: int | None = setting_field(
        None, flags=("--embedding_size",), type=positive_int, group=NAMING,
        param="train.embedding_size", label="emb", reference=None,
        help="embedding dimension (default: the model's own, e.g. 64 for simple_net)")
    image_size: int | None = setting_field(None, label="size", reference=None)
    pretrained: bool = setting_field(False, label="pretrained", reference=False)
    freeze_backbone: bool = setting_field(
        False, flags=("--freeze_backbone",), group=NAMING, label="frozen", reference=False,
        help="torchvision models: train only the embedding head (needs pretrained weights)")
    device: str = setting_field(
        "auto", flags=("--device",), type=device_name, group="device", param="train.device",
        help="auto (CUDA with mixed precision, else MPS, else CPU), cpu, cuda, cuda:N or mps")
    amp: bool | None = None
    num_workers: int = setting_field(
        1, flags=("--num_workers",), type=non_negative_int, group=CONTROL, front_ends=PIPELINE,
        param="train.num_workers", help="threads reading the next batches ahead of the training "
        "step (more help with --big_ims; 0 = read in the loop)")
    eval_every: int = setting_field(
        2, flags=("--eval_every",), type=positive_int, group=CONTROL, front_ends=PIPELINE,
        param="train.eval_every", help="evaluate every N epochs (the last epoch always)")
    save_every: int = setting_field(
        10, flags=("--save_every",), type=non_negative_int, group=CONTROL, front_ends=PIPELINE,
        param="train.save_every", help="keep a numbered <epoch>.pth every N epochs (and always at "
        "the end; 0 = only at the end); last.pth is rewritten after every epoch")

    def __post_init__(self) -> None:
        self.validate()

    @classmethod
    def from_args(cls, args: argparse.Namespace, model: str, **fixed: Any) -> "TrainConfig":
        """The config of ``model`` from parsed flags; fields the front end has no flag for keep
        their defaults (evaluate.py has no --epochs), ``fixed`` sets the others (``pretrained``)."""
        values = {name: spec.value_from(args) for name, spec in field_settings(cls).items()
                  if hasattr(args, spec.flag_dest())}
        values = {**values, **_schedule_defaults(values)}
        defaults = {f.name: f.default for f in fields(cls)}
        given = {name: value for name, value in values.items() if value is not None or defaults[name] is None}
        return cls(model=model, **{**given, **fixed})

    @property
    def items_per_batch(self) -> int:
        """P, the number of items in a batch of ``batch_size = P x K`` images."""
        return self.batch_size // self.images_per_item

    def validate(self) -> None:
        """Reject values that would fail later, naming the flag and the fix."""
        k, bs = self.images_per_item, self.batch_size
        if k < 2:
            raise UserError(f"--images_per_item {k}: need at least 2 images of an item per batch "
                            "to form anchor-positive pairs; use 2 or more (default 4)")
        if bs % k or bs // k < 2:
            nearest = max(2 * k, round(bs / k) * k)
            raise UserError(f"--batch_size {bs}: must be P items x K={k} images (--images_per_item) "
                            f"with P >= 2; use e.g. --batch_size {nearest}")
        for name, choices in (("mining", tuple(STRATEGIES)), ("lr_schedule", SCHEDULE_CHOICES),
                              ("augment", AUGMENT_LEVELS)):
            if getattr(self, name) not in choices:
                raise UserError(f"--{name} {getattr(self, name)}: unknown; choose one of {', '.join(choices)}")
        if not DEVICE_PATTERN.match(self.device):
            raise UserError(f"--device {self.device}: unknown; use auto, cpu, mps, cuda or cuda:N")
        for name, low in (("epochs", 0), ("eval_every", 1), ("save_every", 0), ("num_workers", 0),
                          ("warmup_steps", 0), ("xbm", 0)):
            if getattr(self, name) < low:
                raise UserError(f"--{name} {getattr(self, name)}: must be >= {low}")
        if self.learning_rate <= 0 or not 0 < self.lr_decay <= 1:
            raise UserError(f"--learning_rate {self.learning_rate} / --lr_decay {self.lr_decay}: "
                            "need learning_rate > 0 and 0 < lr_decay <= 1")
        if self.margin <= 0:
            raise UserError(f"--margin {self.margin}: must be > 0 (e.g. 0.2)")

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for hparams.json and checkpoints."""
        return asdict(self)



def _schedule_defaults(values: dict[str, Any]) -> dict[str, Any]:
    """The schedule flags left unset (None): ``-lrd`` without ``--lr_schedule`` means the
    exponential schedule, as every run that set it trained before the cosine one existed, and
    the exponential schedule has no warm-up."""
    schedule = values.get("lr_schedule") or ("exponential" if values.get("lr_decay") is not None else "cosine")
    warmup = values.get("warmup_steps")
    if warmup is None:
        warmup = TrainConfig.warmup_steps if schedule == "cosine" else 0
    return {"lr_schedule": schedule, "warmup_steps": warmup}


def name_parts() -> dict[str, tuple[str, Any]]:
    """field -> (label, reference) of the fields that name a run folder beyond LR/decay/BS."""
    return field_name_parts(TrainConfig)


def config_settings() -> list[Setting]:
    """The flags of the TrainConfig fields, in field order."""
    return list(field_settings(TrainConfig).values())
