"""`python -m engine SUB-COMMAND ...`: the command line over the engine.

Each stage keeps its own sub-command in a `command.py` beside its code (`add_arguments` + `run`);
this file only lists them. Command modules import heavy libraries inside `run`, so `--help` is fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from engine.errors import UserError

# (name, module, one-line help). Add a stage here and nowhere else.
COMMANDS: list[tuple[str, str, str]] = [
    ("extract", "engine.faces.command", "detect, align and save faces from photos, folders, zips and videos"),
    ("weights", "engine.faces.weights_command", "download detector weights into weights/ up front"),
    ("train", "engine.train.command", "train an intracoder on two face sets"),
    ("pretrain", "engine.train.pretrain_command",
     "train a face prior on many-people face sets: new models of its preset start from it"),
    ("train-color", "engine.train.color_command",
     "train a model's colour network: its faces at 2x/4x in the destination's colours"),
    ("swap", "engine.swap.command", "swap faces in photos and videos with a trained model"),
    ("evaluate", "engine.evaluate.command", "measure swap quality on a video: identity, expression, pose, flicker, speed"),
    ("export-dataset", "engine.export.command",
     "write a detector-training dataset: real clips and their swaps as FaceForensics++, masks, crops, split"),
    ("verify", "engine.provenance.command", "check photos and videos for the studio's provenance metadata and face mark"),
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m engine", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module_name, help_text in COMMANDS:
        module = importlib.import_module(module_name)
        p = sub.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args._run(args) or 0)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
