"""Who a face is and where its features are: dlib's ResNet embeddings and 68-point landmarks.

The judges must not be the model under test, and must run offline: dlib's face-recognition ResNet
(128-d embeddings, 99.38% on LFW) and its 68-point shape predictor ship their weights inside the
`face-recognition-models` wheel, and `dlib-bin` is a prebuilt dlib, so nothing is downloaded.

Faces are located from our own 5-point landmarks rather than by a second detector: the 68-point
predictor was trained on boxes from dlib's HOG detector, so `DLIB_BOX` places that box relative
to the 5-point template (see `box_from_landmarks`). The same box serves a destination frame and its
swapped frame, so two identical images always get identical landmarks.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from engine.errors import UserError
from engine.faces import align

# dlib's HOG face box in units of the aligned face square (engine.faces.align's template square):
# centre x, centre y, side. Measured as the median over 59 faces (40 Carell photos, talk2/talk3
# frames) where dlib.get_frontal_face_detector and MTCNN both found the face; the spread was
# 0.03 for the centre and 0.05 for the side. tests/test_evaluate.py re-checks it on real photos.
DLIB_BOX = (0.5, 0.63, 0.78)
CHIP_SIZE, CHIP_PADDING = 150, 0.25  # the face chip dlib's ResNet was trained on
INSTALL_HINT = "install them with `pip install dlib-bin face-recognition-models`"


def model_files() -> dict[str, Path]:
    """Paths of the two dlib model files inside the installed face-recognition-models package.

    Found through the import system without importing the package: its `__init__` needs
    `pkg_resources`, which current setuptools no longer ships.
    """
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"evaluation needs dlib's face models (package face-recognition-models): {INSTALL_HINT}")
    folder = Path(next(iter(spec.submodule_search_locations))) / "models"
    files = {"landmarks": folder / "shape_predictor_68_face_landmarks.dat",
             "embedding": folder / "dlib_face_recognition_resnet_model_v1.dat"}
    for path in files.values():
        if not path.is_file():
            raise UserError(f"{path} is missing: the face-recognition-models install is broken; reinstall it "
                            "with `pip install --force-reinstall face-recognition-models`")
    return files


def _dlib():
    try:
        import dlib
    except ImportError as err:
        raise UserError(f"evaluation needs dlib: {INSTALL_HINT}") from err
    return dlib


class FaceAnalyzer:
    """dlib's landmark predictor and embedding ResNet, loaded once (about 120 MB of weights)."""

    def __init__(self) -> None:
        dlib = _dlib()
        files = model_files()
        self._dlib = dlib
        self._predictor = dlib.shape_predictor(str(files["landmarks"]))
        self._encoder = dlib.face_recognition_model_v1(str(files["embedding"]))

    def box_from_landmarks(self, points5: np.ndarray):
        """The dlib rectangle dlib's own detector would put around a face with these 5 landmarks."""
        to_square = align.alignment_matrix(points5, 1, 1.0)  # image pixels -> unit face square
        scale = float(np.sqrt(abs(np.linalg.det(to_square[:, :2]))))
        cx, cy = align.transform_points([DLIB_BOX[:2]], align.invert(to_square))[0]
        half = 0.5 * DLIB_BOX[2] / scale
        return self._dlib.rectangle(int(round(cx - half)), int(round(cy - half)),
                                    int(round(cx + half)), int(round(cy + half)))

    def box_in_crop(self, size: int, coverage: float):
        """The dlib rectangle of the face in an aligned crop (a face-set image)."""
        return self.box_from_landmarks(align.template_points(size, coverage))

    def shape(self, image: np.ndarray, box):
        """dlib's 68-point fit (a full_object_detection) of the face in `box` of an RGB uint8 image."""
        return self._predictor(np.ascontiguousarray(image, dtype=np.uint8), box)

    def landmarks(self, image: np.ndarray, box) -> np.ndarray:
        """(68, 2) float landmarks in iBUG 300-W order (jaw 0-16, brows, nose 27-35, eyes 36-47, mouth)."""
        return shape_points(self.shape(image, box))

    def analyse(self, image: np.ndarray, box) -> tuple[np.ndarray, np.ndarray]:
        """-> ((68, 2) landmarks, (128,) embedding) of the face in `box`: one landmark fit for both."""
        image = np.ascontiguousarray(image, dtype=np.uint8)
        shape = self._predictor(image, box)
        embedding = np.asarray(self._encoder.compute_face_descriptor(image, shape, 0, CHIP_PADDING))
        return shape_points(shape), embedding

    def embed(self, image: np.ndarray, box) -> np.ndarray:
        """(128,) identity embedding of the face in `box` (faces of one person lie within ~0.6)."""
        return self.analyse(image, box)[1]

    def embed_crops(self, crops: np.ndarray, coverage: float) -> np.ndarray:
        """(N, 128) embeddings of aligned face crops (N, S, S, 3) at `coverage`."""
        if len(crops) == 0:
            return np.zeros((0, 128))
        box = self.box_in_crop(crops.shape[1], coverage)
        return np.stack([self.embed(crop, box) for crop in crops])


def shape_points(shape) -> np.ndarray:
    return np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64)
