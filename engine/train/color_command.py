"""`python -m engine train-color --model DIR`: train the colour network of a trained swap model.

The swap model stays frozen; the network lands in the same folder (color.safetensors), where `swap
--color auto` finds it. Ctrl-C or SIGTERM saves and stops, `--resume` continues. `python -m engine
train --color-net` runs the same phase right after the swap model.
"""

from __future__ import annotations

import argparse

from engine.errors import UserError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="model folder written by `python -m engine train`")
    p.add_argument("--faces-a", help="face set of person A (default: the one the model was trained on)")
    p.add_argument("--faces-b", help="face set of person B (default: the one the model was trained on)")
    p.add_argument("--iterations", type=int, default=1000, help="total colour-net iterations to reach (default 1000)")
    p.add_argument("--scale", type=int, choices=(2, 4), default=2,
                   help="output size over the model's: 2 or 4 (default 2; fixed once the net exists)")
    p.add_argument("--batch-size", type=int, default=8, help="faces per side per step (default 8)")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default 1e-3)")
    p.add_argument("--resume", action="store_true", help="continue the colour net already in --model")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--save-every", type=int, default=500, help="autosave every N iterations")
    p.add_argument("--preview-every", type=int, default=100, help="preview grid every K iterations (0: off)")
    p.add_argument("--no-bf16", dest="bf16", action="store_false", help="train in float32")
    p.add_argument("--seed", type=int, default=0)


def run(args: argparse.Namespace) -> int:
    from engine.progress import Reporter, StopFlag, TqdmListener
    from engine.train import distributed
    from engine.train.color import ColorConfig, ColorSession
    from engine.train.command import check_device, stop_on_signals
    from engine.train.trainer import run_loop

    for name in ("iterations", "batch_size", "save_every"):
        if getattr(args, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be at least 1")
    check_device(args.device)
    config = ColorConfig(model_dir=args.model, faces_a=args.faces_a, faces_b=args.faces_b,
                         iterations=args.iterations, scale=args.scale, batch_size=args.batch_size, lr=args.lr,
                         resume=args.resume, device=args.device, save_every=args.save_every,
                         preview_every=args.preview_every, bf16=args.bf16, seed=args.seed)
    stop = StopFlag()
    cluster = distributed.setup(config.device)
    try:
        with stop_on_signals(stop):
            session = ColorSession(config, cluster)
            reporter = Reporter("train-color", total=config.iterations, unit="it",
                                listeners=[TqdmListener(desc="train-color")] if cluster.is_main else (),
                                start_step=session.state.iteration)
            result = run_loop(session, reporter, stop)
    finally:
        distributed.teardown(cluster)
    if cluster.is_main:
        losses = "" if result.loss_a is None else f", colour loss A {result.loss_a:.4f}, B {result.loss_b:.4f}"
        print(f"{result.status} at iteration {result.iteration}{losses}; colour net in {result.model_dir}")
    return 1 if result.status == "diverged" else 0
