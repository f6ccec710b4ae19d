"""`python -m engine train-color --model DIR`: train the colour network of a trained swap model.

The swap model stays frozen; the network lands in the same folder (color.safetensors), where `swap
--color auto` finds it. Ctrl-C or SIGTERM saves and stops, `--resume` continues. `python -m engine
train --color-net` runs the same phase right after the swap model.
"""

from __future__ import annotations

import argparse

from engine.train.command import (
    add_loop_arguments,
    check_counts,
    check_device,
    check_gan,
    check_minutes,
    is_main_process,
    losses_text,
)
from engine.train.config import ColorConfig, defaults


def add_arguments(p: argparse.ArgumentParser) -> None:
    d = defaults(ColorConfig)  # every default is the config's: one place for each number
    p.add_argument("--model", required=True, help="model folder written by `python -m engine train`")
    p.add_argument("--faces-a", help="face set of person A (default: the one the model was trained on)")
    p.add_argument("--faces-b", help="face set of person B (default: the one the model was trained on)")
    p.add_argument("--iterations", type=int, default=d["iterations"],
                   help="total colour-net iterations to reach (default %(default)s)")
    p.add_argument("--scale", type=int, choices=(2, 4), default=d["scale"],
                   help="output size over the model's: 2 or 4 (default %(default)s; fixed once the net exists)")
    p.add_argument("--gan", type=float, default=d["gan"], metavar="W",
                   help="weight of a patch critic's loss beside the pixel loss, so the net paints detail that "
                        "looks real (DeepFaceLab's GAN power; in ten CPU-minutes at 0.05 no sharper on the shared "
                        "pairs: docs/benchmarks.md; default %(default)s: off)")
    p.add_argument("--resume", action="store_true", help="continue the colour net already in --model")
    add_loop_arguments(p, d)


def run(args: argparse.Namespace) -> int:
    from engine.progress import StopFlag, TqdmListener
    from engine.train.color import train_color
    from engine.train.command import stop_on_signals

    check_counts(args, ("iterations", "batch_size", "save_every"))
    check_minutes(args.minutes)
    check_device(args.device)
    check_gan(args.gan, "--gan")
    config = ColorConfig(gan=args.gan, minutes=args.minutes, model_dir=args.model, faces_a=args.faces_a, faces_b=args.faces_b,
                         iterations=args.iterations, scale=args.scale, batch_size=args.batch_size, lr=args.lr,
                         resume=args.resume, device=args.device, save_every=args.save_every,
                         preview_every=args.preview_every, precision=args.precision, seed=args.seed)
    stop = StopFlag()
    with stop_on_signals(stop):
        result = train_color(config, [TqdmListener(desc="train-color")], stop)
    if is_main_process():
        print(f"{result.status} at iteration {result.iteration}{losses_text(result, 'colour ')}; "
              f"colour net in {result.model_dir}")
    return 1 if result.status == "diverged" else 0
