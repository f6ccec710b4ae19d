"""Poisson blending as a colour membrane in the aligned crop, which a video can steady per face track.

Normal seamless cloning keeps the new face's gradients and adds a membrane: the harmonic function that
carries the colour difference along the mask's rim (frame minus face) smoothly inward. It is what hides
a face's colour errors against the frame. Solved frame by frame, though, the membrane follows every
flicker of the rim (hair, collar, compression noise, the rim sliding over the head as the landmarks
move), and the whole face breathes with it: on the talk videos Poisson pastes flicker 0.04-0.10 more
than an alpha paste of the same face (docs/benchmarks.md).

Laplace's equation is unchanged by a similarity transform, so the membrane can be solved in the aligned
crop instead of the frame, where a face's membrane stays put as the head moves. There a video low-passes
it along the face's track (`engine.swap.steady`), keeping its slow part, the face's colour cast against the
frame, and dropping the frame-to-frame noise. The face plus the membrane is then pasted with the feathered mask.
"""

from __future__ import annotations

import cv2
import numpy as np

from engine.swap.blend import PlacedFace, poisson_clone

_PAD = 4  # px of replicated border around the half-size crop: seamlessClone needs its region off the edge


def solve_membrane(face: np.ndarray, under: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Float32 (S, S, 3): what normal cloning adds to `face` (S, S, 3 uint8) pasted into `under` (the
    frame's aligned crop, same size) through `mask` (S, S float, region > 0).

    Solved at half size and upsampled: the membrane is harmonic, hence smooth, so this changes little
    (35 dB PSNR inside the mask against OpenCV's full-size clone in the frame, tests/test_swap_membrane.py;
    33-42 dB on the talk videos when the frame-space solve was halved the same way) and costs a quarter
    to a third of the full solve. Outside the region it is `under - face`, the continuation of the rim's
    difference, so the upsampled membrane has no step at the rim.
    """
    size = face.shape[1], face.shape[0]
    half = ((size[0] + 1) // 2, (size[1] + 1) // 2)
    small_face = cv2.resize(face, half, interpolation=cv2.INTER_AREA)
    small_under = cv2.resize(under, half, interpolation=cv2.INTER_AREA)
    alpha = cv2.resize(np.asarray(mask, dtype=np.float32), half, interpolation=cv2.INTER_AREA)
    alpha[alpha < 1.0 / 512] = 0.0
    pad = (_PAD, _PAD, _PAD, _PAD, cv2.BORDER_REPLICATE)
    small_face, small_under = cv2.copyMakeBorder(small_face, *pad), cv2.copyMakeBorder(small_under, *pad)
    alpha = cv2.copyMakeBorder(alpha, _PAD, _PAD, _PAD, _PAD, cv2.BORDER_CONSTANT, value=0)
    if not alpha.any():
        return np.zeros((size[1], size[0], 3), np.float32)
    cloned = poisson_clone(small_under, PlacedFace(0, 0, small_face, alpha), cv2.NORMAL_CLONE)
    membrane = (cloned.astype(np.float32) - small_face.astype(np.float32))[_PAD:-_PAD, _PAD:-_PAD]
    return cv2.resize(membrane, size, interpolation=cv2.INTER_LINEAR)


def with_membrane(face: np.ndarray, membrane: np.ndarray) -> np.ndarray:
    """`face` (uint8) plus `membrane`, rounded and clipped to uint8."""
    return np.clip(np.rint(face.astype(np.float32) + membrane), 0, 255).astype(np.uint8)
