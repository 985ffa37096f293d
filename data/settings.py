"""The data settings both front ends take: where images come from and how items are split."""
from __future__ import annotations

from common.settings import Setting

GROUP = "data"

DATA_SETTINGS = (
    Setting(("--dataset",), default="synthetic", group=GROUP, param="data.dataset",
            help="synthetic (built in), uob (the original UoB set, downloaded), an http(s)/file URL "
                 "of a zip/tar, or a local folder or archive"),
    Setting(("--dataset_dir",), default="data", group=GROUP, param="data.dataset_dir",
            help="where datasets are stored, extracted and cached"),
    Setting(("--big_ims",), default=False, group=GROUP, param="data.big_ims",
            help="read full-size image files per sample instead of the decoded cache"),
    Setting(("--eval_fraction",), default=0.2, type=float, group=GROUP, param="data.eval_fraction",
            help="fraction of items held out for evaluation"),
    Setting(("--split_seed",), default=0, type=int, group=GROUP, param="data.split_seed",
            help="seed of the item split; keep it fixed so evaluation never sees trained items"),
    Setting(("--data_seed",), default=0, type=int, group=GROUP, param="data.data_seed",
            help="seed of the built-in synthetic dataset (apart from --seed, so seed studies train "
                 "on the same data)"),
    Setting(("--split",), default=None, group=GROUP, param="data.split",
            help="for pre-split archives: which split to evaluate on (val, eval, test)"),
)
