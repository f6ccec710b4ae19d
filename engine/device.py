"""Pick the torch device: CUDA when there is one, else the CPU (engine.precision picks the number format)."""

from __future__ import annotations

import torch


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
