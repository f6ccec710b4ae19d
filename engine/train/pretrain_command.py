"""`python -m engine pretrain`: a face prior, trained by `train`'s own loop on many-identity face sets.

The prior is an ordinary swap model whose side A is one many-people face set (LFW) and side B another
(UTKFace): the same random-warp objective, loss, loop, checkpoints, Ctrl-C and `--minutes` as `train`,
in a work folder outside the repo. After the run the model's weights go to
`weights/prior-<preset>-<size>.safetensors` in float16, with a card beside it (engine.models.prior).

Hours of pretraining add up across sittings: `--resume` continues the work folder when this machine
has it, else starts a new work folder from the committed prior and carries its iterations and
minutes on (Adam's moments are not shipped, so that sitting's first steps warm them up again).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from pathlib import Path

from engine.atomic import write_json
from engine.errors import UserError
from engine.train.command import add_loop_arguments, check_minutes, stop_on_signals
from engine.train.config import UNLIMITED, TrainConfig, defaults

BASE = "pretrain.json"  # in the work folder: the committed prior's totals a sitting started from


def add_arguments(p: argparse.ArgumentParser) -> None:
    d = {**defaults(TrainConfig), "minutes": 60.0, "save_every": 1000, "preview_every": 1000}
    p.add_argument("--faces-a", help="a many-people face set (e.g. LFW extracted with --pad 0.5 "
                                     "--person-from-folder); optional with --resume")
    p.add_argument("--faces-b", help="a second one (e.g. UTKFace); optional with --resume")
    p.add_argument("--preset", default="lite", choices=("lite", "original", "dfl-h128", "intracoder"),
                   help="architecture the prior is for (default %(default)s)")
    p.add_argument("--resolution", type=int, help="face size in pixels (default: the preset's)")
    p.add_argument("--work", help="work folder of the pretraining (default: ~/.cache/faceswap-studio/"
                                  "pretrain-<preset>-<size>)")
    p.add_argument("--out", help="the prior file to write (default: weights/prior-<preset>-<size>.safetensors)")
    p.add_argument("--resume", action="store_true",
                   help="continue: the work folder if this machine has it, else from the committed prior")
    p.add_argument("--iterations", type=int, default=UNLIMITED, help=argparse.SUPPRESS)
    add_loop_arguments(p, d)  # --minutes here is this sitting's training time


def run(args: argparse.Namespace) -> int:
    from engine.models import PRESETS, is_model_dir, prior
    from engine.models import folder as model_folder
    from engine.progress import StopFlag, TqdmListener
    from engine.train.trainer import train

    check_minutes(args.minutes)
    resolution = args.resolution or PRESETS[args.preset].resolution
    out = Path(args.out) if args.out else prior.shipped_path(args.preset, resolution)
    work = Path(args.work) if args.work else default_work(args.preset, resolution)
    base = {"iterations": 0, "minutes": 0.0, "from": None}
    start = {"prior": "none"}
    if args.resume and is_model_dir(work):
        saved = model_folder.summary(work)
        faces = model_folder.recorded_face_sets(work, args.faces_a, args.faces_b)
        base = _read_base(work)
        start = {"resume": True}
        minutes = saved["minutes"] + args.minutes
    elif args.resume:
        card = prior.read_card(out)
        sets = card.get("data", {}).get("face_sets", [])
        faces = (args.faces_a or (sets[0]["path"] if sets else None), args.faces_b or (sets[1]["path"] if len(sets) > 1 else None))
        base = {"iterations": card.get("iterations", 0), "minutes": card.get("minutes", 0.0), "from": card.get("sha256")}
        start, minutes = {"prior": str(out)}, args.minutes
    else:
        if is_model_dir(work):
            raise UserError(f"{work} holds a pretraining already: add --resume to continue it, or delete the "
                            "folder to start over")
        faces, minutes = (args.faces_a, args.faces_b), args.minutes
    if not (faces[0] and faces[1]):
        raise UserError("pass --faces-a and --faces-b: two many-people face sets from `python -m engine extract`")
    config = TrainConfig(faces_a=str(faces[0]), faces_b=str(faces[1]), model_dir=str(work), preset=args.preset,
                         resolution=resolution, iterations=args.iterations, minutes=minutes,
                         batch_size=args.batch_size, lr=args.lr, device=args.device, save_every=args.save_every,
                         preview_every=args.preview_every, precision=args.precision, seed=args.seed,
                         # no identity loss: a prior learns faces, not one person B; always the random warp;
                         # and no weight average: the shipped prior is the trained weights, as it was measured
                         id_weight=0.0, warp=True, ema=0.0, **start)
    if base["from"] and not (work / BASE).is_file():
        write_json(work / BASE, base)  # before training: a killed sitting still knows what it built on
    stop = StopFlag()
    with stop_on_signals(stop):
        result = train(config, [TqdmListener(desc="pretrain")], stop)
    if result.status == "diverged":
        print(f"diverged at iteration {result.iteration}: no prior written; {work} keeps the last good save")
        return 1
    card = prior.write(out, result.model, make_card(work, config, result, base))
    print(f"{result.status} at iteration {result.iteration}: prior in {out} "
          f"({card['bytes'] / 2**20:.1f} MB, {card['iterations']} iterations, {card['minutes']:.1f} minutes "
          f"in all); work folder {work}")
    return 0


def default_work(preset: str, resolution: int) -> Path:
    from engine.precision import cache_file

    return cache_file().parent / f"pretrain-{preset}-{resolution}"


def _read_base(work: Path) -> dict:
    try:
        return json.loads((work / BASE).read_text())
    except (OSError, ValueError):
        return {"iterations": 0, "minutes": 0.0, "from": None}


def make_card(work: Path, config: TrainConfig, result, base: dict) -> dict:
    """What the prior was trained on, for how long, where, and how far its loss came down."""
    import torch

    from engine.faces.faceset import FaceSet
    from engine.models import folder as model_folder
    from engine.precision import cpu_name

    saved = model_folder.summary(work)
    sets = []
    for path in (config.faces_a, config.faces_b):
        entries = FaceSet(path).entries
        people = {e["person"] for e in entries if e.get("person")}
        sets.append({"name": Path(path).name, "path": str(path), "faces": len(entries),
                     "people": len(people) or None})
    faces = sum(s["faces"] for s in sets)
    named = sum(s["people"] or 0 for s in sets)
    unnamed = sum(s["faces"] for s in sets if not s["people"])
    return {
        "what": "face prior: a new model of this preset starts from these weights (train --prior auto)",
        "data": {"face_sets": sets, "faces": faces, "identities": named + unnamed,
                 "identities_note": "named people of the sets that keep a person, plus one per face of those "
                                    "that do not (UTKFace names nobody: an upper bound)",
                 "excluded": "the people of the project's test and benchmark data (shared/data/prior/README.md)"},
        "iterations": base["iterations"] + result.iteration,
        "minutes": round(base["minutes"] + saved["minutes"], 1),
        "this_work_folder": {"iterations": result.iteration, "minutes": round(saved["minutes"], 1)},
        "started_from_prior_sha256": base["from"],
        "batch_size": config.batch_size, "lr": config.lr, "loss": config.loss,
        "final_loss": {"a": result.loss_a, "b": result.loss_b},
        "machine": {"cpu": cpu_name(), "platform": platform.platform(), "torch": torch.__version__,
                    "threads": torch.get_num_threads(), "device": config.device,
                    "precision": saved.get("precision"), "cores": os.cpu_count()},
    }
