"""Print the README's model table: size, cost and CPU training speed of every registered model.

    python -m misc.model_table                       # all models
    python -m misc.model_table -m simple simple_net  # some of them
    python -m misc.model_table --threads 1           # steadier on a busy machine

Throughput is measured on this machine's CPU (forward + backward, batch 32, best of a few steps),
so it is a quick comparison between models, not a benchmark; the torch thread count is printed
with the table.
"""
from __future__ import annotations

import argparse
import logging
from typing import Sequence

import torch

from common.cli import run_main
from models import MODEL_NAMES, build_model
from models.profile import count_parameters, flops_per_image, images_per_second

HEADER = ("| model | class | input | emb dim | parameters | GFLOPs/image | CPU train images/s (batch {bs}) |\n"
          "|---|---|---|---|---|---|---|")


def table_row(name: str, batch_size: int, steps: int) -> str:
    """One Markdown row; FLOPs are 2 x multiply-adds of the forward pass."""
    model = build_model(name)
    flops = flops_per_image(model)
    speed = images_per_second(model, batch_size=batch_size, steps=steps)
    speed_text = f"{speed:,.0f}" if model.trainable else f"{speed:,.0f} (forward only, no training)"
    flops_text = f"{flops / 1e9:.3f}" if flops else "0 (no conv/linear)"
    return (f"| `{name}` | `{type(model).__name__}` | {model.input_size} | {model.emb_dim} | "
            f"{count_parameters(model):,} | {flops_text} | {speed_text} |")


def main(argv: Sequence[str] | None = None) -> int:
    """Build each model, measure it and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-m", "--models", nargs="+", choices=MODEL_NAMES, default=list(MODEL_NAMES))
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per model (best one kept)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's choice); 1 gives steadier numbers "
                             "on a machine that other jobs are using")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    logging.getLogger("models").setLevel(logging.ERROR)   # "no pretrained weights" notices
    torch.manual_seed(0)
    print(HEADER.format(bs=args.batch_size))
    for name in args.models:
        print(table_row(name, args.batch_size, args.steps), flush=True)
    print(f"\n(torch {torch.__version__}, CPU threads: {torch.get_num_threads()})")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main))
