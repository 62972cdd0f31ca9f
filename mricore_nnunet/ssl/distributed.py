"""torch.distributed set-up for `torchrun`: one process per device, gloo on CPUs and nccl on CUDA."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProcessContext:
    """This process's place in the run and its torch device."""

    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def setup_process(device: str) -> ProcessContext:
    """Join the process group that torchrun describes in the environment, or run alone without it.

    Under torchrun each process takes the CUDA device of its LOCAL_RANK when `device` is cuda.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))

    torch_device = torch.device(device)
    if torch_device.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError(f"Device {device!r} requested, but CUDA is not available here. Use --device cpu.")
        if world_size > 1:
            torch_device = torch.device("cuda", local_rank)
        torch.cuda.set_device(torch_device)

    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if torch_device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend)
        logger.info("Process %d of %d joined the %s process group on %s.", rank, world_size, backend, torch_device)
    return ProcessContext(rank=rank, world_size=world_size, device=torch_device)


def barrier(context: ProcessContext) -> None:
    if context.distributed:
        dist.barrier()


def any_process_true(flag: bool, context: ProcessContext) -> bool:
    """Return True on every process when `flag` is True on at least one of them."""
    if not context.distributed:
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=context.device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item() > 0)


def teardown_process(context: ProcessContext) -> None:
    if context.distributed and dist.is_initialized():
        dist.destroy_process_group()
