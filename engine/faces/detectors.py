"""Choose and build a detector by name: `auto` takes RetinaFace when its weights are present."""

from __future__ import annotations

import logging

import torch

from engine.faces.detection import Detector
from engine.weights import RETINAFACE_RESNET50, weights_path

log = logging.getLogger(__name__)

DETECTORS = ("auto", "retinaface", "mtcnn")


def choose_detector(name: str = "auto") -> tuple[str, str]:
    """The detector `name` resolves to, with the reason (said to the user)."""
    if name not in DETECTORS:
        raise ValueError(f"unknown detector {name!r}: choose one of {', '.join(DETECTORS)}")
    if name != "auto":
        return name, "asked for"
    path = weights_path(RETINAFACE_RESNET50)
    if path.exists():
        return "retinaface", f"its weights are present at {path}"
    return "mtcnn", (f"RetinaFace weights are not at {path} (run `python -m engine weights` to fetch "
                     "them); MTCNN's ship with facenet-pytorch")


def build_detector(name: str = "auto", device: torch.device | str = "cpu", **kwargs) -> Detector:
    chosen, why = choose_detector(name)
    log.info("detector: %s (%s)", chosen, why)
    if chosen == "retinaface":
        from engine.faces.retinaface import RetinaFaceDetector

        return RetinaFaceDetector(device=device, **kwargs)
    from engine.faces.mtcnn import MTCNNDetector

    return MTCNNDetector(device=device, **kwargs)
