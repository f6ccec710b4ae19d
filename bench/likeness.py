"""Likeness per training minute: train recipes on both shared pairs, evaluate them at wall-time marks.

Pairs (A = the destination video's faces, B = the identity put in):
    talk2-carell   A = talk2.mp4 (first 100 frames trained), B = people/carell (every 5th photo held out)
    talk1-hader    A = talk1.mp4 (first 110 frames trained), B = people/hader  (every 5th photo held out)

Every (recipe, pair) trains in its own process, all at once, with `--threads` torch threads each, so
the recipes of one run share the machine alike and are compared at equal wall time. Each training
saves a snapshot at every budget mark (`--budgets`, minutes of its own wall time); after all
trainings end, the project's own `evaluate` (the product's swap, dlib judges) measures each snapshot
on the pair's video. Prints one JSON line; writes WORK/likeness.json and WORK/likeness.png.

    python bench/likeness.py --work WORK --recipes lite-5e-5,default --budgets 5,10,20,30
    python bench/likeness.py --work WORK --recipes default,old --prior-file old=OLD/prior-lite-64.safetensors

`distance_moved` is how far the swapped faces' distance to B's mean moved from the unswapped faces'
towards B's own photos' (leave-one-out): 0 = still A, 1 = as close as B's own photos.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = ROOT.parent / "shared" / "data"

PAIRS = {
    "talk2-carell": {"video": "video/talk2.mp4", "people": "people/carell", "hold_out_a": 25},
    "talk1-hader": {"video": "video/talk1.mp4", "people": "people/hader", "hold_out_a": 25},
}
HOLD_OUT_B_EVERY = 5

# Recipes as TrainConfig overrides; "default" is whatever TrainConfig gives a new user today. The
# others are the tries of docs/benchmarks.md ("Likeness per training minute"), kept to re-run them.
OLD = {"preset": "lite", "lr": 5e-5, "beta1": 0.5, "warmup": 0, "loss": "mae", "eye_mouth_weight": 0.0,
       "background_weight": 1.0, "batch_size": 8}  # the defaults until 2026-12
RECIPES: dict[str, dict] = {
    "default": {},
    # issue 21: the shipped prior (the default's `prior="auto"`) against random weights, and the identity loss
    "no-prior": {"prior": "none"},
    "prior-id": {"id_weight": 0.5, "id_robust": False},  # the plain identity loss (measured 2026-12-04)
    "prior-id-robust": {"id_weight": 0.5, "id_robust": True},  # jittered, capped at B's own photos' likeness
    "prior-id-jitter": {"id_weight": 0.5, "id_robust": True, "id_ceiling": False},  # jittered, no cap
    "prior-id-robust-w1": {"id_weight": 1.0, "id_robust": True},  # the robust loss pulled twice as hard
    # issue 21 item 5, sharp at the size the face is shown, inside the same budget: the default's last
    # COLOR_MINUTES go to the 2x colour/SR net instead of the model; or a larger model at 128 px (no prior)
    "sr-color": {"color_minutes": 6.0},
    "intracoder-128": {"preset": "intracoder", "resolution": 128},
    # issue 21 item 3: DeepFaceLab resets its bottleneck after pretraining; here the prior's dense bottleneck
    # and the layer after it (encoder.4, encoder.5) start from random weights, the rest from the prior
    "prior-reset-inter": {"prior_reset": ("encoder.4.", "encoder.5.")},
    # DeepFaceLab turns its random warp off to sharpen a model late; the prior already learnt with it
    "prior-nowarp": {"id_weight": 0.5, "id_robust": True, "warp": False},
    # without the warp a model from the prior keeps learning B for an hour (Hader 0.56 -> 0.68 distance moved
    # from 10 to 60 minutes): twice the rate, to get there sooner
    "nowarp-lr6e-4": {"warp": False, "lr": 6e-4},
    # the default of the morning of 2026-12-05 saving a running average of its weights (engine.train.average):
    # one save swung Hader's verified 0.1 / 0.8 / 0.0 at 10 / 20 / 30 minutes; it won and is the default now
    "default-ema": {"warp": None, "lr": 6e-4, "ema": 0.999},
    "default-no-ema": {"warp": None, "lr": 6e-4, "ema": 0.0},  # the default of that morning, as measured
    "lite-5e-5": OLD,
    "lite-3e-4": {**OLD, "lr": 3e-4, "beta1": 0.9, "warmup": 100},
    "lite-3e-4-dssim-mask": {**OLD, "lr": 3e-4, "beta1": 0.9, "warmup": 100, "loss": "mae_dssim",
                             "background_weight": 0.1},
    "dm-1e-3": {**OLD, "lr": 1e-3, "beta1": 0.9, "warmup": 200, "loss": "mae_dssim", "background_weight": 0.1},
    "dm-eyes2": {**OLD, "lr": 3e-4, "beta1": 0.9, "warmup": 100, "loss": "mae_dssim", "background_weight": 0.1,
                 "eye_mouth_weight": 2.0},
    "dm-b16": {**OLD, "lr": 3e-4, "beta1": 0.9, "warmup": 100, "loss": "mae_dssim", "background_weight": 0.1,
               "batch_size": 16},
}

# every try above that names no warp was measured with it on, the default for every model until
# 2026-12-04, every one that names no rate at 3e-4, the default until 2026-12-05, and every one that names
# no weight average without one (saving the trained weights), the default until later on 2026-12-05: they
# keep all three ("default" and the recipes --prior-file adds follow TrainConfig; "prior-nowarp" is the
# default of 12-04, "nowarp-lr6e-4" the default of the morning of 12-05)
for _name, _recipe in RECIPES.items():
    if _name != "default":
        _recipe.setdefault("warp", True)
        _recipe.setdefault("lr", 3e-4)
        _recipe.setdefault("ema", 0.0)


def add_prior_recipes(specs: list[str]) -> None:
    """`LABEL=PATH` -> a recipe LABEL: the default's, started from the prior file PATH (`--prior PATH`), so two
    priors (e.g. the committed one and a longer pretraining) are compared at equal wall time."""
    for spec in specs:
        label, sep, path = spec.partition("=")
        if not sep or not label or label in RECIPES or not Path(path).is_file():
            raise SystemExit(f"--prior-file {spec!r}: want NEW_LABEL=PATH of an existing prior file")
        RECIPES[label] = {"prior": str(Path(path).resolve())}


FIGURES = ("id_verified", "distance_moved", "sharpness_ratio", "landmark_nme", "pose_error_deg", "flicker")


def prepare(work: Path, pair: str) -> tuple[Path, Path, Path, Path]:
    """Face sets of the pair (extracted once) and their training splits -> (A, B, train A, train B)."""
    import numpy as np

    from engine.faces.faceset import FaceSet, write_subset

    spec = PAIRS[pair]
    name_a, name_b = Path(spec["video"]).stem, Path(spec["people"]).name
    sets = {}
    for name, source in ((name_a, spec["video"]), (name_b, spec["people"])):
        folder = work / name
        if not (folder / "faces.json").is_file():
            subprocess.run([sys.executable, "-m", "engine", "extract", "--detector", "mtcnn", "--out", str(folder),
                            str(DATA / source)], check=True, cwd=ROOT)
        sets[name] = folder
    n_a, n_b = len(FaceSet(sets[name_a])), len(FaceSet(sets[name_b]))
    train_a, train_b = work / f"{name_a}_train", work / f"{name_b}_train"
    write_subset(sets[name_a], train_a, np.arange(n_a - spec["hold_out_a"], n_a))
    write_subset(sets[name_b], train_b, np.arange(HOLD_OUT_B_EVERY - 1, n_b, HOLD_OUT_B_EVERY))
    return sets[name_a], sets[name_b], train_a, train_b


def train_job(work: Path, recipe: str, pair: str, budgets: list[float], threads: int) -> None:
    """One training of `recipe` on `pair` for max(budgets) minutes, a snapshot at every mark."""
    import torch

    from engine.train import TrainConfig, train

    torch.set_num_threads(threads)
    _, _, train_a, train_b = prepare(work, pair)
    folder = work / "runs" / recipe / pair
    overrides = dict(RECIPES[recipe])
    color_minutes = float(overrides.pop("color_minutes", 0.0))
    if "prior_reset" in overrides:
        overrides["prior"] = str(reset_prior(folder.parent / "prior", overrides.pop("prior_reset")))
    marks = [b - color_minutes for b in budgets if b > color_minutes]  # the model's share of each budget
    config = TrainConfig(faces_a=str(train_a), faces_b=str(train_b), model_dir=str(folder), device="cpu",
                         iterations=10_000_000, minutes=max(marks), snapshot_minutes=tuple(marks),
                         save_every=1000, preview_every=500, **overrides)
    load_start = os.getloadavg()
    result = train(config)
    record = {"iterations": result.iteration, "status": result.status, "loss_a": result.loss_a,
              "loss_b": result.loss_b, "loadavg": [load_start, os.getloadavg()]}
    if color_minutes:
        record["color"] = color_phase(folder / "snapshots", budgets, color_minutes)
    (folder / "bench.json").write_text(json.dumps(record))


def reset_prior(folder: Path, parts: tuple[str, ...]) -> Path:
    """The shipped `lite` prior with the tensors whose names start with `parts` back at a fresh model's
    random initialisation, written as a prior file (and card) in `folder`: what `--prior PATH` takes."""
    import torch

    from engine.models import build_model
    from engine.models.prior import load_into, shipped_path, write

    torch.manual_seed(0)
    model = build_model("lite")
    fresh = {k: v.clone() for k, v in model.state_dict().items() if k.startswith(parts)}
    card = load_into(model, shipped_path("lite", 64))
    model.load_state_dict(fresh, strict=False)
    path = folder / "prior-lite-64.safetensors"
    write(path, model, {**card, "reset": list(parts)})
    return path


def color_phase(snapshots: Path, budgets: list[float], minutes: float) -> dict:
    """The colour/SR net, `minutes` of it, on the model snapshot taken `minutes` before each budget; the
    snapshot is then renamed to its budget. Largest budget first: it runs while the other recipes still
    train, so its figure is the equal-time one (the smaller budgets' nets run on a quieter machine)."""
    from engine.train.color import train_color
    from engine.train.config import UNLIMITED, ColorConfig

    done = {}
    for budget in sorted(budgets, reverse=True):
        model = snapshots / f"{budget - minutes:g}min"
        if budget <= minutes or not model.is_dir():
            continue
        result = train_color(ColorConfig(model_dir=str(model), iterations=UNLIMITED, minutes=minutes, device="cpu",
                                         save_every=1000, preview_every=0))
        model.rename(snapshots / f"{budget:g}min")
        done[f"{budget:g}"] = {"color_iterations": result.iteration, "status": result.status,
                               "loadavg_end": os.getloadavg()}
    return done


def evaluate_snapshot(work: Path, pair: str, snapshot: Path, frames: int | None, settings=None,
                      smooth: float | None = None, out: Path | None = None) -> dict:
    """The project's `evaluate` of one snapshot on its pair's video; `settings` (SwapSettings) and `smooth`
    default to the swap's own; the report goes to `out` (default SNAPSHOT/report)."""
    from engine.evaluate.run import EvaluateOptions, evaluate

    faces_a, faces_b, _, _ = prepare(work, pair)
    options = EvaluateOptions(model=snapshot, video=DATA / PAIRS[pair]["video"], out=out or snapshot / "report",
                              faces_a=faces_a, faces_b=faces_b, frames=frames, device="cpu", detector="mtcnn",
                              settings=settings)
    if smooth is not None:
        options.smooth = smooth
    report = evaluate(options)
    s, ident = report["summary"], report["identity"]
    unswapped, swapped, real = (ident["destination_distance_target"], ident["distance_target"],
                                ident["distance_target_real"])
    moved = (unswapped - swapped) / (unswapped - real) if unswapped > real else math.nan
    meta = json.loads((snapshot / "config.json").read_text()).get("meta", {})
    return {"iteration": meta.get("iteration"), "id_verified": s["id_verified"], "distance_moved": moved,
            "distance_target": swapped, "sharpness_ratio": s["sharpness_ratio"], "landmark_nme": s["landmark_nme"],
            "pose_error_deg": s["pose_error_deg"], "flicker": s["flicker"], "id_retrieval": s["id_retrieval"],
            "ssim_b": s["ssim_b"], "psnr_b": s["psnr_b"], "seam_score": s["seam_score"]}


def strips(work: Path, recipes: list[str], pairs: list[str], budgets: list[float], out: Path,
           per_row: int = 3) -> list[Path]:
    """One PNG per (recipe, pair): a row per budget of `per_row` evaluated frames (destination | swapped),
    the same frames in every row, so a person can see what the figures say."""
    import cv2
    import numpy as np

    written = []
    for recipe in recipes:
        for pair in pairs:
            rows = []
            for budget in budgets:
                frames = sorted((work / "runs" / recipe / pair / "snapshots" / f"{budget:g}min" / "report" / "frames")
                                .glob("pair_*.png"))
                if not frames:
                    continue
                picks = [frames[i] for i in np.linspace(0, len(frames) - 1, num=min(per_row, len(frames))).astype(int)]
                tiles = [cv2.resize(cv2.imread(str(f)), None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA) for f in picks]
                height = min(t.shape[0] for t in tiles)
                row = np.concatenate([t[:height] for t in tiles], axis=1)
                cv2.putText(row, f"{recipe} {budget:g} min", (8, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (255, 255, 255), 2)
                rows.append(row)
            if rows:
                width = min(r.shape[1] for r in rows)
                path = out / f"{pair}-{recipe}.png"
                out.mkdir(parents=True, exist_ok=True)
                cv2.imwrite(str(path), np.concatenate([r[:, :width] for r in rows], axis=0))
                written.append(path)
    return written


def plot(results: dict, budgets: list[float], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(13, 7))
    for ax, figure in zip(axes.flat, FIGURES, strict=True):
        for recipe, pairs in results.items():
            for pair, marks in pairs.items():
                xs = [float(m) for m in marks]
                ax.plot(xs, [marks[m][figure] for m in marks], marker="o",
                        linestyle="-" if pair == "talk2-carell" else "--", label=f"{recipe} {pair}")
        ax.set_title(figure)
        ax.set_xlabel("training minutes")
        ax.set_xticks(budgets)
    axes.flat[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=80)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("--recipes", default="lite-5e-5,default")
    p.add_argument("--pairs", default=",".join(PAIRS))
    p.add_argument("--budgets", default="5,10,20,30,60", help="minutes of wall time at which to evaluate")
    p.add_argument("--threads", type=int, default=1, help="torch threads per training process")
    p.add_argument("--parallel", type=int, default=len(PAIRS),
                   help="trainings at once (default: one per pair, i.e. a recipe's pairs side by side)")
    p.add_argument("--frames", type=int, default=None, help="evaluate a sample of N frames (default: all)")
    p.add_argument("--strips", type=Path, default=None,
                   help="also write a PNG of evaluated frames per recipe and pair, a row per budget, here")
    p.add_argument("--prior-file", action="append", default=[], metavar="LABEL=PATH",
                   help="add a recipe LABEL: the default started from this prior file (repeatable)")
    p.add_argument("--job", nargs=2, metavar=("RECIPE", "PAIR"), help=argparse.SUPPRESS)
    p.add_argument("--evaluate-only", action="store_true", help="measure the snapshots of an earlier run")
    p.add_argument("--train-only", action="store_true", help="train and snapshot; measure later with --evaluate-only")
    args = p.parse_args()
    add_prior_recipes(args.prior_file)
    budgets = [float(b) for b in args.budgets.split(",")]
    recipes, pairs = args.recipes.split(","), args.pairs.split(",")
    if args.job:
        train_job(args.work, args.job[0], args.job[1], budgets, args.threads)
        return 0
    for pair in pairs:
        prepare(args.work, pair)
    load = {"start": os.getloadavg()}
    t0 = time.time()
    if not args.evaluate_only:
        jobs = [(recipe, pair) for recipe in recipes for pair in pairs]
        codes = []
        for start in range(0, len(jobs), args.parallel):
            procs = [subprocess.Popen([sys.executable, __file__, "--work", str(args.work), "--budgets", args.budgets,
                                       "--threads", str(args.threads), "--job", recipe, pair,
                                       *(f"--prior-file={spec}" for spec in args.prior_file)], cwd=ROOT)
                     for recipe, pair in jobs[start:start + args.parallel]]
            codes += [proc.wait() for proc in procs]
        if any(codes):
            print(json.dumps({"error": f"training exit codes {codes}"}))
            return 1
    load["after_training"] = os.getloadavg()
    if args.train_only:
        print(json.dumps({"bench": "likeness", "trained": recipes, "loadavg": load}))
        return 0
    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    results: dict = {}
    for recipe in recipes:
        for pair in pairs:
            folder = args.work / "runs" / recipe / pair
            for budget in budgets:
                snapshot = folder / "snapshots" / f"{budget:g}min"
                if snapshot.is_dir():
                    results.setdefault(recipe, {}).setdefault(pair, {})[f"{budget:g}"] = evaluate_snapshot(
                        args.work, pair, snapshot, args.frames)
    load["end"] = os.getloadavg()
    out = {"bench": "likeness", "budgets_min": budgets, "threads_per_training": args.threads,
           "concurrent_trainings": args.parallel,
           "trainings": {f"{r}/{p}": json.loads((args.work / "runs" / r / p / "bench.json").read_text())
                         for r in recipes for p in pairs if (args.work / "runs" / r / p / "bench.json").is_file()}, "frames": args.frames or "all",
           "recipes": {r: RECIPES[r] for r in recipes}, "results": results, "loadavg": load,
           "seconds": round(time.time() - t0, 1)}
    plot(results, budgets, args.work / "likeness.png")
    if args.strips:
        out["strips"] = [str(p) for p in strips(args.work, recipes, pairs, budgets, args.strips)]
    (args.work / "likeness.json").write_text(json.dumps(out, indent=1, default=str))
    print(json.dumps(out, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
