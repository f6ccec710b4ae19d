"""The swap's own settings on trained models: the same snapshots judged under several swap settings.

bench/likeness.py compares training recipes; what the swap does with a trained model (how heavily it
smooths the landmarks of a video, how it blends, how far the mask reaches) changes the same figures
without any training. This judges each snapshot of likeness runs under each setting with the project's
`evaluate`, as likeness does, so a swap default is chosen on both pairs and on more than one run.

    python bench/swap_settings.py --work W1 --work W2 --recipe default-ema --budget 30 \\
        --setting base= --setting smooth8=smooth:0.8 --setting alpha=blend:alpha

A setting is LABEL=FIELD:VALUE[,FIELD:VALUE...] over `SwapSettings` fields and `smooth` (empty: the
defaults). One JSON line: per work folder, pair and setting, the figures of bench/likeness.py.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path

import likeness  # bench/likeness.py, beside this file; it puts the repo on the path

from engine.swap.settings import SwapSettings, VideoSettings  # noqa: E402 (after likeness's path insert)


def parse_setting(text: str) -> tuple[str, dict]:
    """'smooth8=smooth:0.8,blend:alpha' -> ('smooth8', {'smooth': 0.8, 'blend': 'alpha'}); each value takes the
    type of its field's default."""
    label, _, body = text.partition("=")
    defaults = {f.name: getattr(SwapSettings(), f.name) for f in dataclasses.fields(SwapSettings)}
    defaults["smooth"] = VideoSettings.smooth
    values: dict = {}
    for item in filter(None, body.split(",")):
        name, _, value = item.partition(":")
        if name not in defaults:
            raise SystemExit(f"--setting {text!r}: {name!r} is neither smooth nor a SwapSettings field "
                             f"({', '.join(defaults)})")
        kind = type(defaults[name])
        values[name] = value.lower() in ("1", "true", "yes") if kind is bool else kind(value)
    return label, values


def judge(work: Path, pair: str, snapshot: Path, values: dict, frames: int, out: Path) -> dict:
    settings = SwapSettings(**{k: v for k, v in values.items() if k != "smooth"})
    settings.check()
    return likeness.evaluate_snapshot(work, pair, snapshot, frames, settings=settings, smooth=values.get("smooth"),
                                      out=out)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", type=Path, action="append", required=True, help="a likeness run's work folder")
    p.add_argument("--recipe", default="default")
    p.add_argument("--budget", type=float, default=30.0)
    p.add_argument("--frames", type=int, default=20)
    p.add_argument("--setting", action="append", required=True, metavar="LABEL=FIELD:VALUE,...")
    args = p.parse_args()
    settings = dict(parse_setting(s) for s in args.setting)
    out: dict = {"bench": "swap_settings", "recipe": args.recipe, "budget_min": args.budget, "frames": args.frames,
                 "settings": settings, "loadavg_start": os.getloadavg(), "runs": {}}
    for work in args.work:
        for pair in likeness.PAIRS:
            snapshot = work / "runs" / args.recipe / pair / "snapshots" / f"{args.budget:g}min"
            if not snapshot.is_dir():
                continue
            for label, values in settings.items():
                report = work / "swap_settings" / args.recipe / pair / snapshot.name / label
                figures = judge(work, pair, snapshot, values, args.frames, report)
                out["runs"].setdefault(str(work), {}).setdefault(pair, {})[label] = figures
                print(json.dumps({"work": str(work), "pair": pair, "setting": label, **figures}), file=sys.stderr,
                      flush=True)
    out["loadavg_end"] = os.getloadavg()
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
