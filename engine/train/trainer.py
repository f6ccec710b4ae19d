"""Training a swap model: two face sets in, a model folder out, progress events along the way.

The CLI and the web app both call `train(config, listeners, stop)`. Each iteration draws a batch
of A faces and one of B faces, warps them on the device, runs both through the shared encoder and
each side's own decoder, and takes one Adam step; the loop around the steps is
`engine.train.loop.run_loop`, which the colour phase shares.

With `color_net` the run then trains the colour network on the finished model's reconstructions
(`engine.train.color.train_color`, see `train`).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from torch import nn

from engine.errors import UserError
from engine.faces.crops import center_crop_batch
from engine.identity.loss import IdentityLoss, own_likeness, unit_mean
from engine.models.folder import TrainingState
from engine.progress import Listener, StopFlag

from . import checkpoint, data, distributed
from .augment import warp_batch
from .average import WeightAverage
from .color import train_color
from .config import ColorConfig, TrainConfig, loop_settings, recorded
from .loop import SIDES, LoopSession, TrainResult, drive, held_folder, joined, require_sides
from .losses import make_loss, mask_loss
from .preview import render_grid, write_preview

log = logging.getLogger(__name__)
LAYOUT = torch.channels_last  # the model's and its inputs' memory layout (bench/train.py: fp32_cl, bf16_cl)


class PairForward(nn.Module):
    """Both sides in one forward call: A and B share one encoder pass, then split to their decoders.

    One call per step is what DistributedDataParallel expects, and one encoder pass over 2N faces
    keeps the device busier than two passes over N. With `swap`, a third output: A's faces through
    B's decoder (the A->B swap's RGB, for the identity loss).
    """

    def __init__(self, model: nn.Module, swap: bool = False) -> None:
        super().__init__()
        self.model, self.swap = model, swap

    def forward(self, x_a: torch.Tensor, x_b: torch.Tensor):
        z_a, z_b = self.model.encode(torch.cat([x_a, x_b])).split([len(x_a), len(x_b)])
        outputs = self.model.decode(z_a, "a"), self.model.decode(z_b, "b")
        return (*outputs, self.model.decode(z_a, "b")[0]) if self.swap else outputs


def pair_probe_loss(model: nn.Module, batch_size: int, device: torch.device) -> torch.Tensor:
    """The precision probe's forward (engine.precision): the trainer's joint pass over a batch of
    random A and B faces in the trainer's layout (bench/train.py's `auto` makes its choice with it too)."""
    r = model.resolution
    x = torch.rand(2 * batch_size, 3, r, r, device=device).contiguous(memory_format=LAYOUT)
    (rgb_a, _), (rgb_b, _) = PairForward(model)(x[:batch_size], x[batch_size:])
    return rgb_a.float().mean() + rgb_b.float().mean()


def pair_probe_key(model: nn.Module, batch_size: int) -> str:
    """What the probe's answer depends on besides the machine: preset, face size, mask head and batch."""
    config = model.config
    return f"{config['preset']} {model.resolution}px mask={config.get('learn_mask', False)} batch {batch_size}"


class Session(LoopSession):
    """The swap model's run: its model, data and losses, and the step, preview, snapshot and backup."""

    METRICS = ("loss_a", "loss_b")

    def __init__(self, config: TrainConfig, cluster: distributed.Cluster) -> None:
        super().__init__(config, cluster)
        self.snapshot_every = config.snapshot_every
        self.snapshot_minutes = tuple(config.snapshot_minutes)
        self.load_pools((config.faces_a, config.faces_b))
        torch.manual_seed(config.seed)  # the same initial weights for the same --seed (and on every rank)
        model, state, optimizer_state = open_model(config, self.folder, self.device)
        self.warp = warp_for(config.warp, state.settings)
        # what open_model noted (a new model's prior) and earlier runs recorded stays; this run's settings win
        self.start(model.to(self.device, memory_format=LAYOUT).train(), state, optimizer_state,
                   {**state.settings, **recorded(config), "warp": self.warp})
        self.average = keep_average(self.model, config, self.folder, self.state.iteration, self.device)
        self.coverage = self.model.coverage
        self.loss_fn = make_loss(config.loss, self.model.resolution, self.coverage,
                                 eye_mouth_weight=config.eye_mouth_weight,
                                 background_weight=config.background_weight)
        self.identity, self.identity_target = identity_loss(config, self.model, self.pools["b"], cluster,
                                                             self.augment_gen)
        self.net = cluster.wrap(PairForward(self.model, swap=self.identity is not None))
        if config.compile:
            self.net = torch.compile(self.net)
        self.preview_inputs = {
            side: center_crop_batch(data.preview_faces(pool, config.preview_rows),
                                    resolution=self.model.resolution, src_coverage=pool.coverage,
                                    model_coverage=self.coverage)
            for side, pool in self.pools.items()}

    def step(self) -> torch.Tensor:
        """One optimisation step; -> tensor [loss_a, loss_b] left on the device (no sync)."""
        inputs, targets, masks = {}, {}, {}
        for side, pool in self.pools.items():
            warped, target, mask = warp_batch(
                self.samplers[side].next(), resolution=self.model.resolution, src_coverage=pool.coverage,
                model_coverage=self.coverage, generator=self.augment_gen, warp=self.warp,
                color_jitter=self.config.color_jitter,
                mask=self.model.learn_mask or self.loss_fn.needs_mask)
            inputs[side] = warped.contiguous(memory_format=LAYOUT)
            targets[side], masks[side] = target, mask
        with self.autocast:
            outputs = self.net(inputs["a"], inputs["b"])
        outputs, swapped = dict(zip(SIDES, outputs[:2], strict=True)), outputs[2:]
        losses = []
        for side in SIDES:
            rgb, mask = outputs[side]
            loss = self.loss_fn(rgb.float(), targets[side], masks[side])
            if mask is not None and masks[side] is not None:
                loss = loss + mask_loss(mask.float(), masks[side])
            losses.append(loss)
        if not swapped:
            return self.descend(losses)
        # the identity term joins B's side of the total, outside the two reported reconstruction losses
        return self.descend(losses, self.config.id_weight * self.identity(swapped[0], self.identity_target))

    def probe_loss(self) -> torch.Tensor:
        return pair_probe_loss(self.model, self.config.batch_size, self.device)

    def probe_key(self) -> str:
        return pair_probe_key(self.model, self.config.batch_size)

    def write_checkpoint(self) -> None:
        """backup/ first when the smoothed loss improved, then the checkpoint."""
        if checkpoint.save_backup_if_better(self.folder, self.shown, self.optimizer, self.state, self.trained):
            log.debug("backup at iteration %d, smoothed loss %.4f", self.state.iteration, self.state.best_loss)
        super().write_checkpoint()

    def snapshot(self, name: str | None = None) -> None:
        if self.cluster.is_main:
            checkpoint.save_snapshot(self.folder, self.shown, self.state, name)

    def preview(self) -> np.ndarray | None:
        if not self.cluster.is_main:
            return None
        grid = render_grid(self.shown, self.preview_inputs["a"], self.preview_inputs["b"], self.autocast)
        write_preview(self.folder, self.state.iteration, grid)
        return grid


def identity_loss(config: TrainConfig, model: nn.Module, pool_b: data.FacePool, cluster: distributed.Cluster,
                  generator: torch.Generator) -> tuple[IdentityLoss | None, torch.Tensor | None]:
    """(the identity loss on the model's crops, B's mean SFace embedding over all ranks) when
    `config.id_weight` > 0, else (None, None). `config.id_robust`: jittered with `generator`, and
    (`config.id_ceiling`) capped at the likeness of B's own faces to that mean (engine.identity.loss)."""
    if not config.id_weight > 0:
        return None, None
    from engine.identity import sface

    loss = IdentityLoss(sface.load(cluster.device), model.coverage)
    faces = loss.embeddings(pool_b.faces, pool_b.coverage, model.resolution)
    target = unit_mean(cluster.mean(unit_mean(faces)))  # each rank's mean, then the ranks' mean
    if config.id_robust:
        loss.generator = generator
        if config.id_ceiling:  # the same config on every rank: all of them join cluster.mean or none
            loss.ceiling = float(cluster.mean(own_likeness(faces, target)))
            log.info("identity loss: jittered, no pull beyond B's own faces' likeness %.3f", loss.ceiling)
        else:
            log.info("identity loss: jittered, no ceiling")
    return loss, target


def train(config: TrainConfig, listeners: list[Listener] | tuple = (), stop: StopFlag | None = None) -> TrainResult:
    """Train until `config.iterations`, a stop request, or divergence; the model folder is always
    left holding the last good checkpoint. Listeners hear progress on the main rank only. The folder
    is locked for the whole run (colour phase included): a second training of it gets a UserError."""
    stop = stop if stop is not None else StopFlag()
    with joined(config.device) as cluster, held_folder(config.model_dir, cluster):
        session = Session(config, cluster)
        result = drive(session, "train", listeners, stop)
        if config.color_net and result.status == "done":
            # After the model rather than alternating with it: the colour net learns to map this
            # model's outputs to real faces, and while the model still learns, those outputs drift
            # from blobs to faces, so colour steps taken then train on inputs no swap will feed it;
            # alternating would also double the cost of every model iteration on the way.
            result.color = _color_phase(config, session, listeners, stop)
        return result


def _color_phase(config: TrainConfig, session: Session, listeners: list[Listener] | tuple,
                 stop: StopFlag) -> TrainResult:
    """The colour net on the finished model, in the same processes, with the face sets already loaded."""
    color_config = ColorConfig(**loop_settings(config), model_dir=config.model_dir, faces_a=config.faces_a, faces_b=config.faces_b,
                               iterations=config.color_iterations, scale=config.color_scale, gan=config.color_gan,
                               minutes=config.color_minutes,
                               batch_size=config.batch_size, preview_rows=config.preview_rows)
    return train_color(color_config, listeners, stop, cluster=session.cluster, swap_model=session.shown,
                       pools=session.pools)


def open_model(config: TrainConfig, folder: Path, device: torch.device):
    """-> (model, training state, optimizer state or None) for a resume, a transfer or a fresh start."""
    from engine.models import build_model, default_preset, is_model_dir, load_model

    if config.resume:
        model, state, optimizer_state = checkpoint.load(folder, device)
        for key in ("preset", "resolution"):
            asked = getattr(config, key)
            if asked is not None and asked != model.config[key]:
                log.warning("--%s %s ignored: resuming %s, which is %s %s", key, asked, folder, key,
                            model.config[key])
        require_sides(model, folder, "training needs 'a' and 'b': start a new model folder")
        return model, state, optimizer_state
    if is_model_dir(folder):
        raise UserError(f"{folder} already holds a model: add --resume to continue training it, "
                        "or pass a new --model folder")
    if config.init_from:
        source, _ = load_model(config.init_from, device)
        preset = config.preset or source.config["preset"]
        options = {k: v for k, v in source.config.items()
                   if k not in ("preset", "resolution", "learn_mask", "identities")} if preset == source.config["preset"] else {}
        model = build_model(preset, resolution=config.resolution or source.resolution,
                            learn_mask=config.learn_mask, identities=SIDES, **options)
        copied = checkpoint.copy_matching_weights(model, source)
        if copied == 0:
            raise UserError(f"--init-from {config.init_from} shares no weights with a {preset} model: "
                            f"drop --preset/--resolution to reuse its architecture ({source.config['preset']})")
        log.info("started from %s: %d of %d tensors copied", config.init_from, copied, len(model.state_dict()))
        return model, TrainingState(settings={"pretrained": True}), None
    preset = config.preset or default_preset(device.type)
    model = build_model(preset, resolution=config.resolution, learn_mask=config.learn_mask, identities=SIDES)
    what, pretrained = start_from_prior(model, config.prior)
    return model, TrainingState(settings={"prior": what, "pretrained": pretrained}), None


def keep_average(model: nn.Module, config: TrainConfig, folder: Path, iteration: int,
                 device: torch.device) -> WeightAverage | None:
    """The run's weight average (`config.ema` > 0), or None. `model` holds the weights file's weights; on a
    resume of a run that kept an average those are the average, and the trained weights saved beside
    Adam's moments go back into `model` (without them, from an older folder, training goes on from the
    average). A resume without `ema` trains on from the trained weights and saves them as they are."""
    trained = checkpoint.load_trained(folder, iteration, device) if config.resume else None
    average = WeightAverage(model, config.ema, count=iteration) if config.ema > 0 else None
    if trained is not None:
        model.load_state_dict(trained)
    return average


def warp_for(choice: bool | None, settings: dict) -> bool:
    """The run's random warp: `choice` when given; else what the model's earlier runs used, or for a new
    model off when it starts from learnt weights (a prior, --init-from) and on from random ones."""
    if choice is not None:
        return choice
    if "warp" in settings:
        return bool(settings["warp"])
    return not settings.get("pretrained", False)


def start_from_prior(model: nn.Module, choice: str) -> tuple[str, bool]:
    """Load the prior `choice` names (engine.models.prior: auto, none or a file) into a new model; -> what
    it started from, in words, for the log, the model's settings and the Train tab, and whether a prior."""
    from engine.models import prior

    path = prior.resolve(choice, model.config["preset"], model.resolution)
    if path is None:
        what = ("random weights (--prior none)" if choice == "none" else
                f"random weights: no prior ships for {model.config['preset']} at {model.resolution} px")
    else:
        what = prior.describe(path, prior.load_into(model, path))
    log.info("new model starts from %s", what)
    return what, path is not None
