"""Poisson blending as a membrane in the aligned crop (engine.swap.membrane): it matches OpenCV's seamless
clone in the frame and carries a colour cast at the rim inward."""

from __future__ import annotations

import numpy as np
import pytest

from engine.faces.align import alignment_matrix, warp_face
from engine.swap.blend import blend
from engine.swap.masks import blend_mask
from engine.swap.membrane import solve_membrane, with_membrane

SIZE, COVERAGE = 256, 0.8


@pytest.fixture(scope="module")
def crops(astronaut_and_obama) -> dict:
    """The astronaut's frame and aligned crop, and Obama's face aligned the same way (real photos)."""
    photos = astronaut_and_obama
    matrix = alignment_matrix(photos.frame_points, SIZE, COVERAGE)
    return {"frame": photos.frame, "matrix": matrix, "under": warp_face(photos.frame, matrix, SIZE),
            "face": warp_face(photos.face, alignment_matrix(photos.face_points, SIZE, COVERAGE), SIZE),
            "mask": blend_mask(SIZE, COVERAGE, erode=-8, blur=6)}


def test_the_aligned_membrane_gives_the_frames_seamless_clone(crops):
    """Laplace's equation does not see a similarity transform: the membrane solved in the aligned crop (at
    half size) pastes what OpenCV's full-size seamless clone in the frame pastes."""
    aligned = with_membrane(crops["face"], solve_membrane(crops["face"], crops["under"], crops["mask"]))
    in_frame = blend(crops["frame"], crops["face"], crops["matrix"], crops["mask"], "poisson")
    inside = crops["mask"] > 0.99
    ours = aligned[inside].astype(float)
    theirs = warp_face(in_frame, crops["matrix"], SIZE)[inside].astype(float)
    psnr = 10 * np.log10(255.0**2 / np.mean((ours - theirs) ** 2))
    assert psnr > 30, psnr


def test_a_colour_cast_at_the_rim_is_carried_inward(crops):
    """A face that is the frame plus a constant cast gets exactly the opposite cast as its membrane."""
    under = np.clip(crops["under"].astype(int), 40, 215).astype(np.uint8)
    cast = np.array([25, -15, 10])
    face = (under.astype(int) + cast).astype(np.uint8)
    membrane = solve_membrane(face, under, crops["mask"])
    inside = crops["mask"] > 0.99
    assert np.abs(membrane[inside].mean(axis=0) + cast).max() < 1.0
    assert membrane[inside].std(axis=0).max() < 1.5
    assert np.abs(solve_membrane(under, under, crops["mask"])[inside]).max() < 1.0  # nothing to carry
    assert not solve_membrane(face, under, np.zeros_like(crops["mask"])).any()  # nothing pasted
