"""Pick the torch device (CUDA when there is one, else the CPU) and the precision to run it at."""

from __future__ import annotations

import logging
from contextlib import AbstractContextManager

import torch

log = logging.getLogger(__name__)


def pick_device(name: str | None = "auto") -> torch.device:
    """The device called `name` ("auto": CUDA when there is one); ValueError with the fix for a wrong name."""
    if name in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise ValueError(f"unknown device {name!r}: use auto, cpu, cuda or cuda:N") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} asked for, but this machine has no CUDA GPU: use --device cpu")
    return device


def autocast_for(device: torch.device, bf16: bool) -> AbstractContextManager:
    """bf16 autocast: about 1.5x faster on CPUs with AVX512-BF16/AMX and on Ampere+ GPUs; float32 on a
    GPU without bf16 (or with `bf16=False`)."""
    if bf16 and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        log.warning("this GPU has no bf16: training in float32")
        bf16 = False
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)
