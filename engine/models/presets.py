"""The named architectures users pick from, with the facts the CLI and UI show about each."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from .classic import dfl_h128, lite, original
from .intracoder import intracoder
from .parts import Parts


@dataclass(frozen=True)
class PresetInfo:
    description: str
    resolution: int  # default input/output side in pixels
    cost: str  # rough size and the hardware it needs, for help texts
    options: dict[str, int] = field(default_factory=dict)  # extra build_model keywords and defaults
    resolutions: tuple[int, ...] = ()  # sides it may be built at; empty: any multiple of 16 >= 64


PRESETS: dict[str, PresetInfo] = {
    "lite": PresetInfo(
        "original at a quarter of the channels: a CPU demo that learns a rough likeness in an hour",
        64, "~5 M parameters; runs on a CPU", resolutions=(64,)),
    "original": PresetInfo(
        "the classic deepfakes autoencoder: shared encoder, one full decoder per identity",
        64, "~82 M parameters; a GPU is advised", resolutions=(64,)),
    "dfl-h128": PresetInfo(
        "DeepFaceLab's H128: the classic layout at 128 px with an 8x8 bottleneck",
        128, "~108 M parameters at encoder_dim 512; needs a GPU", {"encoder_dim": 512}, resolutions=(128,)),
    "intracoder": PresetInfo(
        "shared shallow+deep encoder and deep decoder, a shallow decoder per identity; any size",
        64, "~21 M parameters at 64 px (~46 M at 128); needs a GPU", {"width": 64, "encoder_dim": 512}),
}

BUILDERS: dict[str, Callable[..., Parts]] = {
    "lite": lite,
    "original": original,
    "dfl-h128": dfl_h128,
    "intracoder": intracoder,
}


def default_preset(device_type: str) -> str:
    """`lite` without a GPU (anything bigger trains too slowly to show progress), else `intracoder`."""
    return "intracoder" if device_type == "cuda" else "lite"
