"""The training loop: P x K batches -> embeddings -> online-mined triplet loss -> Adam.

One call of `train` trains one model up to ``config.epochs`` in its run folder, resuming from the
folder's latest checkpoint when there is one. Every image in a batch is embedded once per step and
triplets are mined among the batch's embeddings (gathered from every process under torchrun),
instead of the original's three forward passes per triplet.
"""
from __future__ import annotations

import math
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from common.allocator import keep_freed_memory
from common.errors import UserError
from data.dataset import ImageSet
from data.identity import DataIdentity
from data.tensors import to_tensor
from evaluation.protocol import EvalTarget, score
from evaluation.report import in_percent
from training.augment import augment
from training.checkpoints import CheckpointSaver, has_checkpoints, load_model_state, restore_rng_states, rng_states
from training.config import TrainConfig
from training.diagnostics import batch_diagnostics, epoch_diagnostics
from training.distributed import DistContext, gather_batch, setup
from training.loss import triplet_loss
from training.runs import STATS_FILE, RunLock, StatsFile, bind_data, remove_temp_files, run_folder, write_hparams
from training.sampler import PKSampler
from training.schedule import learning_rate
from training.xbm import CrossBatchMemory

EVAL_K = 5  # "evaluation score" = in_any@5, as in the original


@dataclass
class TrainResult:
    """What a `train` call did: where, up to which epoch, and the last evaluation."""

    run_dir: Path
    last_epoch: int
    epochs_trained: int
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass
class _Training:
    """The objects one step needs, so the loop functions take one argument instead of ten."""

    config: TrainConfig
    ctx: DistContext
    net: nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    amp: bool
    memory: CrossBatchMemory | None


def train(config: TrainConfig, model: nn.Module, train_set: ImageSet, eval_set: EvalTarget | None,
          save_dir: Path, *, data: DataIdentity | None = None, accept_changed_data: bool = False,
          log: Callable[[str], None] = tqdm.write) -> TrainResult:
    """Train ``model`` (built from ``config.model``) on ``train_set``; evaluate on ``eval_set``.

    The run folder is ``save_dir/<dataset name>/<run_name>`` (``save_dir/<run_name>`` without
    ``data``); re-running the same configuration on the same data resumes there, changed data is
    refused unless ``accept_changed_data``, and a configuration already trained to
    ``config.epochs`` trains nothing. Under torchrun every process calls this; rank 0 alone
    evaluates, writes and logs.
    """
    ctx = setup(config.device)
    _check_inputs(config, model, train_set)
    keep_freed_memory()  # steps reuse their freed tensors instead of page-faulting them back in
    sampler = PKSampler(train_set.labels, config.items_per_batch, config.images_per_item,
                        config.seed, ctx.rank, ctx.world_size)
    model.to(ctx.device)
    amp = _use_amp(config, ctx.device, log if ctx.is_main else None)
    trainable = [p for p in model.parameters() if p.requires_grad]  # frozen backbones stay out
    optimizer = torch.optim.Adam(trainable, lr=config.learning_rate)
    scaler = torch.amp.GradScaler(ctx.device.type, enabled=amp)
    run_dir = run_folder(save_dir, type(model).__name__, config, data and data.name)
    saver = CheckpointSaver(run_dir, config.save_every)
    if ctx.is_main and data is not None:
        _note_legacy_run(Path(save_dir) / run_dir.name, run_dir, log)

    with _claim(ctx, run_dir, data, train_set, accept_changed_data):
        start, metrics = _resume(saver, config, model, optimizer, scaler)
        stats = StatsFile(run_dir / STATS_FILE) if ctx.is_main else None
        if stats:
            write_hparams(run_dir, config.model, type(model).__name__, config, data)
            stats.truncate(start)
        if start >= config.epochs:
            return _finished(saver, config, model, start, metrics, log if ctx.is_main else None)
        if ctx.is_main and start:
            log(f"resuming {run_dir} from epoch {start}")
        if stats and start == 0 and not stats.rows:
            metrics = _evaluate(model, eval_set, config, ctx.device)
            stats.add({"epoch": 0, **metrics})
            log(_epoch_line(0, config.epochs, {}, metrics))

        net = _wrap(model, ctx)
        memory = CrossBatchMemory(config.xbm) if config.xbm else None
        training = _Training(config, ctx, net, optimizer, scaler, amp, memory)
        epochs = tqdm(range(start + 1, config.epochs + 1), initial=start, total=config.epochs,
                      desc=run_dir.name, disable=_bars_off(ctx), unit="epoch")
        for epoch in epochs:
            started = time.perf_counter()
            progress = _train_epoch(training, train_set, sampler, epoch)
            progress["seconds"] = round(time.perf_counter() - started, 2)
            _stop_if_diverged(model, progress["mean training loss"], epoch, saver)
            if ctx.is_main:
                last = epoch == config.epochs
                metrics = _evaluate(model, eval_set, config, ctx.device) \
                    if last or epoch % config.eval_every == 0 else {}
                stats.add({"epoch": epoch, **progress, **metrics})
                saver.save(epoch, _checkpoint_state(config, model, optimizer, scaler, metrics, data),
                           final=last, score=metrics.get("evaluation score"))
                log(_epoch_line(epoch, config.epochs, progress, metrics))
            ctx.barrier()
        if ctx.is_main:
            log(f"saved {run_dir}: epochs {start + 1}-{config.epochs}, {_best_text(saver)}")
    return TrainResult(run_dir, config.epochs, config.epochs - start, metrics)


def _best_text(saver: CheckpointSaver) -> str:
    if saver.best_score is None:
        return "not evaluated"
    return f"best {saver.best_score:.2f}% at epoch {saver.best_epoch}"


def _finished(saver: CheckpointSaver, config: TrainConfig, model: nn.Module, reached: int,
              metrics: dict[str, float], log: Callable[[str], None] | None) -> TrainResult:
    """A run already at or past ``config.epochs``: train nothing; below it, load the asked epoch.

    ``--epochs N`` under what a run reached means "the model after N epochs": ``N.pth`` when it
    was kept, else the newest checkpoint saved before N, and one line says which and why.
    """
    if reached == config.epochs:
        if log:
            log(f"{saver.run_dir}: already trained to epoch {reached}; raise --epochs to continue")
        return TrainResult(saver.run_dir, reached, 0, metrics)
    checkpoint = saver.nearest(config.epochs)
    load_model_state(model, checkpoint, config.model)
    if log:
        why = "its checkpoint" if checkpoint.epoch == config.epochs else \
            f"no checkpoint of epoch {config.epochs} was kept (saved: {saver.listing()})"
        log(f"{saver.run_dir}: trained to epoch {reached}; --epochs {config.epochs} uses epoch "
            f"{checkpoint.epoch} ({checkpoint.path.name}): {why}")
    return TrainResult(saver.run_dir, checkpoint.epoch, 0, checkpoint.state.get("metrics", {}))


def _check_inputs(config: TrainConfig, model: nn.Module, train_set: ImageSet) -> None:
    if not getattr(model, "trainable", True):
        raise UserError(f"{config.model}: a fixed baseline with nothing to train; evaluate it directly")
    if train_set.size != model.input_size:
        raise ValueError(f"training images are {train_set.size} px but {config.model} takes "
                         f"{model.input_size} px; prepare the splits at the model's input_size")


def _use_amp(config: TrainConfig, device: torch.device, log: Callable[[str], None] | None) -> bool:
    """Mixed precision on CUDA by default; CPU/MPS train in float32 (AMP there rarely pays)."""
    if device.type != "cuda":
        if config.amp and log:
            log(f"mixed precision is only used on CUDA; training in float32 on {device}")
        return False
    return config.amp is not False


def _note_legacy_run(legacy: Path, run_dir: Path, log: Callable[[str], None]) -> None:
    """One line when the same flags trained a run before runs were bound to their dataset."""
    if legacy != run_dir and has_checkpoints(legacy) and not run_dir.exists():
        log(f"note: {legacy} was trained before runs recorded their dataset (dataset unknown); it "
            f"is kept as it is (evaluate it with --run_dir); this run trains in {run_dir}")


@contextmanager
def _claim(ctx: DistContext, run_dir: Path, data: DataIdentity | None, train_set: ImageSet,
           accept_changed_data: bool) -> Iterator[None]:
    """Rank 0 creates and locks the run folder, checks it was trained on ``data`` and clears a
    killed run's temp files; all ranks wait (and stop together when rank 0 refuses)."""
    if not ctx.is_main:
        ctx.wait_for_main()
        yield
        return
    with ExitStack() as held:
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
            held.enter_context(RunLock(run_dir))
            remove_temp_files(run_dir)
            if data is not None:
                bind_data(run_dir, data, train_set.paths, accept_change=accept_changed_data)
        except BaseException:
            ctx.release(go_on=False)
            raise
        ctx.release(go_on=True)
        yield


def _resume(saver: CheckpointSaver, config: TrainConfig, model: nn.Module,
            optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler) -> tuple[int, dict[str, float]]:
    """Restore the newest readable checkpoint; return (its epoch, its metrics), or (0, {}).

    The learning rate needs no state: training.schedule computes it from the step counter,
    which is the checkpoint's epoch times the steps per epoch.
    """
    checkpoint = saver.resume()
    if checkpoint is None:
        return 0, {}
    state = checkpoint.state
    load_model_state(model, checkpoint, config.model)
    optimizer.load_state_dict(state["optimizer"])
    if scaler.is_enabled() and state["grad_scaler"]:  # empty when saved by a float32 run
        scaler.load_state_dict(state["grad_scaler"])
    restore_rng_states(state["rng"])
    return checkpoint.epoch, state["metrics"]


def _wrap(model: nn.Module, ctx: DistContext) -> nn.Module:
    """DistributedDataParallel under torchrun (it averages gradients), the model itself otherwise."""
    if ctx.world_size == 1:
        return model
    device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids)


def _train_epoch(t: _Training, train_set: ImageSet, sampler: PKSampler, epoch: int) -> dict[str, float]:
    """One epoch of steps; returns its stats-row values: mean loss over finite steps, mean active
    triplets per step, the learning rate of its first step and the diagnostics columns.

    Sums stay on the device and are read once at the end, so steps never wait for the GPU.
    """
    t.net.train()
    device = t.ctx.device
    generator = torch.Generator().manual_seed(_seed(t.config.seed, epoch, t.ctx.rank))
    loss_sum, finite_steps, active, mined = (torch.zeros((), device=device) for _ in range(4))
    diagnostics = torch.zeros(3, device=device)
    if t.memory:
        t.memory.reset()
    first_step = (epoch - 1) * len(sampler)
    batches = _load_batches(train_set, sampler.batches(epoch), t.config.num_workers,
                            pin=device.type == "cuda")
    for step, (images, labels, rows) in enumerate(tqdm(batches, total=len(sampler), desc=f"epoch {epoch}",
                                                       leave=False, disable=_bars_off(t.ctx), unit="step")):
        _set_lr(t.optimizer, learning_rate(t.config, first_step + step, len(sampler)))
        x = augment(to_tensor(images.to(device, non_blocking=True)), generator, t.config.augment)
        with torch.autocast(device.type, dtype=torch.float16, enabled=t.amp):
            embeddings = t.net(x)
        embeddings, labels, rows = gather_batch(t.ctx, embeddings, labels.to(device, non_blocking=True),
                                                rows.to(device, non_blocking=True))
        loss, step_active, step_mined = _loss(t, embeddings, labels, rows)
        t.optimizer.zero_grad(set_to_none=True)
        t.scaler.scale(loss).backward()
        t.scaler.step(t.optimizer)
        t.scaler.update()
        finite = torch.isfinite(loss.detach())
        loss_sum += torch.where(finite, loss.detach(), 0.0)
        finite_steps += finite
        active += step_active
        mined += step_mined
        diagnostics += batch_diagnostics(embeddings, labels)
    steps = finite_steps.item()
    return {"mean training loss": loss_sum.item() / steps if steps else math.nan,
            "triplets": active.item() / len(sampler),
            "lr": learning_rate(t.config, first_step, len(sampler)),
            **epoch_diagnostics(diagnostics, len(sampler), active.item(), mined.item())}


def _loss(t: _Training, embeddings: Tensor, labels: Tensor, rows: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(loss, active triplets, mined triplets) of a step: in-batch mining, plus the cross-batch
    memory's triplets when it is on (the memory then remembers this batch). ``rows`` (dataset
    rows) keep a repeated image from being its own positive, in the batch and in the memory."""
    out = triplet_loss(embeddings, labels, t.config.margin, t.config.mining, rows)
    if t.memory is None:
        return out
    remembered = t.memory.loss(embeddings, labels, rows, t.config.margin, t.config.mining)
    t.memory.add(embeddings, labels, rows)
    if remembered is None:
        return out
    return (out.loss + remembered.loss, out.active + remembered.active, out.mined + remembered.mined)


def _set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def _bars_off(ctx: DistContext) -> bool | None:
    """Progress bars on rank 0 only, and (None) only on a terminal, so log files stay clean."""
    return None if ctx.is_main else True


def _seed(*parts: int) -> int:
    """A 63-bit seed mixing the parts, so epochs and ranks get unrelated random streams."""
    return int(np.random.SeedSequence(list(parts)).generate_state(2, np.uint64)[0] >> np.uint64(1))


def _load_batches(image_set: ImageSet, batches: list[np.ndarray], workers: int,
                  pin: bool) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
    """(uint8 images, labels, dataset rows) per batch; ``workers`` threads read ahead while the
    model computes. The rows let mining tell a repeated image from another photo of its item.

    Images travel as uint8 and become float on the device: 4x less to copy than float32.
    """
    def load(rows: np.ndarray) -> tuple[Tensor, Tensor, Tensor]:
        images = torch.from_numpy(np.ascontiguousarray(image_set.batch(rows)))
        return (images.pin_memory() if pin else images), torch.from_numpy(image_set.labels[rows]), \
            torch.from_numpy(rows)

    if workers == 0:
        yield from map(load, batches)
        return
    with ThreadPoolExecutor(workers) as pool:
        ahead = deque(pool.submit(load, rows) for rows in batches[:2 * workers])
        for rows in batches[2 * workers:]:
            yield ahead.popleft().result()
            ahead.append(pool.submit(load, rows))
        while ahead:
            yield ahead.popleft().result()


def _stop_if_diverged(model: nn.Module, loss: float, epoch: int, saver: CheckpointSaver) -> None:
    """Stop before anything is written when the weights are no longer finite numbers.

    A NaN loss in a mixed-precision step alone is not fatal (GradScaler skips that step); NaN
    weights, or an epoch without a single finite loss, are.
    """
    weights_ok = bool(torch.stack([torch.isfinite(p).all() for p in model.parameters()]).all())
    if weights_ok and math.isfinite(loss):
        return
    raise UserError(f"{saver.run_dir}: training diverged in epoch {epoch} (loss {loss}); nothing was "
                    f"saved for it and the checkpoints ({saver.listing()}) are kept; "
                    "train with a lower --learning_rate")


def _evaluate(model: nn.Module, eval_set: EvalTarget | None, config: TrainConfig,
              device: torch.device) -> dict[str, float]:
    """The stats file's metric columns, in %: in_any@5 (the original score), precision@1, MAP@R."""
    if eval_set is None:
        return {}
    percent = in_percent(score(model, eval_set, EVAL_K, device, batch_size=config.batch_size))
    return {"evaluation score": percent[f"in_any@{EVAL_K}"],
            "precision@1": percent["precision@1"], "map@r": percent["map@r"]}


def _checkpoint_state(config: TrainConfig, model: nn.Module, optimizer: torch.optim.Optimizer,
                      scaler: torch.amp.GradScaler, metrics: dict[str, float], data: DataIdentity | None) -> dict:
    return {
        "data": None if data is None else data.to_dict(),
        "model_name": config.model,
        "model_class": type(model).__name__,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "grad_scaler": scaler.state_dict(),
        "rng": rng_states(),
        "hparams": config.to_dict(),
        "metrics": metrics,
    }


def _epoch_line(epoch: int, epochs: int, progress: dict[str, float], metrics: dict[str, float]) -> str:
    """``epoch 3/50  loss 0.1234  triplets 85.2/step (41% active)  d_ap 0.61 d_an 1.12  std 0.098
    score 45.20%  p@1 32.1%  map@r 21.0%  4.1s  lr 0.001``"""
    parts = [f"epoch {epoch}/{epochs}"]
    if progress:
        parts += [f"loss {progress['mean training loss']:.4f}",
                  f"triplets {progress['triplets']:.1f}/step ({progress['active share']:.0%} active)",
                  f"d_ap {progress['d_ap']:.2f} d_an {progress['d_an']:.2f}",
                  f"std {progress['emb std']:.3f}"]
    if metrics:
        parts += [f"score {metrics['evaluation score']:.2f}%", f"p@1 {metrics['precision@1']:.1f}%",
                  f"map@r {metrics['map@r']:.1f}%"]
    if progress:
        parts += [f"{progress['seconds']:.1f}s", f"lr {progress['lr']:.3g}"]
    return "  ".join(parts)
