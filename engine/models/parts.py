"""What a preset builder hands to the model: the shared parts and a factory for per-identity ones."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn


@dataclass(frozen=True)
class Parts:
    encoder: nn.Module  # shared: image -> latent
    shared_decoder: nn.Module  # shared: latent -> features for the per-identity decoders
    make_decoder: Callable[[], nn.Module]  # a fresh per-identity decoder: features -> RGB(+mask)
