"""What a dataset export is asked to do, with the defaults the CLI, the web tab and the library share.

Kept free of heavy imports, so `python -m engine --help` lists these defaults without loading torch.
Videos and models may carry a name after `=` (`clip.mp4=anna`, `models/AB=carell`): the person a clip
shows, the identity a model puts in. Equal names are one person (`engine.export.split`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from engine.errors import UserError

# FaceForensics++'s three qualities: c0 lossless H.264 (crf 0), c23 "high quality", c40 "low quality"
COMPRESSIONS = {"c0": 0, "c23": 23, "c40": 40}
SPLITS = ("train", "val", "test")
SPLIT_BY = ("identity", "source")


@dataclass(frozen=True)
class VideoInput:
    path: Path
    person: str | None = None  # None: the clip is a person of its own (named after the file)


@dataclass(frozen=True)
class ModelInput:
    path: Path
    identity: str | None = None  # None: the identity is the model folder's name


@dataclass
class ExportOptions:
    videos: list[VideoInput]
    models: list[ModelInput]
    out: Path
    compressions: tuple[str, ...] = ("c23",)
    crops: bool = False
    crop_scale: float = 1.3  # the face box enlarged this much, as most detectors train on
    crop_every: int = 1  # crops of every Nth frame
    split: tuple[float, float, float] = (0.7, 0.15, 0.15)  # train, val, test
    split_by: str = "identity"  # identity: no person in two splits, swapped-in ones too; source: clips' people only
    balance: bool = True  # one fake per original in each split: equal real and fake frames
    max_frames: int | None = None  # the first N frames of each clip; None: all
    seed: int = 0
    watermark: bool = True
    device: str = "auto"
    detector: str = "auto"

    def check(self) -> None:
        """UserError naming the option and the fix for anything out of range (before any work)."""
        if not self.videos:
            raise UserError("--videos: pass at least one video of a real person")
        if not self.models:
            raise UserError("--model: pass at least one model folder written by `train`")
        bad = [c for c in self.compressions if c not in COMPRESSIONS]
        if bad or not self.compressions:
            raise UserError(f"--compression {','.join(self.compressions)}: use one or more of "
                            f"{', '.join(COMPRESSIONS)}, comma-separated")
        if len(self.split) != len(SPLITS) or any(f < 0 for f in self.split) or sum(self.split) <= 0:
            raise UserError(f"--split {','.join(map(str, self.split))}: give three shares for train,val,test "
                            "(0 or more, not all 0), e.g. 0.7,0.15,0.15")
        if self.split_by not in SPLIT_BY:
            raise UserError(f"--split-by {self.split_by!r}: use {' or '.join(SPLIT_BY)}")
        if self.max_frames is not None and self.max_frames < 1:
            raise UserError(f"--max-frames {self.max_frames}: use 1 or more (or leave it out for every frame)")
        if not 1.0 <= self.crop_scale <= 3.0:
            raise UserError(f"--crop-scale {self.crop_scale}: use 1 (the face box) to 3")
        if self.crop_every < 1:
            raise UserError(f"--crop-every {self.crop_every}: use 1 (every frame) or more")


def parse_named(text: str) -> tuple[Path, str | None]:
    """`PATH` or `PATH=NAME` -> (path, name or None); a path that exists as given keeps any '=' it has."""
    if "=" in text and not Path(text).exists():
        path, name = text.rsplit("=", 1)
        if not name.strip():
            raise UserError(f"{text}: nothing after '='; write PATH=NAME or just PATH")
        return Path(path), name.strip()
    return Path(text), None


def parse_compressions(text: str) -> tuple[str, ...]:
    """`c0,c23` -> ("c0", "c23") in FF++'s order, duplicates dropped; UserError for anything else."""
    wanted = {part.strip().lower() for part in text.split(",") if part.strip()}
    bad = sorted(wanted - set(COMPRESSIONS))
    if bad or not wanted:
        raise UserError(f"--compression {text}: use one or more of {', '.join(COMPRESSIONS)}, comma-separated")
    return tuple(c for c in COMPRESSIONS if c in wanted)


def parse_split(text: str) -> tuple[float, float, float]:
    """`0.7,0.15,0.15` -> shares of train, val and test, scaled to sum to 1."""
    try:
        shares = [float(part) for part in text.split(",")]
    except ValueError:
        shares = []
    if len(shares) != len(SPLITS) or any(s < 0 for s in shares) or sum(shares) <= 0:
        raise UserError(f"--split {text}: give three shares for train,val,test (0 or more, not all 0), "
                        "e.g. 0.7,0.15,0.15")
    total = sum(shares)
    return tuple(s / total for s in shares)  # type: ignore[return-value]
