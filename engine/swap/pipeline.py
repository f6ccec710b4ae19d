"""Swap the faces of a frame: detect -> align -> encode -> decode as the other identity -> colour -> paste.

One `Swapper` holds the loaded model, the detector and the settings. Photos, videos and the web
preview all call it, so a face looks the same everywhere, and settings change between calls
(`update`) without reloading the model. Faces are cut out with exactly the coverage and resolution
the model trained with (`engine.faces.align`, the same geometry as extraction and training), and
pasted from a larger crop of the same geometry (`BLEND_SIZE`), so the mask edge and `--erode` /
`--blur` are in pixels of a 256 px face whatever the model's resolution.

Colour mode `net` uses the model folder's colour network (`engine.models.colornet`) instead of a
statistics transfer: it renders the new face at 2x or 4x the model's resolution in the destination
frame's colours, and that larger face is what gets pasted. It lives here, not in
`engine.swap.color`'s registry of same-size transfers, because it needs the model and changes the
face's size; `auto` picks it whenever the folder has a colour network.

Poisson blending (the default) is solved in the aligned crop as a colour membrane (`engine.swap.membrane`);
the face plus its membrane is then pasted with the feathered mask. A video steadies the membrane and the
face itself where it shimmers, along each face's track (`engine.swap.steady`). Mixed cloning and alpha go through
`engine.swap.blend` in the frame.

From the model through the colour correction (or the colour network), faces stay float tensors on
the model's device; they become 8-bit pixels as they leave it, to be resized and pasted.
The settings themselves, with their defaults and checks, live in `engine.swap.settings`.
"""

from __future__ import annotations

import os
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields, replace
from functools import partial
from pathlib import Path

import cv2
import numpy as np
import torch

from engine.errors import UserError
from engine.faces import align
from engine.faces.detection import Detector, Face
from engine.faces.extract import ExtractOptions
from engine.faces.mask import face_region_mask
from engine.provenance import watermark
from engine.provenance.record import Provenance, for_output, model_id, payload_for
from engine.swap.blend import blend
from engine.swap.color import correct_faces, to_tensor, to_uint8
from engine.swap.detail import FEATURE_BAND, skin_weight, with_detail
from engine.swap.masks import blend_mask
from engine.swap.membrane import solve_membrane, with_membrane
from engine.swap.selection import FaceSelector
from engine.swap.settings import BLEND_SIZE, DETECT_SIZE, DIRECTIONS, NET_MODE, SwapSettings
from engine.swap.steady import Steadier, with_steady_face

MIN_SCORE = ExtractOptions.min_score  # the same bar as extraction, so swapped faces look like trained ones
_SUPPORT_MARGIN = 4  # px of the aligned crop kept around the mask: the clone's boundary reads them
STAGES = ("decode", "detect", "track", "model", "colour", "blend", "mark", "encode")


def auto_color_mode(model_dir: Path) -> str:
    """What `--color auto` means for this model folder: its colour network when it has one, else Reinhard."""
    from engine.models import has_color_net

    return NET_MODE if has_color_net(model_dir) else "reinhard"


@dataclass(frozen=True)
class SwappedFace:
    """Where one face was pasted: its landmarks, the frame -> crop matrix and the crop's blend mask."""

    landmarks: np.ndarray  # (5, 2) frame pixels, after any smoothing
    matrix: np.ndarray  # 2x3 frame -> aligned crop of `mask`'s size
    mask: np.ndarray  # (S, S) float blend mask in aligned space

    @property
    def center(self) -> np.ndarray:
        """Frame point the centre of the pasted crop lands on."""
        s = self.mask.shape[0]
        return align.transform_points([((s - 1) / 2, (s - 1) / 2)], align.invert(self.matrix))[0]

    def region(self, shape: tuple[int, ...]) -> np.ndarray:
        """Bool (H, W): frame pixels the paste may have changed (warped mask > 0)."""
        warped = cv2.warpAffine((self.mask > 0).astype(np.uint8), align.invert(self.matrix), (shape[1], shape[0]),
                                flags=cv2.INTER_NEAREST, borderValue=0)
        return warped > 0


class StageClock:
    """Seconds spent per pipeline stage, for progress metrics and the benchmark."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] += time.perf_counter() - start

    def reset(self) -> None:
        self.seconds.clear()


class Swapper:
    """A loaded model + detector + settings: `swap_image(rgb) -> rgb` for photos, video frames and previews."""

    def __init__(self, model_dir: str | os.PathLike, settings: SwapSettings | None = None, *,
                 device: str | torch.device = "auto", detector: str | Detector = "auto",
                 detect_size: int = DETECT_SIZE) -> None:
        from engine.device import pick_device
        from engine.models import has_color_net, load_color_net, load_model

        self.model_dir = Path(model_dir)
        if not self.model_dir.is_dir():
            raise UserError(f"-m {self.model_dir}: no such folder; pass the model folder that training wrote")
        try:
            self.device = pick_device(str(device))
        except ValueError as err:
            raise UserError(f"--device: {err}") from err
        self.model, self.meta = load_model(self.model_dir, self.device)
        self.model_id = model_id(self.model_dir)  # what every output's provenance names
        missing = {side for pair in DIRECTIONS.values() for side in pair} - set(self.model.identities)
        if missing:
            raise UserError(f"{self.model_dir} has decoders {list(self.model.identities)}, swapping needs 'a' and 'b': "
                            "use a model trained by `python -m engine train`")
        self.resolution = int(self.model.resolution)
        self.coverage = float(self.model.coverage)  # the crop geometry the model trained on
        self.color_net = load_color_net(self.model_dir, self.device)[0] if has_color_net(self.model_dir) else None
        self.clock = StageClock()
        if isinstance(detector, str):
            from engine.faces.detectors import build_detector

            detector = build_detector(detector, device=self.device, max_side=detect_size)
        self.detector = detector
        # colour statistics are taken under the face only
        self._stats_weights = torch.from_numpy(face_region_mask(self.resolution, self.coverage)).to(self.device)
        self._settings = SwapSettings()
        self._color = auto_color_mode(self.model_dir)
        self._masks: dict[tuple[int, int, int], np.ndarray] = {}
        self._skin_weights: dict[int, np.ndarray] = {}  # where the frame's fine detail may go, by crop size
        self.selector = FaceSelector.build("largest", MIN_SCORE, self.detect)
        self.update(settings or SwapSettings())

    @property
    def settings(self) -> SwapSettings:
        return self._settings

    def update(self, settings: SwapSettings | None = None, **changes) -> SwapSettings:
        """Switch to new settings (whole or by field); UserError, with the old ones kept, if invalid."""
        unknown = set(changes) - {f.name for f in fields(SwapSettings)}
        if unknown:
            raise TypeError(f"unknown swap settings: {', '.join(sorted(unknown))}")
        new = replace(settings or self._settings, **changes)
        new.check()
        if (new.faces, new.min_score) != (self.selector.rule, self.selector.min_score):
            self.selector = FaceSelector.build(new.faces, new.min_score, self.detect)
        color = auto_color_mode(self.model_dir) if new.color == "auto" else new.color
        if color == NET_MODE and self.color_net is None:
            raise UserError(f"--color {NET_MODE}: {self.model_dir} has no colour network; train one with "
                            f"`python -m engine train-color --model {self.model_dir}`, or use --color reinhard")
        self._color, self._settings = color, new
        return new

    @property
    def face_size(self) -> int:
        """Side of the face that is pasted before resizing to the blend size: the colour net's output
        in mode `net`, else the model's."""
        return self.resolution * (self.color_net.scale if self._color == NET_MODE else 1)

    @property
    def blend_size(self) -> int:
        """Side of the aligned crop that is pasted: at least BLEND_SIZE, and never below the face's."""
        return max(BLEND_SIZE, self.face_size)

    @property
    def color_mode(self) -> str:
        """The colour mode in use (`auto` resolved)."""
        return self._color

    def detect(self, frames: list[np.ndarray]) -> list[list[Face]]:
        with self.clock("detect"):
            return self.detector.detect(frames)

    def find_faces(self, frames: list[np.ndarray]) -> list[list[Face]]:
        """Detected faces of each frame that the `--faces` rule picks."""
        detections = self.detect(frames)
        with self.clock("detect"):
            return [self.selector(frame, faces) for frame, faces in zip(frames, detections, strict=True)]

    def swap_image(self, rgb: np.ndarray) -> np.ndarray:
        """`rgb` with its selected faces swapped (an unchanged copy when it has none)."""
        faces = self.find_faces([rgb])[0]
        return self.swap_at_landmarks([rgb], [[f.landmarks for f in faces]])[0][0]

    def swap_at_landmarks(self, frames: list[np.ndarray], landmarks: list[list[np.ndarray]],
                          indices: list[int] | None = None, steady: Steadier | None = None,
                          ) -> tuple[list[np.ndarray], list[list[SwappedFace]]]:
        """Swap the faces at the given landmarks in each frame, all faces through the model in one batch.

        `indices` are the frames' places in their video (the mark's sign follows them, `watermark.code`);
        None: 0 for each (photos). `steady` low-passes each face (where it shimmers) and its Poisson membrane
        along its track (videos: `engine.swap.steady`); None pastes each face on its own.

        Returns the new frames (copies) and, per frame, where each face went.
        """
        side = DIRECTIONS[self._settings.direction][1]
        jobs = [(i, j, np.asarray(points, dtype=np.float64)) for i, per_frame in enumerate(landmarks)
                for j, points in enumerate(per_frame)]
        outputs = [frame.copy() for frame in frames]
        placed: list[list[SwappedFace]] = [[] for _ in frames]
        if not jobs:
            return outputs, placed
        with self.clock("model"):
            matrices = [align.alignment_matrix(points, self.resolution, self.coverage) for _, _, points in jobs]
            crops = np.stack([align.warp_face(frames[i], m, self.resolution)
                              for (i, _, _), m in zip(jobs, matrices, strict=True)])
            destinations, generated, learned = self._render(crops, side)
        with self.clock("colour"):
            faces = self._colour(generated, destinations)
        size = self.blend_size
        for k, (i, j, points) in enumerate(jobs):
            with self.clock("blend"):
                mask = self._blend_mask(None if learned is None else learned[k])
                matrix = align.alignment_matrix(points, size, self.coverage)
                face, frame_crop = faces[k], None
                if steady is not None:  # before the frame's detail, which moves with the frame as it is
                    face = with_steady_face(face, partial(steady, i, j, "face"))
                if self._settings.detail > 0 or self._settings.feature_detail > 0:
                    # the skin's band starts above what the pasted face carries, the features' above twice the
                    # model's own pixels, whatever the colour mode (so `--color-strength 0` stays Reinhard's face)
                    frame_crop = align.warp_face(frames[i], matrix, size)
                    face = with_detail(face, frame_crop, self.face_size,
                                       self._settings.detail, self._skin(size), self._settings.feature_detail,
                                       FEATURE_BAND * self.resolution)
                mode = self._settings.blend
                if mode == "poisson":  # the membrane in the aligned crop, over what is pasted already
                    # until a face is pasted in this frame its output is the frame itself, whose crop is cut
                    under = frame_crop if frame_crop is not None and not placed[i] else \
                        align.warp_face(outputs[i], matrix, size)
                    membrane = solve_membrane(face, under, mask)
                    face = with_membrane(face, membrane if steady is None else steady(i, j, "membrane", membrane))
                    mode = "alpha"
                outputs[i] = self._paste(outputs[i], face, matrix, mask, mode)
            placed[i].append(SwappedFace(points, matrix, mask))
        if self._settings.watermark:
            with self.clock("mark"):
                for i, faces_placed in enumerate(placed):
                    for face in faces_placed:
                        watermark.embed(outputs[i], face.landmarks, payload_for(self.model_id),
                                        index=0 if indices is None else indices[i], region=(face.mask, face.matrix))
        return outputs, placed

    def provenance(self, source: str | os.PathLike | None) -> Provenance:
        """The record an output swapped from `source` with these settings carries (container metadata)."""
        return for_output(self.model_dir, source, watermark=self._settings.watermark, model=self.model_id)

    def _render(self, crops: np.ndarray, side: str) -> tuple[torch.Tensor, torch.Tensor, np.ndarray | None]:
        """Aligned uint8 crops -> (the crops, the generated faces: (N, 3, R, R) in [0, 1] on the device;
        learned masks in [0, 1] or None)."""
        x = to_tensor(crops, self.device)
        with torch.inference_mode():
            rgb, mask = self.model(x, side)
        return x, rgb.float().clamp(0, 1), (None if mask is None else mask[:, 0].float().clamp(0, 1).cpu().numpy())

    def _colour(self, generated: torch.Tensor, destinations: torch.Tensor) -> list[np.ndarray]:
        """The faces to paste, uint8 at the blend size: colour-corrected (or through the colour net) on
        the device, then rounded to 8 bits as they leave it and resized there.

        In mode `net`, `color_strength` is the network's share of the face and the rest is
        `--color reinhard`'s face, so strength 0 pastes exactly what `--color reinhard` pastes.
        """
        strength, size = self._settings.color_strength, self.blend_size
        with torch.inference_mode():
            if self._color != NET_MODE:
                faces = to_uint8(correct_faces(generated, destinations, self._stats_weights, self._color, strength))
                return [_resized(face, size) for face in faces]
            shown = DIRECTIONS[self._settings.direction][0]
            faces = [_resized(face, size) for face in self._net_faces(generated, destinations, shown)]
            if strength >= 1.0:
                return faces
            classical = to_uint8(correct_faces(generated, destinations, self._stats_weights, "reinhard"))
        return [_mixed(face, _resized(other, size), strength) for face, other in zip(faces, classical, strict=True)]

    def _net_faces(self, generated: torch.Tensor, destinations: torch.Tensor, shown: str) -> np.ndarray:
        """Generated faces through the colour net's head of the identity the frames show -> (N, sR, sR, 3)
        uint8 faces (the destination's statistics condition it when it was trained so)."""
        from engine.models.colornet import pair_stats

        net = self.color_net
        with torch.inference_mode():
            stats = pair_stats(generated, destinations, self._stats_weights) if net.condition else None
            return to_uint8(net(generated, shown, stats).float())

    def _paste(self, frame: np.ndarray, face: np.ndarray, matrix: np.ndarray, mask: np.ndarray,
               mode: str) -> np.ndarray:
        """`blend` of just the mask's bounding box (plus a margin): the same pixels, less to warp and clone.

        The face region fills about a third of the aligned crop; blending the whole crop would warp,
        clone and composite the zero-mask rest as well (about 2.5x the work).
        """
        rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
        if rows.size == 0:
            return frame.copy()
        size = mask.shape[0]
        y0, y1 = max(0, rows[0] - _SUPPORT_MARGIN), min(size, rows[-1] + 1 + _SUPPORT_MARGIN)
        x0, x1 = max(0, cols[0] - _SUPPORT_MARGIN), min(size, cols[-1] + 1 + _SUPPORT_MARGIN)
        shifted = matrix.copy()
        shifted[:, 2] -= (x0, y0)  # frame -> the cut-out's own pixels
        face, mask = np.ascontiguousarray(face[y0:y1, x0:x1]), np.ascontiguousarray(mask[y0:y1, x0:x1])
        return blend(frame, face, shifted, mask, mode)

    def _skin(self, size: int) -> np.ndarray:
        """Where the frame's fine detail may go (`detail.skin_weight`), made once per size."""
        if size not in self._skin_weights:
            self._skin_weights[size] = skin_weight(size, self.coverage)
        return self._skin_weights[size]

    def _blend_mask(self, learned: np.ndarray | None) -> np.ndarray:
        s = self._settings
        if learned is not None:
            return blend_mask(self.blend_size, self.coverage, learned, erode=s.erode, blur=s.blur)
        key = (self.blend_size, s.erode, s.blur)
        if key not in self._masks:
            self._masks[key] = blend_mask(self.blend_size, self.coverage, erode=s.erode, blur=s.blur)
        return self._masks[key]


def _resized(face: np.ndarray, size: int) -> np.ndarray:
    """A square face at `size` px (bicubic; unchanged when it already is)."""
    return face if face.shape[0] == size else cv2.resize(face, (size, size), interpolation=cv2.INTER_CUBIC)


def _mixed(face: np.ndarray, other: np.ndarray, share: float) -> np.ndarray:
    """`share` of `face` and the rest of `other`, rounded to uint8."""
    return np.clip(np.rint(share * face.astype(np.float32) + (1.0 - share) * other.astype(np.float32)),
                   0, 255).astype(np.uint8)
