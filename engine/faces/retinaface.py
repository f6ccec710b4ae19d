"""RetinaFace (ResNet-50) from retinaface-pytorch, batched.

We use the package's network, prior boxes and box decoding, and do the pre-processing ourselves
(resize, ImageNet normalisation, padding to a common size) so that frames run through the network
in batches; its own `predict_single` handles one image at a time and needs albumentations.
"""

from __future__ import annotations

import functools
import pickle
import warnings
from pathlib import Path

import cv2
import numpy as np
import torch
from torchvision.ops import nms

from engine.errors import UserError
from engine.faces.detection import Face
from engine.weights import RETINAFACE_RESNET50, weights_path

MEAN = np.array([0.485, 0.456, 0.406], np.float32) * 255
STD = np.array([0.229, 0.224, 0.225], np.float32) * 255
VARIANCE = (0.1, 0.2)
MAX_FACES = 750  # per image after NMS, as in the reference implementation


def build_network() -> torch.nn.Module:
    from retinaface.network import RetinaFace

    with warnings.catch_warnings():  # the package still passes torchvision's old `pretrained=False`
        warnings.simplefilter("ignore", UserWarning)
        return RetinaFace(name="Resnet50", pretrained=False, in_channels=256, out_channels=256,
                          return_layers={"layer2": 1, "layer3": 2, "layer4": 3})


def load_network(path: str | Path | None = None) -> torch.nn.Module:
    path = Path(path) if path else weights_path(RETINAFACE_RESNET50)
    if not path.exists():
        raise UserError(f"RetinaFace weights not found at {path}: run `python -m engine weights` "
                        f"(needs internet once), or use --detector mtcnn")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        net = build_network()
        net.load_state_dict(state)
    except (RuntimeError, OSError, KeyError, EOFError, pickle.UnpicklingError) as err:
        raise UserError(f"{path} is not a RetinaFace ResNet-50 state dict ({err}); delete it and run "
                        f"`python -m engine weights` again") from err
    return net.eval()


@functools.lru_cache(maxsize=16)
def _priors(height: int, width: int) -> torch.Tensor:
    from retinaface.prior_box import priorbox

    return priorbox(min_sizes=[[16, 32], [64, 128], [256, 512]], steps=[8, 16, 32], clip=False,
                    image_size=(height, width))


class RetinaFaceDetector:
    name = "retinaface"

    def __init__(self, device: torch.device | str = "cpu", weights: str | Path | None = None,
                 max_side: int = 960, threshold: float = 0.5, nms_threshold: float = 0.4) -> None:
        self.device = torch.device(device)
        self.net = load_network(weights).to(self.device)
        self.max_side, self.threshold, self.nms_threshold = max_side, threshold, nms_threshold

    def detect(self, images: list[np.ndarray]) -> list[list[Face]]:
        from retinaface.box_utils import decode, decode_landm

        if not images:
            return []
        scales = [min(1.0, self.max_side / max(im.shape[:2])) for im in images]
        resized = [im if s == 1.0 else cv2.resize(im, None, fx=s, fy=s, interpolation=cv2.INTER_AREA)
                   for im, s in zip(images, scales, strict=True)]
        # pad every image to one size, a multiple of the coarsest stride, so they stack into a batch
        h = int(np.ceil(max(r.shape[0] for r in resized) / 32) * 32)
        w = int(np.ceil(max(r.shape[1] for r in resized) / 32) * 32)
        batch = np.zeros((len(resized), h, w, 3), np.float32)
        for i, r in enumerate(resized):
            batch[i, : r.shape[0], : r.shape[1]] = (r.astype(np.float32) - MEAN) / STD
        x = torch.from_numpy(batch).permute(0, 3, 1, 2).to(self.device)
        with torch.inference_mode():
            loc, conf, land = self.net(x)
        priors = _priors(h, w).to(self.device)
        box_scale = torch.tensor([w, h] * 2, dtype=torch.float32, device=self.device)
        lm_scale = torch.tensor([w, h] * 5, dtype=torch.float32, device=self.device)
        scores_all = torch.softmax(conf.float(), dim=-1)[..., 1]
        results = []
        for i, scale in enumerate(scales):
            keep = scores_all[i] > self.threshold
            boxes = decode(loc[i][keep].float(), priors[keep], VARIANCE) * box_scale
            lms = decode_landm(land[i][keep].float(), priors[keep], VARIANCE) * lm_scale
            scores = scores_all[i][keep]
            order = nms(boxes, scores, self.nms_threshold)[:MAX_FACES]
            boxes, lms, scores = (t[order].cpu().numpy().astype(np.float64) for t in (boxes, lms, scores))
            hh, ww = images[i].shape[:2]
            faces = []
            for b, lm, s in zip(boxes / scale, lms / scale, scores, strict=True):
                b = np.clip(b, 0, [ww, hh, ww, hh])
                if b[2] - b[0] >= 1 and b[3] - b[1] >= 1:
                    faces.append(Face(box=b, score=float(s), landmarks=lm.reshape(5, 2)))
            results.append(faces)
        return results
