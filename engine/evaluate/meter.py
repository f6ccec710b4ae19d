"""Per-frame measurement of a swap: identity, expression, pose, sharpness and seam of the pasted face,
and flicker against the frame before.

The meter sees each destination frame beside its swap and where the swap pasted its faces; it judges
with dlib (`identity.FaceAnalyzer`) and the pure functions of `metrics`, never with the model.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import numpy as np

from engine.faces import align

from . import metrics as M

log = logging.getLogger(__name__)

FLOW_MARGIN = 16  # px around the face region that optical flow sees


@dataclass
class FrameRecord:
    """The figures of one frame (NaN where the frame had no face or no predecessor)."""

    index: int
    face: bool = False
    sim_target: float = math.nan  # swapped face vs B's mean
    sim_source: float = math.nan  # swapped face vs A's mean
    retrieved: float = math.nan  # 1 if the swapped face is nearer B's mean than A's
    dest_sim_target: float = math.nan  # the untouched destination face, for reference
    dest_sim_source: float = math.nan
    dest_retrieved: float = math.nan
    dist_target: float = math.nan  # Euclidean distance of the swapped face to B's mean
    verified: float = math.nan  # 1 if that distance is within B's own photos' (engine.evaluate.metrics.verified)
    dest_verified: float = math.nan
    dest_dist_target: float = math.nan
    nme: float = math.nan
    pose: np.ndarray = field(default_factory=lambda: np.full(4, math.nan))  # yaw, pitch, roll, angle
    sharpness: float = math.nan
    seam: float = math.nan
    warp_swapped: float = math.nan
    warp_destination: float = math.nan


def main_face(faces: list):
    """The largest pasted face of a frame (the `largest` rule swaps one), or None."""
    if not faces:
        return None
    return max(faces, key=lambda f: 1.0 / max(abs(np.linalg.det(f.matrix[:, :2])), 1e-12))


def region_box(region: np.ndarray, margin: int) -> tuple[int, int, int, int]:
    """(y0, y1, x0, x1) bounding the True pixels of `region`, grown by `margin` within the frame."""
    ys, xs = np.nonzero(region)
    h, w = region.shape
    return (max(0, ys.min() - margin), min(h, ys.max() + margin + 1),
            max(0, xs.min() - margin), min(w, xs.max() + margin + 1))


class FrameMeter:
    """Measures each destination/swapped frame pair; keeps the previous pair for the flicker figures."""

    def __init__(self, analyzer, mean_target: np.ndarray, mean_source: np.ndarray, threshold: float) -> None:
        self.analyzer, self.mean_target, self.mean_source = analyzer, mean_target, mean_source
        self.threshold = threshold  # distance to B's mean that verifies a face as B
        self._previous: tuple[np.ndarray, np.ndarray, np.ndarray | None] | None = None

    def add(self, index: int, dest: np.ndarray, swapped: np.ndarray, faces: list, new_clip: bool) -> FrameRecord:
        """Figures for one frame; `faces` are where the swap pasted (engine.swap.pipeline.SwappedFace)."""
        record = FrameRecord(index)
        face = main_face(faces)
        region = face.region(dest.shape) if face is not None else None
        if face is not None:
            record.face = True
            self._identity_and_geometry(record, dest, swapped, face)
            size = face.mask.shape[0]
            dest_crop = align.warp_face(dest, face.matrix, size)
            swap_crop = align.warp_face(swapped, face.matrix, size)
            record.sharpness = M.sharpness_ratio(swap_crop, dest_crop, face.mask)
            record.seam = M.seam_score(swap_crop, dest_crop, face.mask)
        if not new_clip and self._previous is not None and region is not None:
            prev_dest, prev_swap, prev_region = self._previous
            both = region | prev_region if prev_region is not None else region
            y0, y1, x0, x1 = region_box(both, FLOW_MARGIN)
            record.warp_swapped, record.warp_destination = M.flicker_pair(
                prev_dest[y0:y1, x0:x1], dest[y0:y1, x0:x1], prev_swap[y0:y1, x0:x1], swapped[y0:y1, x0:x1],
                region[y0:y1, x0:x1])
        self._previous = (dest, swapped, region)
        return record

    def _identity_and_geometry(self, record: FrameRecord, dest, swapped, face) -> None:
        box = self.analyzer.box_from_landmarks(face.landmarks)
        dest_points, dest_embedding = self.analyzer.analyse(dest, box)
        swap_points, swap_embedding = self.analyzer.analyse(swapped, box)
        record.sim_target = float(M.cosine_similarity(swap_embedding, self.mean_target)[0])
        record.sim_source = float(M.cosine_similarity(swap_embedding, self.mean_source)[0])
        record.retrieved = float(M.identity_retrieval(swap_embedding, self.mean_target, self.mean_source)[0])
        record.dest_sim_target = float(M.cosine_similarity(dest_embedding, self.mean_target)[0])
        record.dest_sim_source = float(M.cosine_similarity(dest_embedding, self.mean_source)[0])
        record.dest_retrieved = float(M.identity_retrieval(dest_embedding, self.mean_target, self.mean_source)[0])
        record.dist_target = float(np.linalg.norm(swap_embedding - self.mean_target))
        record.verified = float(M.verified(swap_embedding, self.mean_target, self.threshold)[0])
        record.dest_verified = float(M.verified(dest_embedding, self.mean_target, self.threshold)[0])
        record.dest_dist_target = float(np.linalg.norm(dest_embedding - self.mean_target))
        record.nme = M.landmark_nme(swap_points, dest_points)
        try:
            record.pose = M.pose_difference(swap_points, dest_points, dest.shape[:2])
        except ValueError:
            log.debug("frame %d: no head pose", record.index)
