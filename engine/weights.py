"""Where downloaded weights live (weights/ beside the engine, or $FACESTUDIO_WEIGHTS) and how they arrive."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from engine.errors import UserError


@dataclass(frozen=True)
class WeightsFile:
    name: str       # file name under the weights folder
    url: str
    what: str       # one line for messages


# retinaface-pytorch's published ResNet-50 weights (the URL its `pre_trained_models` module uses)
RETINAFACE_RESNET50 = WeightsFile(
    name="retinaface_resnet50_2020-07-20.pth",
    url="https://github.com/ternaus/retinaface/releases/download/0.01/retinaface_resnet50_2020-07-20-f168fae3c.zip",
    what="RetinaFace ResNet-50 face detector",
)

ALL_WEIGHTS = [RETINAFACE_RESNET50]


def weights_dir() -> Path:
    return Path(os.environ.get("FACESTUDIO_WEIGHTS", Path(__file__).resolve().parents[1] / "weights"))


def weights_path(spec: WeightsFile) -> Path:
    return weights_dir() / spec.name


def fetch(spec: WeightsFile, progress: bool = True) -> Path:
    """Download `spec` into the weights folder (zip archives unpacked), atomically; return its path."""
    import shutil
    import tempfile
    import zipfile

    import torch

    target = weights_path(spec)
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".download-") as tmp:
        raw = Path(tmp) / Path(spec.url).name
        try:
            torch.hub.download_url_to_file(spec.url, str(raw), progress=progress)
        except OSError as err:
            raise UserError(f"could not download {spec.what} from {spec.url} ({err}); copy the file to "
                            f"{target} by hand, or use --detector mtcnn, which works offline") from err
        if zipfile.is_zipfile(raw):
            with zipfile.ZipFile(raw) as zf:
                member = next(m for m in zf.namelist() if not m.endswith("/"))
                with zf.open(member) as src, open(Path(tmp) / "unpacked", "wb") as dst:
                    shutil.copyfileobj(src, dst)
            raw = Path(tmp) / "unpacked"
        os.replace(raw, target)
    return target
