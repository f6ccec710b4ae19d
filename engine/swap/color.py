"""Colour correction of a generated face toward the destination face it replaces.

A swap model reproduces the source person's skin tone and the training set's lighting, so the
generated face rarely matches the frame it is pasted into. Both images are aligned crops of the
same geometry; statistics are taken only under `mask` (the face, not hair or background) and the
resulting transfer is applied to the whole crop, so the blend mask may reach beyond the
statistics mask without leaving an uncorrected rim.

Modes live in one registry: a new same-size transfer is one decorated function. The learned `net`
mode is not one of them: it needs the model's colour network and returns a larger face, so
`engine.swap.pipeline` runs it (and mixes it with `reinhard` from here).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from skimage import color, exposure

from engine.errors import UserError

# (generated, destination, weights) -> corrected generated, float RGB in [0, 255].
# `weights` is the float mask in [0, 1]; a mode may use it as weights or threshold it.
ColorTransfer = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]

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


def correct_color(generated: np.ndarray, destination: np.ndarray, mask: np.ndarray, mode: str,
                  strength: float = 1.0) -> np.ndarray:
    """Move `generated`'s colours toward `destination`'s under `mask`; RGB uint8 in, uint8 out.

    `strength` mixes the corrected result (1) with the raw generated face (0), for faces where a
    full transfer overshoots (e.g. the destination is half in shadow).
    """
    if mode not in COLOR_MODES:
        raise UserError(f"unknown colour mode {mode!r}: choose one of {', '.join(sorted(COLOR_MODES))}")
    if not 0.0 <= strength <= 1.0:
        raise UserError(f"colour strength must be in [0, 1], got {strength}")
    _check_inputs(generated, destination, mask)
    weights = np.clip(np.asarray(mask, dtype=np.float32), 0.0, 1.0)
    if strength == 0.0 or not np.any(weights >= MASK_THRESHOLD):
        return generated.copy()  # nothing to correct, or no face pixels to measure
    raw = generated.astype(np.float32)
    corrected = COLOR_MODES[mode](generated, destination, weights)
    mixed = raw + strength * (np.asarray(corrected, dtype=np.float32) - raw)
    return np.clip(np.rint(mixed), 0, 255).astype(np.uint8)


def _check_inputs(generated: np.ndarray, destination: np.ndarray, mask: np.ndarray) -> None:
    if generated.dtype != np.uint8 or destination.dtype != np.uint8:
        raise ValueError("colour correction expects RGB uint8 images")
    if generated.shape != destination.shape or generated.ndim != 3 or generated.shape[2] != 3:
        raise ValueError(f"faces must be the same (H, W, 3) shape, got {generated.shape} and {destination.shape}")
    if np.shape(mask) != generated.shape[:2]:
        raise ValueError(f"mask shape {np.shape(mask)} does not match the faces {generated.shape[:2]}")


def _weighted_mean_std(values: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std of (H, W, C) `values`, each pixel counted by its mask weight."""
    w = weights[..., None].astype(np.float64)
    total = w.sum()
    mean = (values * w).sum(axis=(0, 1)) / total
    var = (((values - mean) ** 2) * w).sum(axis=(0, 1)) / total
    return mean, np.sqrt(var)


@register_color_mode("none")
def _no_transfer(generated: np.ndarray, destination: np.ndarray, weights: np.ndarray) -> np.ndarray:
    return generated.astype(np.float32)


@register_color_mode("average")
def _average_transfer(generated: np.ndarray, destination: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Shift RGB means only: fixes a tint without touching contrast."""
    gen_mean, _ = _weighted_mean_std(generated.astype(np.float64), weights)
    dst_mean, _ = _weighted_mean_std(destination.astype(np.float64), weights)
    return generated.astype(np.float32) + (dst_mean - gen_mean).astype(np.float32)


@register_color_mode("reinhard")
def _reinhard_transfer(generated: np.ndarray, destination: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Reinhard et al. 2001 mean/std transfer in LAB, where channels are nearly decorrelated."""
    gen_lab = color.rgb2lab(generated)
    dst_lab = color.rgb2lab(destination)
    gen_mean, gen_std = _weighted_mean_std(gen_lab, weights)
    dst_mean, dst_std = _weighted_mean_std(dst_lab, weights)
    # a flat channel (std ~ 0) has no contrast to rescale: shift it only
    scale = np.where(gen_std > 1e-6, dst_std / np.maximum(gen_std, 1e-6), 1.0)
    lab = (gen_lab - gen_mean) * scale + dst_mean
    lab[..., 0] = np.clip(lab[..., 0], 0.0, 100.0)
    return (color.lab2rgb(lab) * 255.0).astype(np.float32)


@register_color_mode("hist")
def _histogram_transfer(generated: np.ndarray, destination: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Per-channel RGB histogram matching of the masked pixels, extended to the crop as a lookup."""
    face = weights >= MASK_THRESHOLD
    out = np.empty(generated.shape, dtype=np.float32)
    for c in range(3):
        source = generated[..., c][face]
        matched = exposure.match_histograms(source, destination[..., c][face])
        # match_histograms maps equal inputs to equal outputs: one output per source level
        levels, first = np.unique(source, return_index=True)
        out[..., c] = np.interp(generated[..., c], levels, matched[first])
    return out
