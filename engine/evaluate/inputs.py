"""What an evaluation measures against: the face sets, their identity references, held-out faces, and
which frames of the video to swap.

Identity means come from the A and B face sets. Fidelity (SSIM/PSNR) comes from faces of those sets
that training did not see (`held_out`), cut exactly as training shows faces to the model.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from engine.errors import UserError
from engine.progress import StopFlag, Stopped

from . import metrics as M
from .options import CLIP

MAX_HELD_OUT = 64  # faces per side reconstructed for SSIM/PSNR


def spread(count: int, n: int) -> np.ndarray:
    """`n` indices in range(count), evenly spread, first and last included when n > 1."""
    if n <= 0 or count <= 0:
        return np.zeros(0, dtype=np.int64)
    return np.unique(np.linspace(0, count - 1, num=min(n, count)).round().astype(np.int64))


def sample_clips(count: int, frames: int | None, clip: int = CLIP) -> list[list[int]]:
    """Frame indices to swap: the whole video as one run, or ~`frames` frames in runs of `clip`
    consecutive frames spread evenly over it (flicker needs neighbouring frames)."""
    if frames is not None and frames < 2:
        raise UserError(f"--frames {frames}: use 2 or more (flicker needs neighbouring frames)")
    if frames is None or frames >= count:
        return [list(range(count))]
    clip = min(clip, frames)
    runs = max(1, frames // clip)
    starts = spread(count - clip + 1, runs)
    return [list(range(int(s), int(s) + clip)) for s in starts]


def resolve_set(given: Path | None, recorded: str | None, side: str):
    """The face set of `side` to measure with: the one given, else the one the model trained on."""
    from engine.faces.faceset import open_faceset

    path = given if given is not None else recorded
    if path is None:
        raise UserError(f"the model does not record its {side.upper()} face set: pass --faces-{side} FOLDER")
    if given is None and not Path(path).is_dir():
        raise UserError(f"the model trained on face set {path}, which is gone: pass --faces-{side} FOLDER")
    return open_faceset(path)


def reference_embeddings(analyzer, faceset, limit: int, stop: StopFlag) -> np.ndarray:
    """Embeddings of up to `limit` faces of the set, evenly spread over it (all poses and sources)."""
    images = faceset.load_images(spread(len(faceset), limit))
    embeddings = []
    box = analyzer.box_in_crop(faceset.size, faceset.coverage)
    for crop in images:
        if stop:
            raise Stopped
        embeddings.append(analyzer.embed(crop, box))
    return np.stack(embeddings)


def held_out(faceset, train_path: str | None) -> tuple[np.ndarray, bool, str]:
    """(indices of the set's faces that training did not see, whether they truly are unseen, a note).

    The trainer keeps no hold-out: it trains on every face of the sets it is given. So a face counts
    as unseen when neither its pixels (sha1) nor its origin (source file and frame) occur in the face
    set the model trained on, as recorded in the model's training settings. When every face was seen,
    all are used and the note says so.
    """
    from engine.faces.faceset import FaceSet

    every = np.arange(len(faceset))
    if train_path is None or not (Path(train_path) / "faces.json").is_file():
        return every, False, "training face set unknown or gone: all faces used, some may have been seen"
    train = FaceSet(train_path)
    hashes = train.hashes()
    origins = {(e.get("source"), e.get("frame")) for e in train.entries}
    unseen = np.array([i for i, e in enumerate(faceset.entries)
                       if e.get("sha1") not in hashes and (e.get("source"), e.get("frame")) not in origins],
                      dtype=np.int64)
    if len(unseen) == 0:
        return every, False, "every face was in the training set: these are training-set reconstructions"
    return unseen, True, f"{len(unseen)} of {len(faceset)} faces not in the training set {train_path}"


def reconstruction(model, faceset, side: str, train_path: str | None) -> dict:
    """SSIM and PSNR of side->side reconstructions of held-out faces, at the model's crop.

    Faces are cut exactly as training shows them to the model (the plain re-crop at the model's
    coverage and resolution); the model's output is compared with that crop.
    """
    import torch

    from engine.faces.crops import center_crop_batch

    picks, unseen, note = held_out(faceset, train_path)
    picks = picks[spread(len(picks), MAX_HELD_OUT)]
    images = faceset.load_images(picks)
    faces = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)
    x = center_crop_batch(faces, resolution=model.resolution, src_coverage=faceset.coverage,
                          model_coverage=model.coverage)
    with torch.inference_mode():
        rgb, _ = model(x, side)
    to_u8 = lambda t: t.clamp(0, 1).mul(255).add(0.5).to(torch.uint8).permute(0, 2, 3, 1).numpy()  # noqa: E731
    targets, outputs = to_u8(x), to_u8(rgb.float())
    ssims = [M.ssim(o, t) for o, t in zip(outputs, targets, strict=True)]
    psnrs = [M.psnr(o, t) for o, t in zip(outputs, targets, strict=True)]
    show = spread(len(targets), 8)
    grid = np.concatenate([np.concatenate(list(targets[show]), axis=1),
                           np.concatenate(list(outputs[show]), axis=1)], axis=0)
    return {"ssim": float(np.mean(ssims)), "psnr": float(np.mean(psnrs)), "faces": len(picks),
            "held_out": unseen, "note": note,
            "face_set": str(faceset.path), "grid": grid}
