"""MTCNN from facenet-pytorch: its weights ship inside the wheel, so it is the offline default."""

from __future__ import annotations

import cv2
import numpy as np
import torch

from engine.faces.detection import Face, group_by_shape


class MTCNNDetector:
    name = "mtcnn"

    def __init__(self, device: torch.device | str = "cpu", min_face: int = 20, max_side: int = 1280,
                 thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7)) -> None:
        from facenet_pytorch import MTCNN

        self.device = torch.device(device)
        # below `max_side` the image pyramid stays cheap; larger photos are shrunk for detection only
        self.max_side = max_side
        self.min_face = min_face
        self.net = MTCNN(keep_all=True, device=self.device, min_face_size=min_face,
                         thresholds=list(thresholds), post_process=False)

    def detect(self, images: list[np.ndarray]) -> list[list[Face]]:
        results: list[list[Face]] = [[] for _ in images]
        for shape, idx in group_by_shape(images).items():
            scale = min(1.0, self.max_side / max(shape[:2]))
            batch = np.stack([_shrink(images[i], scale) for i in idx])
            if min(batch.shape[1:3]) < self.min_face:
                continue  # no face of min_face px fits (and MTCNN's empty image pyramid would raise)
            with torch.inference_mode():
                boxes, probs, points = self.net.detect(batch, landmarks=True)
            for j, i in enumerate(idx):
                if boxes[j] is None:
                    continue
                results[i] = [Face(box=np.asarray(b, np.float64) / scale, score=float(p),
                                   landmarks=np.asarray(lm, np.float64) / scale)
                              for b, p, lm in zip(boxes[j], probs[j], points[j], strict=True)]
        return results


def _shrink(image: np.ndarray, scale: float) -> np.ndarray:
    if scale >= 1.0:
        return image
    return cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
