"""What the identity loss (TrainConfig.id_weight > 0) adds to a training step: the A->B decode, SFace's
forward and backward on the swapped faces.

Two trainer sessions on the same face sets and weights, one without the identity loss and one with
it, take real steps (warped batches, losses, Adam) in turns of a few steps each; each step is timed
on its own and a mode's figure is its fastest step (median beside it), so a neighbour's burst of CPU
use on a shared machine costs a mode some slow steps but not its figure. Prints one JSON line.

    python bench/identity.py --faces-a FACESET_A --faces-b FACESET_B --preset lite --batch-size 8
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.train import distributed  # noqa: E402
from engine.train.config import TrainConfig  # noqa: E402
from engine.train.trainer import Session  # noqa: E402


def session(args: argparse.Namespace, folder: Path, id_weight: float) -> Session:
    config = TrainConfig(faces_a=args.faces_a, faces_b=args.faces_b, model_dir=str(folder), preset=args.preset,
                         prior="none", device="cpu", batch_size=args.batch_size, precision="fp32",
                         id_weight=id_weight, warmup=0)
    return Session(config, distributed.Cluster(device=torch.device("cpu")))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--faces-a", required=True)
    p.add_argument("--faces-b", required=True)
    p.add_argument("--preset", default="lite")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--id-weight", type=float, default=0.1)
    p.add_argument("--steps", type=int, default=5, help="timed steps per mode and round")
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        sessions = {"off": session(args, Path(tmp) / "off", 0.0)}
        t1 = time.perf_counter()
        sessions["on"] = session(args, Path(tmp) / "on", args.id_weight)
        t2 = time.perf_counter()
        sessions["on"].model.load_state_dict(sessions["off"].model.state_dict())
        times: dict[str, list[float]] = {mode: [] for mode in sessions}
        for s in sessions.values():
            s.step()  # untimed: oneDNN picks its kernels
        for _ in range(args.rounds):
            for mode, s in sessions.items():
                for _ in range(args.steps):
                    start = time.perf_counter()
                    s.step()
                    times[mode].append(time.perf_counter() - start)
    best = {mode: min(t) for mode, t in times.items()}
    median = {mode: statistics.median(t) for mode, t in times.items()}
    print(json.dumps({
        "preset": args.preset, "batch_size": args.batch_size, "threads": torch.get_num_threads(),
        "steps_per_mode": len(times["off"]), "load_average": [round(x, 2) for x in os.getloadavg()],
        "step_s_best": {k: round(v, 4) for k, v in best.items()},
        "step_s_median": {k: round(v, 4) for k, v in median.items()},
        "extra_s_best": round(best["on"] - best["off"], 4), "extra_ratio_best": round(best["on"] / best["off"], 3),
        "extra_s_median": round(median["on"] - median["off"], 4),
        "session_start_s": {"off": round(t1 - t0, 2), "on": round(t2 - t1, 2)},
    }))


if __name__ == "__main__":
    main()
