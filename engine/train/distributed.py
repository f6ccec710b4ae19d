"""One process or many: the trainer asks this module, never torch.distributed directly.

Under `torchrun --nproc-per-node N` every process runs the same `train()`; each holds a full model
copy wrapped in DistributedDataParallel and its own slice of the face sets. Only rank 0 writes
files and shows progress. Without torchrun the same calls collapse to plain single-process code.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from engine.device import pick_device


@dataclass
class Cluster:
    """Where this process sits among the training processes, and the collectives it needs."""

    device: torch.device
    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def wrap(self, module: torch.nn.Module) -> torch.nn.Module:
        """DDP averages gradients across processes during backward, so every rank steps identically."""
        if not self.distributed:
            return module
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(module, device_ids=ids)

    def mean(self, values: torch.Tensor) -> torch.Tensor:
        """Average a small float tensor over all ranks (gloo has no AVG op, so SUM / N).

        The trainer sends losses and a stop flag in one such call, so every rank takes the same
        decisions (stop, rewind) at the same iteration; ranks that disagree would hang in DDP.
        """
        if not self.distributed:
            return values
        values = values.clone()
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
        return values / self.world_size

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()


def setup(device_name: str | None = "auto") -> Cluster:
    """Join the process group torchrun describes in the environment, or run alone.

    CUDA ranks use NCCL on their own GPU (LOCAL_RANK); CPU ranks use gloo.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    device = pick_device(device_name)
    if world_size <= 1:
        return Cluster(device=device)
    rank = int(os.environ["RANK"])
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo",
                                rank=rank, world_size=world_size)
    return Cluster(device=device, rank=rank, world_size=world_size)


def teardown(cluster: Cluster) -> None:
    if cluster.distributed and dist.is_initialized():
        dist.destroy_process_group()
