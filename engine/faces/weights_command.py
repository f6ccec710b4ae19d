"""`python -m engine weights`: fetch downloadable weights (RetinaFace) into weights/ up front."""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--list", action="store_true", help="only say which weights are present")


def run(args: argparse.Namespace) -> int:
    from engine.weights import ALL_WEIGHTS, fetch, weights_path

    for spec in ALL_WEIGHTS:
        path = weights_path(spec)
        if args.list or path.exists():
            print(f"{spec.what}: {'present at ' + str(path) if path.exists() else 'missing (' + str(path) + ')'}")
            continue
        print(f"fetching {spec.what} -> {path}")
        fetch(spec, progress=True)
    return 0
