"""The provenance record every swapped photo and video carries: what it is and where it came from.

One `Provenance` is made per output (`for_output`); the container metadata (`engine.provenance.metadata`)
stores it as JSON, and its `payload` is what the pixel watermark (`engine.provenance.watermark`)
hides in each swapped face: a fixed studio signature plus a tag derived from the model's id, so a
file stripped of its metadata still says "made by this studio, with a model whose id starts ...".
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib import metadata as _pkg
from pathlib import Path

STUDIO = "faceswap-studio"
METADATA_KEY = "faceswap-studio-provenance"  # the key of the JSON record in every container
SIGNATURE = 0x5A3C  # 16 bits: the studio's half of the watermark payload
PAYLOAD_BITS = 32


def studio_version() -> str:
    try:
        return _pkg.version(STUDIO)
    except _pkg.PackageNotFoundError:  # run from a checkout (not pip-installed): pyproject's version
        import tomllib

        pyproject = Path(__file__).resolve().parents[2] / "pyproject.toml"
        try:
            return tomllib.loads(pyproject.read_text())["project"]["version"]
        except (OSError, KeyError, tomllib.TOMLDecodeError):
            return "unknown"


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def model_id(model_dir: str | os.PathLike) -> str:
    """The model's id: sha256 of its weight files (the swap model and, if present, its colour network),
    so two folders with the same weights share an id and retraining changes it."""
    from engine.models.folder import COLOR_WEIGHTS, WEIGHTS

    digest = hashlib.sha256()
    for name in (WEIGHTS, COLOR_WEIGHTS):
        path = Path(model_dir) / name
        if path.is_file():
            digest.update(name.encode())
            digest.update(bytes.fromhex(file_sha256(path)))
    return digest.hexdigest()


def payload_for(model: str) -> int:
    """The 32-bit watermark payload: the studio signature in the high 16 bits, the model id's first
    16 bits in the low ones."""
    return (SIGNATURE << 16) | int(model[:4], 16)


def payload_bits(payload: int) -> list[int]:
    """The payload's bits, most significant first."""
    return [(payload >> (PAYLOAD_BITS - 1 - k)) & 1 for k in range(PAYLOAD_BITS)]


def bits_payload(bits) -> int:
    value = 0
    for bit in bits:
        value = (value << 1) | int(bit)
    return value


@dataclass
class Provenance:
    """What an output says about itself; `synthetic` is True for every file the studio swaps."""

    model_id: str
    source_sha256: str | None = None
    source_name: str | None = None
    preset: str | None = None
    watermark: bool = True  # False when the user asked for unmarked pixels (a research protocol)
    synthetic: bool = True
    studio: str = STUDIO
    version: str = field(default_factory=studio_version)
    created: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    @property
    def payload(self) -> int:
        return payload_for(self.model_id)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Provenance | None:
        """The record in `text`, or None when it is not one of ours."""
        try:
            data = json.loads(text)
        except (TypeError, ValueError):
            return None
        if not isinstance(data, dict) or data.get("studio") != STUDIO or not isinstance(data.get("model_id"), str):
            return None
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        try:
            return cls(**known)
        except TypeError:
            return None

    def summary(self) -> str:
        """One line a person reads: "synthetic, made by faceswap-studio 0.1.0 with model 1a2b3c4d5e6f on ..."."""
        mark = "" if self.watermark else " (pixel watermark turned off by the user)"
        source = f" from {self.source_name}" if self.source_name else ""
        return (f"synthetic, made by {self.studio} {self.version} with model {self.model_id[:12]}"
                f"{f' ({self.preset})' if self.preset else ''}{source}, on {self.created}{mark}")


def for_output(model_dir: str | os.PathLike, source: str | os.PathLike | None, *, watermark: bool = True,
               model: str | None = None) -> Provenance:
    """The record of one output swapped from `source` by the model in `model_dir` (`model`: its id, when
    the caller has it already)."""
    from engine.models.folder import read_config

    try:
        preset = read_config(model_dir).get("model", {}).get("preset")
    except Exception:  # the record never stops a swap: a folder that loaded has a readable config anyway
        preset = None
    src = Path(source) if source is not None else None
    return Provenance(model_id=model or model_id(model_dir),
                      source_sha256=file_sha256(src) if src is not None and src.is_file() else None,
                      source_name=src.name if src is not None else None, preset=preset, watermark=watermark)
