"""One shared encoder, one decoder per identity: the model every preset builds.

Swapping is `model(face_of_a, "b")`: encode with the shared encoder, decode with B's decoder; the
trainer encodes A and B in one pass and decodes each with its own side. Besides its weights a model
carries what every user of it needs: `resolution`, `learn_mask`, `identities`, `coverage` (the crop
its faces are cut at, so training, swapping and evaluation crop alike) and `config`, from which
`build_model(**model.config)` rebuilds the same architecture (a model folder keeps it in config.json).
"""

from __future__ import annotations

import torch
from torch import nn

from engine.errors import UserError

from .presets import BUILDERS, PRESETS

# The face crop models see, as align's coverage: brows to chin with a little margin. Stored in each
# model's config, so training and swapping cut that model's faces the same way even if this changes.
MODEL_COVERAGE = 0.85

# Limits on what a config may ask for, so that a model folder someone sent cannot make the process
# allocate gigabytes before its weights are checked (every identity adds a whole decoder). Module
# constants: a host can raise them. The largest built-in setting, intracoder at 512 px, is ~550 M
# parameters; face sets are 256 px by default, so a bigger crop only upscales.
MAX_IDENTITIES = 8
MAX_RESOLUTION = 512


class ModelLimitError(UserError):
    """A config asks for more than this version builds (identities, resolution, parameters)."""


class FaceSwapModel(nn.Module):
    def __init__(self, preset: str, resolution: int, learn_mask: bool, identities: tuple[str, ...],
                 coverage: float, options: dict[str, int]):
        super().__init__()
        parts = BUILDERS[preset](resolution, learn_mask, **options)
        self.resolution = resolution
        self.learn_mask = learn_mask
        self.identities = identities
        self.coverage = coverage  # of the crops it sees, as align's coverage (a folder without one: MODEL_COVERAGE)
        self.encoder = parts.encoder
        self.shared_decoder = parts.shared_decoder
        self.decoders = nn.ModuleDict({side: parts.make_decoder() for side in identities})
        # everything build_model needs to rebuild this exact architecture; stored next to the weights
        self.config = {"preset": preset, "resolution": resolution, "learn_mask": learn_mask,
                       "identities": list(identities), "coverage": coverage, **options}

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, R, R) in [0, 1] -> latent."""
        return self.encoder(x)

    def decode(self, z: torch.Tensor, side: str) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Latent -> (RGB (N, 3, R, R), mask (N, 1, R, R) or None), both in [0, 1]."""
        if side not in self.decoders:
            raise KeyError(f"no decoder for identity {side!r}; this model has {list(self.identities)}")
        out = self.decoders[side](self.shared_decoder(z))
        return out[:, :3], (out[:, 3:4] if self.learn_mask else None)

    def forward(self, x: torch.Tensor, side: str) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self.decode(self.encode(x), side)


def build_model(preset: str, *, resolution: int | None = None, learn_mask: bool = False,
                identities=("a", "b"), coverage: float = MODEL_COVERAGE, **preset_kwargs) -> FaceSwapModel:
    """Build a fresh model; `build_model(**model.config)` rebuilds the same architecture.

    coverage: the aligned-crop coverage its faces are cut at (engine.faces.align); not part of the
    architecture, but kept with it so every user of the model crops alike.
    """
    info = PRESETS.get(preset)
    if info is None:
        raise UserError(f"unknown model preset {preset!r}: choose one of {', '.join(PRESETS)}")
    unknown = set(preset_kwargs) - set(info.options)
    if unknown:
        allowed = ", ".join(info.options) or "none"
        raise UserError(f"preset {preset!r} has no option {', '.join(sorted(unknown))}; its options: {allowed}")
    resolution = int(resolution or info.resolution)
    _check_resolution(preset, resolution, info.resolutions)
    identities = tuple(str(side) for side in identities)
    _check_identities(identities)
    if not 0.1 <= float(coverage) <= 1.5:
        raise UserError(f"coverage must be between 0.1 and 1.5, got {coverage}")
    options = {name: int(preset_kwargs.get(name, default)) for name, default in info.options.items()}
    return FaceSwapModel(preset, resolution, bool(learn_mask), identities, float(coverage), options)


def _check_resolution(preset: str, resolution: int, allowed: tuple[int, ...]) -> None:
    if allowed and resolution not in allowed:
        raise UserError(f"preset {preset!r} is built for {' or '.join(map(str, allowed))} px, not {resolution}: "
                        "drop the resolution option or pick the intracoder preset")
    if resolution < 64 or resolution % 16:
        raise UserError(f"resolution {resolution} is not supported: use a multiple of 16, at least 64")
    if resolution > MAX_RESOLUTION:
        raise ModelLimitError(f"it asks for {resolution} px faces, over the limit of {MAX_RESOLUTION} px")


def _check_identities(identities: tuple[str, ...]) -> None:
    if len(identities) > MAX_IDENTITIES:
        raise ModelLimitError(f"it asks for {len(identities)} identities, over the limit of {MAX_IDENTITIES} "
                              "(one decoder each)")
    if len(identities) < 1 or len(set(identities)) != len(identities):
        raise UserError(f"identities must be distinct names, got {list(identities)}")
    bad = [side for side in identities if not side or "." in side]
    if bad:
        raise UserError(f"identity names must be non-empty and have no dots, got {bad}")
