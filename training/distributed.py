"""Device choice and torchrun (DDP) set-up, so the trainer runs unchanged on 1 or N processes.

Under ``torchrun`` (RANK / WORLD_SIZE / LOCAL_RANK in the environment) each process trains its
own share of every epoch; embeddings are gathered across processes before mining so triplets
span the global batch. Rank 0 alone evaluates, writes files and prints.
"""
from __future__ import annotations

import atexit
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor

from common.errors import UserError


def pick_device(preference: str = "auto", local_rank: int | None = None) -> torch.device:
    """CUDA, else Apple MPS, else CPU for "auto"; an explicit choice that is missing is an error.

    Under torchrun ``local_rank`` picks the GPU, whatever index ``cuda:N`` named.
    """
    cuda, mps = torch.cuda.is_available(), torch.backends.mps.is_available()
    if preference == "auto":
        preference = "cuda" if cuda else "mps" if mps else "cpu"
    device = torch.device(preference)
    if device.type == "cuda" and cuda and local_rank is not None:
        device = torch.device("cuda", local_rank)
    if (device.type == "cuda" and not (cuda and (device.index or 0) < torch.cuda.device_count())) \
            or (device.type == "mps" and not mps):
        raise UserError(f"--device {preference}: not available on this machine; use --device auto or cpu")
    return device


@dataclass
class DistContext:
    """Where this process stands: its rank among ``world_size`` processes and its device."""

    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        """Wait for every process (no-op when alone), e.g. while rank 0 evaluates or writes."""
        if self.world_size > 1:
            dist.barrier()

    def release(self, go_on: bool) -> None:
        """Rank 0: let the processes waiting in `wait_for_main` go on, or tell them to stop."""
        if self.world_size > 1:
            dist.broadcast(torch.tensor([int(go_on)], device=self._comm_device), src=0)

    def wait_for_main(self) -> None:
        """Other ranks: wait until rank 0 has checked the run (`release`); when rank 0 refused
        it (another process trains it, its data changed), stop too instead of waiting forever."""
        verdict = torch.zeros(1, dtype=torch.long, device=self._comm_device)
        dist.broadcast(verdict, src=0)
        if not verdict.item():
            raise UserError(f"rank {self.rank}: rank 0 refused this run (its error says why); "
                            "stopping with it")

    @property
    def _comm_device(self) -> torch.device:
        return self.device if self.device.type == "cuda" else torch.device("cpu")  # NCCL: GPU tensors


def setup(device: str = "auto") -> DistContext:
    """Join the torchrun process group if there is one (gloo on CPU/MPS, nccl on CUDA)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return DistContext(rank=0, world_size=1, device=pick_device(device))
    chosen = pick_device(device, int(os.environ["LOCAL_RANK"]))
    if chosen.type == "cuda":
        torch.cuda.set_device(chosen)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if chosen.type == "cuda" else "gloo")
        atexit.register(dist.destroy_process_group)
    return DistContext(rank=dist.get_rank(), world_size=dist.get_world_size(), device=chosen)


class _GatherWithGrad(torch.autograd.Function):
    """all_gather whose backward returns this rank's slice of the summed gradient.

    Every rank computes the same loss on the gathered batch, so the gradient reaching a rank's own
    embeddings is the sum over ranks of their gradients; DDP then averages the parameter
    gradients, which together give exactly the gradient of the global-batch loss.
    """

    @staticmethod
    def forward(ctx, local: Tensor) -> Tensor:  # type: ignore[override]
        parts = [torch.empty_like(local) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, local.contiguous())
        ctx.rows = local.shape[0]
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        return grad.narrow(0, dist.get_rank() * ctx.rows, ctx.rows)


def gather_batch(ctx: DistContext, embeddings: Tensor, *ids: Tensor) -> tuple[Tensor, ...]:
    """Embeddings (differentiably) and the id tensors (labels, dataset rows) of every rank's
    batch, in rank order."""
    if ctx.world_size == 1:
        return (embeddings, *ids)
    gathered = []
    for values in ids:
        parts = [torch.empty_like(values) for _ in range(ctx.world_size)]
        dist.all_gather(parts, values.contiguous())
        gathered.append(torch.cat(parts))
    return (_GatherWithGrad.apply(embeddings), *gathered)
