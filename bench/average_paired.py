"""The weight average against the weights it averages, at the same iteration of the same run.

bench/likeness.py compares a recipe with `ema` against one without at equal wall time, where the two runs
reach different iteration counts. A run with an average also keeps its trained weights beside Adam's
moments (engine.train.checkpoint), so at its last save both can be judged: this writes the trained
weights as a copy of the last snapshot and measures both with the project's `evaluate`, as likeness does.

    python bench/average_paired.py --work WORK [--recipe default-ema] [--budget 30] [--frames 20]

WORK is a likeness run's work folder whose recipe kept an average and whose last snapshot is the
budget's (the run stops there). One JSON line: per pair, the iteration and both sets of figures.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import likeness  # bench/likeness.py, beside this file; it puts the repo on the path
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from engine.models.folder import WEIGHTS  # noqa: E402 (after likeness's path insert)
from engine.train.checkpoint import load_trained  # noqa: E402 (after likeness's path insert)


def trained_copy(snapshot: Path, run: Path, dest: Path) -> int:
    """Copy `snapshot` to `dest` with the run's trained weights in place of their average; -> iteration."""
    iteration = json.loads((snapshot / "config.json").read_text())["meta"]["iteration"]
    trained = load_trained(run, iteration, torch.device("cpu"))
    if trained is None:
        raise SystemExit(f"{run}: no trained weights saved at iteration {iteration} (a run without --ema, or "
                         "its last save is not the snapshot's)")
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(snapshot, dest, ignore=shutil.ignore_patterns("report"))
    average = load_file(snapshot / WEIGHTS)
    with safe_open(snapshot / WEIGHTS, "pt") as f:
        metadata = f.metadata()
    save_file({k: trained[k].to(v.dtype).contiguous() for k, v in average.items()}, dest / WEIGHTS,
              metadata=metadata)
    return iteration


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("--recipe", default="default-ema")
    p.add_argument("--budget", type=float, default=30.0)
    p.add_argument("--frames", type=int, default=20)
    args = p.parse_args()
    out = {}
    for pair in likeness.PAIRS:
        run = args.work / "runs" / args.recipe / pair
        snapshot = run / "snapshots" / f"{args.budget:g}min"
        if not snapshot.is_dir():
            continue
        trained = args.work / "paired" / args.recipe / pair
        iteration = trained_copy(snapshot, run, trained)
        out[pair] = {"iteration": iteration,
                     "trained": likeness.evaluate_snapshot(args.work, pair, trained, args.frames),
                     "average": likeness.evaluate_snapshot(args.work, pair, snapshot, args.frames)}
    print(json.dumps({"bench": "average_paired", "recipe": args.recipe, "budget_min": args.budget,
                      "frames": args.frames, "pairs": out}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
