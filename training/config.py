"""Training hyperparameters as one plain dataclass, so a run can be named, saved and compared.

Everything here is a plain Python type: the config goes into `hparams.json` and into every
checkpoint, and both must load with `torch.load(weights_only=True)` and `json.load`.
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any

from misc.errors import UserError

MINING_CHOICES = ("semihard", "hard", "all")
SCHEDULE_CHOICES = ("cosine", "exponential")
AUGMENT_CHOICES = ("none", "light", "strong")
DEVICE_PATTERN = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


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
        training produces, so they name the run folder (set by the front end from the model).
    device: "auto" (CUDA, else MPS, else CPU), "cpu", "mps", "cuda" or "cuda:N".
    amp: mixed precision (float16 autocast + GradScaler), CUDA only; None = on when on CUDA.
    num_workers: background threads that read and stage the next batches (0 = in the loop).
    save_every: checkpoint every this many epochs (0: only the last); the last is always saved.
    eval_every: evaluate every this many epochs; the last epoch is always evaluated.
    """

    model: str
    epochs: int = 50
    batch_size: int = 64
    images_per_item: int = 4
    learning_rate: float = 1e-3
    lr_schedule: str = "cosine"
    lr_decay: float = 0.95
    warmup_steps: int = 100
    margin: float = 0.2
    mining: str = "semihard"
    seed: int = 0
    augment: str = "strong"
    xbm: int = 0
    embedding_size: int | None = None
    image_size: int | None = None
    pretrained: bool = False
    freeze_backbone: bool = False
    device: str = "auto"
    amp: bool | None = None
    num_workers: int = 2
    eval_every: int = 2
    save_every: int = 10

    def __post_init__(self) -> None:
        self.validate()

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
        if self.mining not in MINING_CHOICES:
            raise UserError(f"--mining {self.mining}: unknown; choose one of {', '.join(MINING_CHOICES)}")
        for name, choices in (("lr_schedule", SCHEDULE_CHOICES), ("augment", AUGMENT_CHOICES)):
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
