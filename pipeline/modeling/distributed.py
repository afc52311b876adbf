"""Several processes per fold, launched by `torchrun` or `accelerate launch` (DDP).

The launcher sets RANK / WORLD_SIZE / LOCAL_RANK and this module joins the group (NCCL on GPU,
gloo on CPU). In a single process everything is a no-op. ``launch_command`` is how the train
stage starts itself again under torchrun when a machine has several GPUs (a Kaggle T4 x2):
no command-line change.
"""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.distributed as dist


def world() -> tuple[int, int]:
    """(rank, world size); joins the process group on first use under a launcher."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return 0, 1
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(local_rank())
        dist.init_process_group(backend)
    return dist.get_rank(), dist.get_world_size()


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main() -> bool:
    return world()[0] == 0


def barrier() -> None:
    if world()[1] > 1:
        dist.barrier()


def gather_objects(obj: object) -> list[object]:
    """Every rank's ``obj``, in rank order (a list of one in a single process)."""
    rank, size = world()
    if size == 1:
        return [obj]
    out: list[Any] = [None] * size
    dist.all_gather_object(out, obj)
    return out


def wrap(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """DistributedDataParallel under a launcher, the model itself otherwise."""
    if world()[1] == 1:
        return model
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def wanted_processes(processes: int | None) -> int:
    """train.processes, else one process per visible GPU (1 without one)."""
    if processes is not None:
        return max(1, processes)
    return max(1, torch.cuda.device_count()) if torch.cuda.is_available() else 1


def under_launcher() -> bool:
    return "WORLD_SIZE" in os.environ


def launch_command(n: int, argv: list[str]) -> list[str]:
    """``python -m pipeline train <argv>`` in ``n`` processes under torchrun (one machine)."""
    import sys

    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n}", "-m", "pipeline",
            "train", *argv]
