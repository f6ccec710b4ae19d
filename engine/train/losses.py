"""Reconstruction losses: per-pixel error maps, weighted towards the face and its eyes and mouth.

Swaps are judged by eyes and mouth first, yet they are a small share of the pixels, so a plain mean
lets the model blur them; `eye_mouth_weight` adds weight there. The weight map comes from the
5-point template, so it sits on the features of every aligned crop without a landmark model.

The background of a crop (hair, walls, B's many photo backdrops) is pasted over by the swap's mask
anyway, and it is the hardest part to reconstruct, so a plain mean spends most of a small model's
capacity there; `background_weight` < 1 turns the loss towards the face mask that augmentation
moves with each target (bench/likeness.py measured it on both shared pairs).
"""

from __future__ import annotations

from collections.abc import Callable

import kornia
import numpy as np
import torch

from engine.errors import UserError
from engine.faces.align import template_points

SSIM_WINDOW = 11  # the standard SSIM Gaussian window


def mae_map(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean absolute error: robust, keeps edges sharper than MSE; the classic default."""
    return (pred - target).abs()


def ssim_mse_map(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Structural dissimilarity plus MSE: SSIM rewards texture and local contrast, MSE pins colour."""
    dssim = kornia.losses.ssim_loss(pred, target, SSIM_WINDOW, reduction="none")
    return dssim + (pred - target).square()


def mae_dssim_map(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L1 plus structural dissimilarity (faceswap's default pairing): L1 pins colour, DSSIM sharpens."""
    return (pred - target).abs() + kornia.losses.ssim_loss(pred, target, SSIM_WINDOW, reduction="none")


PIXEL_ERRORS: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "mae": mae_map,
    "ssim_mse": ssim_mse_map,
    "mae_dssim": mae_dssim_map,
}


class WeightedLoss:
    """Mean of a per-pixel error map, weighted by a fixed map normalised to mean 1 and, with
    `background_weight` < 1, by each target's face mask (background_weight outside it, 1 inside),
    normalised per batch, so the loss stays on the scale of the plain one and its logs comparable."""

    def __init__(self, pixel_error: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                 weight: torch.Tensor | None = None, background_weight: float = 1.0):
        self.pixel_error = pixel_error
        self.weight = None if weight is None else weight / weight.mean()
        self.background_weight = float(background_weight)
        self._weight_on: dict[torch.device, torch.Tensor] = {}

    @property
    def needs_mask(self) -> bool:
        """Whether calls need the targets' face masks."""
        return self.background_weight < 1

    def __call__(self, pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """pred, target (N, 3, R, R); mask (N, 1, R, R) in [0, 1], needed when `needs_mask`."""
        error = self.pixel_error(pred, target)
        weight = None
        if self.weight is not None:
            if pred.device not in self._weight_on:
                self._weight_on[pred.device] = self.weight.to(pred.device)
            weight = self._weight_on[pred.device]
        if self.needs_mask:
            if mask is None:
                raise ValueError("this loss weighs the face mask: pass the targets' masks")
            face = self.background_weight + (1 - self.background_weight) * mask
            weight = face if weight is None else face * weight
            return (error * weight).mean() / weight.mean()
        return error.mean() if weight is None else (error * weight).mean()


def make_loss(name: str, resolution: int, coverage: float, eye_mouth_weight: float = 0.0,
              background_weight: float = 1.0) -> WeightedLoss:
    """The loss `name` for (N, 3, R, R) images in [0, 1]; eye_mouth_weight: extra weight there (0: off);
    background_weight: weight outside the face mask (1: off)."""
    if name not in PIXEL_ERRORS:
        raise UserError(f"unknown loss {name!r}: choose one of {', '.join(PIXEL_ERRORS)}")
    if eye_mouth_weight < 0:
        raise UserError(f"eye/mouth weight must be 0 or more, got {eye_mouth_weight}")
    if not 0 <= background_weight <= 1:
        raise UserError(f"background weight must be between 0 and 1, got {background_weight}")
    weight = None
    if eye_mouth_weight > 0:
        weight = 1 + eye_mouth_weight * torch.from_numpy(eye_mouth_map(resolution, coverage))
    return WeightedLoss(PIXEL_ERRORS[name], weight, background_weight)


def mask_loss(pred_mask: torch.Tensor, target_mask: torch.Tensor) -> torch.Tensor:
    """MSE for learned masks: smooth near 0 and 1, where cross-entropy on a sigmoid output saturates."""
    return (pred_mask - target_mask).square().mean()


def eye_mouth_map(size: int, coverage: float) -> np.ndarray:
    """float32 (size, size) in [0, 1]: soft discs on both eyes and an ellipse on the mouth."""
    points = template_points(size, coverage)
    eye_distance = np.linalg.norm(points[1] - points[0])
    mouth_mid, mouth_width = points[3:].mean(axis=0), np.linalg.norm(points[4] - points[3])
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float64)
    regions = [_soft_ellipse(xs, ys, eye, (0.3 * eye_distance, 0.2 * eye_distance)) for eye in points[:2]]
    regions.append(_soft_ellipse(xs, ys, mouth_mid, (0.7 * mouth_width, 0.35 * mouth_width)))
    return np.maximum.reduce(regions).astype(np.float32)


def _soft_ellipse(xs: np.ndarray, ys: np.ndarray, centre: np.ndarray, radii: tuple[float, float]) -> np.ndarray:
    r = np.hypot((xs - centre[0]) / radii[0], (ys - centre[1]) / radii[1])
    return np.clip(1.5 - r, 0, 1)  # 1 inside r <= 0.5, fading to 0 at r = 1.5
