"""`python -m engine train`: train a model on two face sets (also under `torchrun --nproc-per-node N`).

Ctrl-C or SIGTERM asks the loop to save and stop within one iteration; a second Ctrl-C aborts
at once (every file is written atomically, so the folder still holds the last complete save).
"""

from __future__ import annotations

import argparse
import math
import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager

from engine.errors import UserError
from engine.train.config import TrainConfig, defaults

# the loss names, without importing torch for --help (engine.train.losses.PIXEL_ERRORS holds the same keys)
PIXEL_ERROR_NAMES = ("mae", "ssim_mse", "mae_dssim")


def add_arguments(p: argparse.ArgumentParser) -> None:
    d = defaults(TrainConfig)  # every default is the config's: one place for each number
    p.add_argument("--faces-a", help="face set of person A (the one whose video gets the new face); "
                                     "optional with --resume")
    p.add_argument("--faces-b", help="face set of person B (the face put in); optional with --resume")
    p.add_argument("--model", required=True, help="model folder to create, or to continue with --resume")
    p.add_argument("--preset", choices=("lite", "original", "dfl-h128", "intracoder"),
                   help="architecture (default: lite on a CPU, the GPU default on a GPU)")
    p.add_argument("--resolution", type=int, help="face size in pixels (default: the preset's)")
    p.add_argument("--learn-mask", action="store_true", help="also learn a face mask")
    p.add_argument("--iterations", type=int, default=d["iterations"],
                   help="total iterations to reach (default %(default)s)")
    p.add_argument("--loss", choices=tuple(PIXEL_ERROR_NAMES), default=d["loss"],
                   help="reconstruction loss (default %(default)s)")
    p.add_argument("--eye-mouth-weight", type=float, default=d["eye_mouth_weight"],
                   help="extra loss weight on eyes and mouth (0: off; default %(default)s)")
    p.add_argument("--background-weight", type=float, default=d["background_weight"],
                   help="loss weight outside the face mask (1: the whole crop alike; default %(default)s)")
    p.add_argument("--id-weight", type=float, default=d["id_weight"],
                   help="weight of the identity loss: SFace's cosine distance of the A->B swap to B's "
                        "faces (0: off; default %(default)s)")
    p.add_argument("--id-robust", action=argparse.BooleanOptionalAction, default=d["id_robust"],
                   help="jitter each swapped face before the identity network and (--id-ceiling) stop pulling "
                        "once it is as like B as B's own photos (default: on; --no-id-robust: the plain loss)")
    p.add_argument("--id-ceiling", action=argparse.BooleanOptionalAction, default=d["id_ceiling"],
                   help="with --id-robust: stop pulling a face once it is as like B as B's own photos "
                        "(default: on; --no-id-ceiling: jitter alone)")
    p.add_argument("--warp", action=argparse.BooleanOptionalAction, default=d["warp"],
                   help="randomly warp each input face, so the decoders learn to rebuild a face rather than copy "
                        "it (--no-warp keeps the turns, zooms, shifts and flips only). Default: off for a model "
                        "that starts from a prior or --init-from, on from random weights; a resume keeps the "
                        "model's and may switch it, as DeepFaceLab users do late in a run")
    p.add_argument("--ema", type=float, default=d["ema"], metavar="DECAY",
                   help="save a running average of the weights (decay, e.g. 0.999; warmed up over the first "
                        "steps) for swapping instead of the last step's weights; 0: off (default %(default)s)")
    p.add_argument("--warmup", type=int, default=d["warmup"],
                   help="iterations of learning-rate warm-up (default %(default)s)")
    p.add_argument("--resume", action="store_true", help="continue the model in --model")
    p.add_argument("--init-from", metavar="MODEL", help="start from another model's encoder and decoders")
    p.add_argument("--prior", default=d["prior"], metavar="auto|none|FILE",
                   help="a new model's starting weights: auto (default: the prior shipped in weights/ for the "
                        "preset and size, else random), none (random), or a prior file from `pretrain`")
    add_loop_arguments(p, d)
    p.add_argument("--snapshot-every", type=int, default=d["snapshot_every"],
                   help="numbered snapshot every N iterations (0: off)")
    p.add_argument("--snapshot-minutes", type=minute_marks, default=d["snapshot_minutes"], metavar="M,M,...",
                   help="also a snapshot (snapshots/<M>min) when the training time passes each mark")
    p.add_argument("--compile", action="store_true", help="torch.compile the model (slow start, faster steps)")
    p.add_argument("--color-net", action="store_true",
                   help="then train the colour network (faces at 2x/4x in the destination's colours; "
                        "`train-color` trains it on its own)")
    p.add_argument("--color-scale", type=int, choices=(2, 4), default=d["color_scale"],
                   help="the colour network's output size over the model's (default %(default)s)")
    p.add_argument("--color-iterations", type=int, default=d["color_iterations"],
                   help="colour-network iterations to reach after the model's (default %(default)s)")
    p.add_argument("--color-gan", type=float, default=d["color_gan"], metavar="W",
                   help="the colour network's patch-critic weight (`train-color --gan`; default %(default)s)")
    p.add_argument("--color-minutes", type=float, default=d["color_minutes"], metavar="N",
                   help="the colour network's own time budget beside --color-iterations, whichever comes first "
                        "(e.g. --minutes 20 --color-net --color-minutes 10 --color-iterations 100000)")


def add_loop_arguments(p: argparse.ArgumentParser, d: dict) -> None:
    """The options both training commands share, with the defaults `d` of their config."""
    p.add_argument("--batch-size", type=int, default=d["batch_size"],
                   help="faces per side per step (default %(default)s)")
    p.add_argument("--lr", type=float, default=d["lr"], help="Adam learning rate (default %(default)s)")
    p.add_argument("--minutes", type=float, default=d["minutes"],
                   help="stop and save after this much training time, all runs of the folder together "
                        "(beside --iterations: whichever comes first)")
    p.add_argument("--device", default=d["device"], help="auto, cpu, cuda or cuda:N")
    p.add_argument("--save-every", type=int, default=d["save_every"], help="autosave every N iterations")
    p.add_argument("--preview-every", type=int, default=d["preview_every"],
                   help="preview grid every K iterations (0: off)")
    p.add_argument("--precision", type=precision_name, default=d["precision"],
                   help="auto (default: bf16 where it is measured faster here, else float32), bf16 or fp32")
    p.add_argument("--no-bf16", dest="precision", action="store_const", const="fp32",
                   help="the same as --precision fp32")
    p.add_argument("--seed", type=int, default=d["seed"])


def run(args: argparse.Namespace) -> int:
    from engine.progress import StopFlag, TqdmListener
    from engine.train.trainer import train

    config = config_from_args(args)
    stop = StopFlag()
    with stop_on_signals(stop):
        result = train(config, [TqdmListener(desc="train")], stop)
    if is_main_process():
        print(f"{result.status} at iteration {result.iteration}{losses_text(result)}; model in {result.model_dir}")
        if result.color is not None:
            color = result.color
            print(f"colour net {color.status} at iteration {color.iteration}{losses_text(color, 'colour ')}")
    diverged = result.status == "diverged" or (result.color is not None and result.color.status == "diverged")
    return 1 if diverged else 0


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    faces_a, faces_b = args.faces_a, args.faces_b
    if args.resume:
        from engine.models.folder import recorded_face_sets

        faces_a, faces_b = recorded_face_sets(args.model, faces_a, faces_b)
    if not (faces_a and faces_b):
        raise UserError("pass both --faces-a and --faces-b (face set folders from `python -m engine extract`)")
    check_counts(args, ("iterations", "batch_size", "save_every", "color_iterations"))
    check_minutes(args.minutes)
    check_minutes(args.color_minutes, "--color-minutes")
    check_gan(args.color_gan, "--color-gan")
    if args.id_weight < 0:
        raise UserError("--id-weight must be 0 (off) or more")
    if not 0 <= args.ema < 1:
        raise UserError(f"--ema {args.ema}: give the average's decay, 0 (off) up to below 1 (e.g. 0.999)")
    if args.resume and args.init_from:
        raise UserError("--resume continues a model and --init-from starts a new one: pass only one")
    check_device(args.device)
    return TrainConfig(
        faces_a=faces_a, faces_b=faces_b, model_dir=args.model, preset=args.preset, resolution=args.resolution,
        learn_mask=args.learn_mask, iterations=args.iterations, batch_size=args.batch_size, lr=args.lr,
        loss=args.loss, eye_mouth_weight=args.eye_mouth_weight, background_weight=args.background_weight,
        id_weight=args.id_weight, id_robust=args.id_robust, id_ceiling=args.id_ceiling, warp=args.warp,
        ema=args.ema,
        warmup=args.warmup, minutes=args.minutes, snapshot_minutes=args.snapshot_minutes,
        resume=args.resume, init_from=args.init_from, prior=args.prior,
        device=args.device, save_every=args.save_every, snapshot_every=args.snapshot_every,
        preview_every=args.preview_every, precision=args.precision, compile=args.compile, seed=args.seed,
        color_net=args.color_net, color_scale=args.color_scale, color_iterations=args.color_iterations,
        color_gan=args.color_gan, color_minutes=args.color_minutes)


def check_counts(args: argparse.Namespace, names: tuple[str, ...]) -> None:
    """UserError for the first of these options below 1."""
    for name in names:
        if getattr(args, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be at least 1")


def precision_name(text: str) -> str:
    """--precision's value, refused with the allowed ones when it is none of them."""
    from engine.precision import check

    try:
        return check(text)
    except UserError as err:
        raise argparse.ArgumentTypeError(str(err)) from err


def check_gan(weight: float, flag: str) -> None:
    if not (weight >= 0 and math.isfinite(weight)):
        raise UserError(f"{flag} {weight}: give the critic's weight, 0 (off) or more (e.g. 0.05)")


def check_minutes(minutes: float | None, flag: str = "--minutes") -> None:
    if minutes is not None and not minutes > 0:
        raise UserError(f"{flag} must be more than 0")


def minute_marks(text: str) -> tuple[float, ...]:
    """"5,10,30" -> (5.0, 10.0, 30.0), for --snapshot-minutes."""
    try:
        marks = tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected minutes like 5,10,30, got {text!r}") from err
    if any(m <= 0 for m in marks):
        raise argparse.ArgumentTypeError("every mark must be more than 0 minutes")
    return marks


def check_device(name: str) -> None:
    from engine.device import pick_device

    try:
        pick_device(name)
    except ValueError as err:
        raise UserError(f"--device: {err}") from err


def is_main_process() -> bool:
    """Rank 0 under torchrun (or the only process): the one that prints."""
    return int(os.environ.get("RANK", "0")) == 0


def losses_text(result, what: str = "") -> str:
    """", loss A 0.1234, B 0.2345" of a TrainResult ("" when it has none), for the closing line."""
    return "" if result.loss_a is None else f", {what}loss A {result.loss_a:.4f}, B {result.loss_b:.4f}"


@contextmanager
def stop_on_signals(stop) -> Iterator[None]:
    """SIGINT and SIGTERM set the stop flag (the loop saves and exits); a second SIGINT aborts."""
    def request_stop(signum, frame):
        if stop and signum == signal.SIGINT:
            raise KeyboardInterrupt
        stop.set()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
