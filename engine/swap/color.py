"""Colour correction of a generated face toward the destination face it replaces.

A swap model reproduces the source person's skin tone and the training set's lighting, so the
generated face rarely matches the frame it is pasted into. Both images are aligned crops of the
same geometry; statistics are taken only under `mask` (the face, not hair or background) and the
resulting transfer is applied to the whole crop, so the blend mask may reach beyond the
statistics mask without leaving an uncorrected rim.

Modes live in one registry: a new same-size transfer is one decorated function. They work on
batches of torch tensors, on whatever device the model ran on, so a swap's faces go from the model
through the colour correction without a trip to the CPU (`correct_faces`); `correct_color` is the
same for one uint8 image. `reinhard` is the colour network's own transfer
(`engine.models.colornet.reinhard_to`, kornia's LAB), so the classical mode, the network's prior and
its strength mix in `engine.swap.pipeline` move colours the same way. The learned `net` mode is not
in the registry: it needs the model's colour network and returns a larger face.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from engine.errors import UserError
from engine.models.colornet import face_stats, reinhard_to

# (generated, destination, weights) -> corrected generated. Faces are (N, 3, H, W) float RGB in [0, 1]
# on one device, `weights` the (H, W) float mask in [0, 1]; a mode may use it as weights or threshold it.
ColorTransfer = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]

COLOR_MODES: dict[str, ColorTransfer] = {}

# pixels at least this much inside the mask count as "face" where a mode needs a hard selection
MASK_THRESHOLD = 0.5


def register_color_mode(name: str) -> Callable[[ColorTransfer], ColorTransfer]:
    """Decorator adding a transfer to `COLOR_MODES` under `name` (the CLI/web choice)."""

    def add(transfer: ColorTransfer) -> ColorTransfer:
        if name in COLOR_MODES:
            raise ValueError(f"colour mode {name!r} is already registered")
        COLOR_MODES[name] = transfer
        return transfer

    return add


def correct_faces(generated: torch.Tensor, destination: torch.Tensor, weights: torch.Tensor, mode: str,
                  strength: float = 1.0) -> torch.Tensor:
    """Move a batch of generated faces' colours toward their destinations' under `weights`.

    (N, 3, H, W) float RGB in [0, 1] in and out (clamped), on the faces' device. `strength` mixes
    the corrected result (1) with the raw generated face (0), for faces where a full transfer
    overshoots (e.g. the destination is half in shadow).
    """
    if mode not in COLOR_MODES:
        raise UserError(f"unknown colour mode {mode!r}: choose one of {', '.join(sorted(COLOR_MODES))}")
    if not 0.0 <= strength <= 1.0:
        raise UserError(f"colour strength must be in [0, 1], got {strength}")
    raw = generated.float().clamp(0, 1)
    weights = weights.to(raw).clamp(0, 1)
    if strength == 0.0 or not bool((weights >= MASK_THRESHOLD).any()):
        return raw  # nothing to correct, or no face pixels to measure
    corrected = COLOR_MODES[mode](raw, destination.to(raw), weights)
    mixed = corrected if strength == 1.0 else torch.lerp(raw, corrected, strength)
    return mixed.clamp(0, 1)


def correct_color(generated: np.ndarray, destination: np.ndarray, mask: np.ndarray, mode: str,
                  strength: float = 1.0) -> np.ndarray:
    """`correct_faces` for one face: RGB uint8 (H, W, 3) in, uint8 out, `mask` (H, W)."""
    _check_inputs(generated, destination, mask)
    out = correct_faces(to_tensor(generated[None]), to_tensor(destination[None]),
                        torch.from_numpy(np.asarray(mask, dtype=np.float32)), mode, strength)
    return to_uint8(out)[0]


def to_tensor(images: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """(N, H, W, 3) uint8 RGB -> (N, 3, H, W) float in [0, 1] on `device`."""
    return torch.from_numpy(np.ascontiguousarray(images)).to(device).permute(0, 3, 1, 2).float().div_(255.0)


def to_uint8(faces: torch.Tensor) -> np.ndarray:
    """(N, 3, H, W) float in [0, 1] (any device) -> (N, H, W, 3) uint8 RGB on the CPU, rounded."""
    return faces.clamp(0, 1).mul(255.0).round_().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def _check_inputs(generated: np.ndarray, destination: np.ndarray, mask: np.ndarray) -> None:
    if generated.dtype != np.uint8 or destination.dtype != np.uint8:
        raise ValueError("colour correction expects RGB uint8 images")
    if generated.shape != destination.shape or generated.ndim != 3 or generated.shape[2] != 3:
        raise ValueError(f"faces must be the same (H, W, 3) shape, got {generated.shape} and {destination.shape}")
    if np.shape(mask) != generated.shape[:2]:
        raise ValueError(f"mask shape {np.shape(mask)} does not match the faces {generated.shape[:2]}")


def _weighted_mean(faces: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """(N, C) per-channel means of (N, C, H, W) faces, each pixel counted by its mask weight."""
    return (faces * weights).sum(dim=(2, 3)) / weights.sum()


@register_color_mode("none")
def _no_transfer(generated: torch.Tensor, destination: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    return generated


@register_color_mode("average")
def _average_transfer(generated: torch.Tensor, destination: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Shift RGB means only: fixes a tint without touching contrast."""
    shift = _weighted_mean(destination, weights) - _weighted_mean(generated, weights)
    return generated + shift[:, :, None, None]


@register_color_mode("reinhard")
def _reinhard_transfer(generated: torch.Tensor, destination: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Reinhard et al. 2001 mean/std transfer in LAB, where channels are nearly decorrelated."""
    return reinhard_to(generated, face_stats(generated, weights), face_stats(destination, weights))


@register_color_mode("hist")
def _histogram_transfer(generated: torch.Tensor, destination: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Per-channel RGB histogram matching of the masked 8-bit levels, extended to the crop as a lookup."""
    from skimage import exposure

    face = (weights >= MASK_THRESHOLD).cpu().numpy()
    out = np.empty(generated.shape, dtype=np.float32)
    for n, (gen, dst) in enumerate(zip(to_uint8(generated), to_uint8(destination), strict=True)):
        for c in range(3):
            source = gen[..., c][face]
            matched = exposure.match_histograms(source, dst[..., c][face])
            # match_histograms maps equal inputs to equal outputs: one output per source level
            levels, first = np.unique(source, return_index=True)
            out[n, c] = np.interp(gen[..., c], levels, matched[first])
    return torch.from_numpy(out).to(generated.device).div_(255.0)
