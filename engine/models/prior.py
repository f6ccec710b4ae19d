"""The face prior: a preset's encoder and decoders pretrained on thousands of people, shipped in weights/.

A new model that starts from random weights spends its first half hour learning what a face is
before it learns who B is; one that starts from the prior (`train --prior auto`, the default) starts
from a network that already reconstructs faces. `python -m engine pretrain` makes a prior; the repo
ships `weights/prior-<preset>-<resolution>.safetensors` (float16) with a JSON card beside it that says
what it was trained on, for how long, on what machine, and under which licence.

The file holds a whole model's tensors (encoder, shared decoder, decoders `a` and `b`), so a new
model's decoders start from the prior's decoders of the same name.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from engine.atomic import write_json, write_with
from engine.errors import UserError
from engine.provenance.record import file_sha256

log = logging.getLogger(__name__)

SHIPPED = Path(__file__).resolve().parents[2] / "weights"  # tracked in git: the priors the studio ships
MAX_BYTES = 25 * 2**20  # the most a shipped weights file may weigh
LICENCE = ("non-commercial research only: trained on LFW (Labeled Faces in the Wild) and UTKFace, both "
           "published for non-commercial research; a model started from this prior inherits that")


def shipped_path(preset: str, resolution: int) -> Path:
    return SHIPPED / f"prior-{preset}-{resolution}.safetensors"


def card_path(path: str | Path) -> Path:
    return Path(path).with_suffix(".json")


def resolve(choice: str | None, preset: str, resolution: int) -> Path | None:
    """The prior file `choice` names: "auto" (the shipped one for this preset and size, None when there is
    none), "none" (None) or a path (UserError when it does not exist)."""
    if choice in (None, "", "none"):
        return None
    if choice == "auto":
        path = shipped_path(preset, resolution)
        return path if path.is_file() else None
    path = Path(choice)
    if path.is_dir():
        path = path / f"prior-{preset}-{resolution}.safetensors"
    if not path.is_file():
        raise UserError(f"--prior {choice}: no such prior file; pass a prior-<preset>-<size>.safetensors written "
                        "by `python -m engine pretrain`, `auto` for the shipped one, or `none`")
    return path


def read_card(path: str | Path) -> dict:
    """The prior's card (JSON beside it); UserError naming the file when it is missing or unreadable."""
    card = card_path(path)
    try:
        return json.loads(card.read_text())
    except (OSError, ValueError) as err:
        raise UserError(f"{card}: the prior's card is missing or unreadable ({err}); re-run "
                        "`python -m engine pretrain` or pass --prior none") from err


def load_into(model: nn.Module, path: str | Path) -> dict:
    """Copy the prior at `path` into `model` (a fresh model of the same preset and size) -> its card.

    UserError, naming both, when the prior was made for another preset, size or mask setting, or its
    tensors do not match the model's: a prior is all or nothing, never a silent partial copy.
    """
    path = Path(path)
    card = read_card(path)
    made = card.get("model", {})
    mine = model.config
    for key in ("preset", "resolution", "learn_mask"):
        if made.get(key) != mine.get(key):
            raise UserError(f"{path} is a prior for {made.get('preset')} at {made.get('resolution')} px "
                            f"(mask {made.get('learn_mask')}), not for this {mine['preset']} model at "
                            f"{mine['resolution']} px (mask {mine['learn_mask']}): pass --prior none, or the "
                            "prior of this preset")
    try:
        with safe_open(str(path), framework="pt") as f:
            tensors = {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118 (safe_open has no iterator)
    except (SafetensorError, OSError) as err:
        raise UserError(f"{path}: not a readable prior ({err}); re-run `python -m engine pretrain`") from err
    own = model.state_dict()
    wrong = sorted(set(own) ^ set(tensors)) or sorted(k for k in own if own[k].shape != tensors[k].shape)
    if wrong:
        raise UserError(f"{path} does not fit this {mine['preset']} model (first difference: {wrong[0]}): "
                        "pass --prior none, or re-run `python -m engine pretrain` for this preset")
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in tensors.items()})
    return card


def describe(path: Path, card: dict) -> str:
    """"the shipped prior (lite 64 px, 5,746 people + 9,780 faces, 60 min)": for logs and the page."""
    data = card.get("data", {})
    people = data.get("identities")
    faces = data.get("faces")
    where = "the shipped prior" if path.parent == SHIPPED else f"the prior {path}"
    bits = [f"{card.get('model', {}).get('preset')} {card.get('model', {}).get('resolution')} px"]
    if faces:
        bits.append(f"{faces:,} faces" + (f" of {people:,}+ people" if people else ""))
    if card.get("minutes"):
        bits.append(f"{card['minutes']:.0f} min pretraining")
    return f"{where} ({', '.join(bits)})"


def write(path: str | Path, model: nn.Module, card: dict) -> dict:
    """The model's tensors as float16 safetensors at `path` (atomically) and its card beside it, with the
    file's sha256 and size filled in; UserError when the file would pass MAX_BYTES."""
    path = Path(path)
    tensors = {k: v.detach().to("cpu", torch.float16).contiguous() for k, v in model.state_dict().items()}
    size = sum(t.numel() * 2 for t in tensors.values())
    if size > MAX_BYTES:
        raise UserError(f"a prior of {model.config['preset']} would be {size / 2**20:.1f} MB, over the "
                        f"{MAX_BYTES // 2**20} MB a shipped weights file may weigh")
    write_with(path, lambda tmp: save_file(tensors, tmp, metadata={"format": "pt", "kind": "faceswap-studio prior"}))
    card = {**card, "model": model.config, "file": path.name, "bytes": path.stat().st_size,
            "sha256": file_sha256(path), "licence": LICENCE}
    write_json(card_path(path), card)
    return card
