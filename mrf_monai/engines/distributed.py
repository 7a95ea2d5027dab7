"""Processes of a training run: ``torchrun`` set-up, the training device, NCCL-safe collectives.

In this project ``rank`` is the SVD subspace rank; the index of a training process is called
``process_rank`` everywhere. Collectives put their tensors on the training device, which
NCCL (CUDA) requires and gloo (CPU) accepts.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

__all__ = ["DistributedContext", "init_distributed", "training_device", "unwrap_network"]


def training_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"``: ``cuda:<LOCAL_RANK>`` when CUDA is available (``torchrun``), else the CPU."""
    if str(device) != "auto":
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count())
    return torch.device("cpu")


@dataclass(frozen=True)
class DistributedContext:
    """Where this process stands in a (possibly single-process) training run.

    Attributes:
        process_rank: index of this process (0 is the main process, which writes the files).
        world_size: number of processes.
        local_rank: index of this process on its machine (its GPU).
        device: this process's training device.
    """

    process_rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """Whether this is process 0."""
        return self.process_rank == 0

    @property
    def active(self) -> bool:
        """Whether a process group of more than one process is running."""
        return self.world_size > 1 and dist.is_initialized()

    def barrier(self) -> None:
        """Wait for every process (no-op for a single process)."""
        if self.active:
            if self.device.type == "cuda" and dist.get_backend() == "nccl":
                dist.barrier(device_ids=[self.device.index])
            else:
                dist.barrier()

    def any_true(self, flag: bool) -> bool:
        """``flag`` or-ed over all processes (a tensor on the training device, so NCCL works)."""
        value = torch.tensor([1.0 if flag else 0.0], device=self.device)
        if self.active:
            dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item())

    def broadcast_from_main(self, tensor: torch.Tensor) -> torch.Tensor:
        """Process 0's ``tensor`` on every process (returned on ``tensor``'s original device)."""
        if not self.active:
            return tensor
        on_device = tensor.detach().to(self.device).contiguous()
        dist.broadcast(on_device, src=0)
        return on_device.to(tensor.device)

    def gather_objects(self, obj: Any) -> list[Any]:
        """Every process's ``obj``, in process order (``[obj]`` for a single process)."""
        if not self.active:
            return [obj]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out


def init_distributed(device: str | torch.device = "auto", backend: str = "auto") -> DistributedContext:
    """Initialise ``torch.distributed`` from ``torchrun``'s environment when ``WORLD_SIZE > 1``.

    Args:
        device: the training device (``"auto"``: see :func:`training_device`); a CUDA device
            becomes this process's current device.
        backend: ``"auto"``: NCCL on CUDA, gloo otherwise.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = training_device(device)
    if dev.type == "cuda":
        if dev.index is None:  # "cuda": this process's GPU
            dev = torch.device("cuda", local_rank % torch.cuda.device_count())
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        name = ("nccl" if dev.type == "cuda" else "gloo") if backend == "auto" else backend
        dist.init_process_group(backend=name)
    if dist.is_initialized():
        return DistributedContext(dist.get_rank(), dist.get_world_size(), local_rank, dev)
    return DistributedContext(0, 1, local_rank, dev)


def unwrap_network(network: nn.Module) -> nn.Module:
    """The bare network inside ``DistributedDataParallel`` / ``DataParallel`` / ``torch.compile`` wrappers."""
    while True:
        if isinstance(network, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            network = network.module
        elif hasattr(network, "_orig_mod"):
            network = network._orig_mod  # type: ignore[assignment]
        else:
            return network
