"""What an evaluation is asked to do, with the defaults the CLI, the web app and the library share.

Kept free of heavy imports, so `python -m engine --help` shows these defaults without loading torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from engine.swap.settings import VideoSettings

CLIP = 5  # consecutive frames per sampled run (`frames`)


@dataclass
class EvaluateOptions:
    model: Path
    video: Path
    out: Path
    faces_a: Path | None = None  # None: the face sets recorded in the model's training settings
    faces_b: Path | None = None
    frames: int | None = None  # None: the whole video
    reference_faces: int = 120  # faces per set embedded for the identity means
    strip: int = 6  # destination/swapped pairs shown in the HTML report
    smooth: float = VideoSettings.smooth
    device: str = "auto"
    detector: str = "auto"
    settings: object | None = None  # engine.swap.settings.SwapSettings; None: the defaults
