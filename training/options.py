"""The command line of a training run, shared by pipeline.py and evaluate.py.

evaluate.py finds a run folder from the same hyperparameters that named it, so both front ends
must declare them identically: every setting is declared once (data/settings.py, the fields of
training/config.py, the run settings below, evaluation/settings.py) and both parsers, the
params.yaml mapping and the run folder's name are generated from those declarations.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from common.argtypes import positive_int
from common.cli import DefaultsHelpFormatter, SuggestingParser
from common.params import add_params_option, write_effective_params
from common.settings import EVALUATE, PIPELINE, Setting, add_settings
from data.settings import DATA_SETTINGS
from evaluation.settings import REPORT_SETTINGS
from models import MODEL_NAMES
from models.original_nets import ORIGINAL_NAMES
from training.config import NAMING, TrainConfig, config_settings

DEFAULT_SAVE_DIR = "data/files_to_gitignore/models"
DEFAULT_MODELS = ["simple", "simple_net"]
DEFAULT_MODEL = "simple_net"

RUN_SETTINGS = (
    Setting(("-m", "--models_list"), default=DEFAULT_MODELS, nargs="+", choices=tuple(MODEL_NAMES),
            metavar="MODEL", group="models", front_ends=PIPELINE, param="train.model",
            help=f"models to train and compare: {', '.join(MODEL_NAMES)}"),
    Setting(("--model",), default=DEFAULT_MODEL, choices=tuple(MODEL_NAMES) + ORIGINAL_NAMES, group="models",
            front_ends=EVALUATE, param="train.model",
            help="model to evaluate; original_* are the original project's networks, for its published "
                 "runs (simple_net, big_net, facenet find those too)"),
    Setting(("--save_dir",), default=DEFAULT_SAVE_DIR, group=NAMING, param="train.save_dir",
            help="where run folders are kept"),
    Setting(("--image_size",), default=None, type=positive_int, group=NAMING, param="train.image_size",
            help="input size in pixels of every model (default: each model's own, e.g. simple_net 64, "
                 "big_net 96); the cache is built per size"),
    Setting(("--pretrained_weights",), default=None, metavar="FILE", group=NAMING,
            help="torchvision models: a local ImageNet state_dict for the backbone "
                 "(else --pretrained, else torchvision's local cache)"),
    Setting(("--pretrained",), default=False, group=NAMING,
            help="torchvision models: download torchvision's ImageNet weights into the torch hub cache "
                 "(verified by the hash in their name; $SNAP_VISION_PRETRAINED_URL overrides the URL)"),
)

ALL_SETTINGS: tuple[Setting, ...] = (*RUN_SETTINGS, *DATA_SETTINGS, *config_settings(), *REPORT_SETTINGS)


def new_parser(description: str, front_end: str) -> argparse.ArgumentParser:
    """A front end's parser with every shared setting it takes, --params and --debug.

    Defaults are printed by the formatter (help texts never repeat them), and abbreviations
    are off: ``--epoch 2`` must not silently mean ``--epochs`` (the error suggests it instead).
    """
    parser = SuggestingParser(description=description, allow_abbrev=False,
                              formatter_class=DefaultsHelpFormatter)
    add_settings(parser, ALL_SETTINGS, front_end)
    add_params_option(parser)
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    return parser


def config_from_args(args: argparse.Namespace, model_name: str, model: Any) -> TrainConfig:
    """The TrainConfig whose run folder this model and command line train into (or load from)."""
    return TrainConfig.from_args(args, model_name, pretrained=bool(getattr(model, "pretrained", False)),
                                 image_size=getattr(model, "input_size", None))


def model_kwargs(args: argparse.Namespace) -> dict:
    """Constructor options from the command line; build_model drops those a model does not take."""
    chosen = {"emb_dim": args.embedding_size, "input_size": args.image_size,
              "pretrained_weights": args.pretrained_weights,
              "freeze_backbone": args.freeze_backbone, "pretrained": args.pretrained}
    return {key: value for key, value in chosen.items() if value not in (None, False)}


def save_effective_params(args: argparse.Namespace, run_dir: Path, model_name: str) -> Path:
    """The run folder's params.yaml: the values this model actually trained with."""
    return write_effective_params(args, run_dir, ALL_SETTINGS, {"train.model": model_name})
