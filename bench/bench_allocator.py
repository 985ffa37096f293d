"""What keeping freed memory (common/allocator.py) buys a CPU training run, side by side.

Each configuration trains in its own fresh process (the allocator's state is per process and
cannot be undone), through the real trainer on random in-memory images, alternating "kept" and
"glibc default" runs so a change in the machine's load hits both. It prints the median epoch
time, page faults per step and peak memory of each, and the ratio.

    python bench/bench_allocator.py [--model simple_net] [--epochs 6] [--rounds 2]
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
from dataclasses import replace
from functools import partial
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import common.allocator  # noqa: E402
import training.trainer  # noqa: E402
from bench.bench_checkpoint import epoch_seconds  # noqa: E402
from bench.bench_train import RandomImages  # noqa: E402
from models import build_model  # noqa: E402
from training.config import TrainConfig  # noqa: E402

MODES = ("kept", "glibc default")


def child(mode: str, model_name: str, epochs: int, steps: int) -> dict[str, float]:
    """Train ``epochs`` epochs in this process; epoch 1 (warm-up, then resumed from) is left out
    of the numbers, page faults included."""
    if mode == "glibc default":
        training.trainer.keep_freed_memory = lambda: False
    torch.manual_seed(0)
    model = build_model(model_name)
    config = TrainConfig(model=model_name, epochs=epochs, eval_every=epochs + 1)
    images = RandomImages(steps * config.batch_size, model.input_size, config.images_per_item)
    with tempfile.TemporaryDirectory() as tmp:
        train = partial(training.trainer.train, model=model, train_set=images, eval_set=None,
                        save_dir=Path(tmp), log=lambda _: None)
        train(replace(config, epochs=1))
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        result = train(config)  # resumes: epochs 2..epochs
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
        seconds = epoch_seconds(result.run_dir)
    return {"seconds": seconds, "faults": faults / ((epochs - 1) * steps),
            "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "kept": common.allocator.keep_freed_memory() if mode == "kept" else False}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="simple_net")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--steps", type=int, default=32, help="steps per epoch")
    parser.add_argument("--rounds", type=int, default=2, help="runs of each configuration")
    parser.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.model, args.epochs, args.steps)))
        return
    runs: dict[str, list[dict[str, float]]] = {mode: [] for mode in MODES}
    for round_ in range(args.rounds):
        for mode in MODES[::-1] if round_ % 2 else MODES:  # each goes first in turn
            out = subprocess.run([sys.executable, __file__, "--child", mode, "--model", args.model,
                                  "--epochs", str(args.epochs), "--steps", str(args.steps)],
                                 check=True, capture_output=True, text=True).stdout
            runs[mode].append(json.loads(out.splitlines()[-1]))
    if not runs["kept"][0]["kept"]:
        print("not glibc, or the allocator is set by the user: both rows run with the same allocator")
    print(f"{args.model}, batch {TrainConfig.batch_size}, {args.steps} steps per epoch, "
          f"{torch.get_num_threads()} threads; medians over epochs 2-{args.epochs} of {args.rounds} "
          f"runs each\n")
    print("| allocator | epoch s (each run) | page faults per step | peak RSS MB | epoch time vs kept |")
    print("|-----------|--------------------|----------------------|-------------|--------------------|")
    kept = statistics.median(r["seconds"] for r in runs["kept"])
    for mode in MODES:
        rows = runs[mode]
        seconds = statistics.median(r["seconds"] for r in rows)
        each = ", ".join(f"{r['seconds']:.2f}" for r in rows)
        print(f"| {mode} | {seconds:.2f} ({each}) | {statistics.median(r['faults'] for r in rows):,.0f} "
              f"| {max(r['rss_mb'] for r in rows):,.0f} | {seconds / kept:.2f}x |")


if __name__ == "__main__":
    main()
