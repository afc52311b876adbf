"""Where a transformer runs and in which precision: the device, the autocast dtype, the seeds."""

from __future__ import annotations

import logging
import random
from contextlib import AbstractContextManager

import numpy as np
import torch

from pipeline.core.config import TrainConfig
from pipeline.modeling import distributed as dist_

log = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)


def pick_device(cfg: TrainConfig) -> torch.device:
    if cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available()):
        return torch.device("cuda", dist_.local_rank())
    return torch.device("cpu")


def cpu_has_bf16_tiles() -> bool:
    """Intel AMX bf16 tiles (Sapphire Rapids and later). There bf16 autocast made a training
    step 1.5-1.6x (MiniLM) and 1.8-2.0x (mpnet) faster than float32 on 2 cores, at the same CV
    (BENCHMARKS.md); on CPUs without them bf16 matmuls are emulated, so auto keeps float32."""
    probe = getattr(torch.cpu, "_is_amx_tile_supported", None)
    try:
        return bool(probe and probe())
    except RuntimeError:
        return False


def gpu_has_native_bf16(device: torch.device) -> bool:
    """bf16 tensor cores: compute capability 8.0 and up (A100, L4, H100). A T4 (7.5), V100 (7.0)
    or P100 (6.0) reports bf16 "supported" through emulation, the slow path: fp16 there."""
    return torch.cuda.get_device_capability(device) >= (8, 0)


def pick_dtype(cfg: TrainConfig, device: torch.device) -> torch.dtype:
    """The autocast dtype; float32 means autocast is off. On CPU: bf16 when asked for, or under
    precision=auto where the CPU has AMX bf16 tiles; fp16 on CPU runs float32 (said in a warning).
    On a GPU under auto: bf16 where it is native (compute capability >= 8.0), else fp16 (with a
    GradScaler: FoldTrainer enables one for fp16)."""
    if cfg.precision == "fp32":
        return torch.float32
    if device.type != "cuda":
        if cfg.precision == "bf16" or (cfg.precision == "auto" and cpu_has_bf16_tiles()):
            return torch.bfloat16
        if cfg.precision == "fp16":
            log.warning("train.precision=fp16 has no fast path on CPU: training runs in float32 "
                        "(train.precision=bf16 autocasts on CPU)")
        return torch.float32
    if cfg.precision == "fp16":
        return torch.float16
    if cfg.precision == "bf16":
        if not gpu_has_native_bf16(device):
            log.warning("train.precision=bf16 on a GPU of compute capability %s: emulated, the slow path "
                        "(train.precision=auto takes fp16 there)", ".".join(map(str, torch.cuda.get_device_capability(device))))
        return torch.bfloat16
    return torch.bfloat16 if gpu_has_native_bf16(device) else torch.float16


def autocast(device: torch.device, dtype: torch.dtype) -> AbstractContextManager[None]:
    """The forward passes' autocast context (off for float32)."""
    return torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)


def submission_dtype(device: torch.device, dtype: torch.dtype) -> torch.dtype:
    """The dtype of the submitted test prediction: float32 on CPU even where training
    autocasts, so the offline bundle (float32) and a CPU without bf16 tiles reproduce it."""
    return torch.float32 if device.type == "cpu" else dtype
