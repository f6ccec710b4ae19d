"""The one training loop: two face sets in, a model folder out, progress events along the way.

The CLI and the web app both call `train(config, listeners, stop)`; no other copy of the loop
exists. Each iteration draws a batch of A faces and one of B faces, warps them on the device, runs
both through the shared encoder and each side's own decoder, and takes one Adam step.

With `color_net` the same loop then runs a second phase, `engine.train.color.ColorSession`, which
trains the colour network on the finished model's reconstructions (see `train`).
"""

from __future__ import annotations

import logging
import math
import time
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from engine.errors import UserError
from engine.progress import Listener, Reporter, StopFlag

from . import checkpoint, data, distributed
from .augment import MODEL_COVERAGE, center_crop_batch, warp_batch
from .losses import make_loss, mask_loss
from .preview import render_grid, write_preview

log = logging.getLogger(__name__)

SIDES = ("a", "b")


@dataclass
class TrainConfig:
    faces_a: str
    faces_b: str
    model_dir: str
    preset: str | None = None  # None: engine.models.default_preset for the device
    resolution: int | None = None  # None: the preset's
    learn_mask: bool = False
    iterations: int = 100_000  # the total to reach; a resume continues towards it
    batch_size: int = 8  # faces per side and process
    lr: float = 5e-5
    loss: str = "mae"
    eye_mouth_weight: float = 0.0
    resume: bool = False
    init_from: str | None = None  # another model folder to start encoder and decoders from
    device: str = "auto"
    save_every: int = 500
    snapshot_every: int = 0  # 0: no numbered snapshots
    preview_every: int = 100  # 0: no previews
    preview_rows: int = 4
    report_every: int | None = None  # None: 1 on CPU, 10 on CUDA (each report syncs the GPU)
    bf16: bool = True
    compile: bool = False
    seed: int = 0
    warp: bool = True
    color_jitter: float = 0.0
    max_rewinds: int = 3  # NaN/Inf rewinds allowed before the run gives up
    color_net: bool = False  # then train the colour network (engine.train.color) on the finished model
    color_scale: int = 2  # its output side / the model's: 2 or 4
    color_iterations: int = 1000  # colour-net iterations to reach (its own count, resumable)


@dataclass
class TrainResult:
    status: str  # "done", "stopped" (stop flag or signal) or "diverged" (NaN/Inf beyond max_rewinds)
    iteration: int
    loss_a: float | None
    loss_b: float | None
    model_dir: Path
    model: nn.Module = field(repr=False)
    color: TrainResult | None = None  # the colour-net phase, when it ran


class PairForward(nn.Module):
    """Both sides in one forward call: A and B share one encoder pass, then split to their decoders.

    One call per step is what DistributedDataParallel expects, and one encoder pass over 2N faces
    keeps the device busier than two passes over N.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x_a: torch.Tensor, x_b: torch.Tensor):
        z_a, z_b = self.model.encode(torch.cat([x_a, x_b])).split([len(x_a), len(x_b)])
        return self.model.decode(z_a, "a"), self.model.decode(z_b, "b")


class Session:
    """Everything one run holds: model, optimizer, data, losses, training state; one method per chore.

    `run_loop` drives any object with this face (the colour phase's `ColorSession` too): `config`
    (iterations, batch_size, save/preview/report intervals, max_rewinds), `state`, `cluster`,
    `device`, `folder`, `model`, `METRICS`, `snapshot_every` and the methods below.
    """

    METRICS = ("loss_a", "loss_b")  # event metric names of step()'s two losses

    def __init__(self, config: TrainConfig, cluster: distributed.Cluster) -> None:
        self.config, self.cluster, self.device = config, cluster, cluster.device
        self.folder = Path(config.model_dir)
        self.snapshot_every = config.snapshot_every
        self.pools = {side: data.load_pool(path, self.device, cluster.rank, cluster.world_size)
                      for side, path in zip(SIDES, (config.faces_a, config.faces_b), strict=True)}
        torch.manual_seed(config.seed)  # the same initial weights for the same --seed (and on every rank)
        model, self.state, optimizer_state = open_model(config, self.folder, self.device)
        self.model = model.to(self.device, memory_format=torch.channels_last).train()
        self.coverage = model_coverage(self.model)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=config.lr, betas=(0.5, 0.999))
        if optimizer_state is not None:
            self.optimizer.load_state_dict(optimizer_state)
            for group in self.optimizer.param_groups:
                group["lr"] = config.lr  # this run's --lr wins over the saved one
        self.state.settings = settings_of(config)
        self.loss_fn, self.mask_loss_fn = make_losses(config, self.model, self.coverage)
        self.net = cluster.wrap(PairForward(self.model))
        if config.compile:
            self.net = torch.compile(self.net)
        self.autocast = autocast_for(self.device, config.bf16)
        self.reseed(self.state.iteration)
        self.preview_inputs = {
            side: center_crop_batch(data.preview_faces(pool, config.preview_rows),
                                    resolution=self.model.resolution, src_coverage=pool.coverage,
                                    model_coverage=self.coverage)
            for side, pool in self.pools.items()}
        self.rewinds = 0

    def reseed(self, iteration: int) -> None:
        """Fresh random streams per rank and start point, so a resume does not replay old batches."""
        seed = int(np.random.SeedSequence([self.config.seed, self.cluster.rank, iteration]).generate_state(1)[0])
        sample_gen = torch.Generator().manual_seed(seed)
        self.samplers = {side: data.BatchSampler(pool, self.config.batch_size, sample_gen)
                         for side, pool in self.pools.items()}
        self.augment_gen = torch.Generator(device=self.device).manual_seed(seed)

    def step(self) -> torch.Tensor:
        """One optimisation step; -> tensor [loss_a, loss_b] left on the device (no sync)."""
        inputs, targets, masks = {}, {}, {}
        for side, pool in self.pools.items():
            warped, target, mask = warp_batch(
                self.samplers[side].next(), resolution=self.model.resolution, src_coverage=pool.coverage,
                model_coverage=self.coverage, generator=self.augment_gen, warp=self.config.warp,
                color_jitter=self.config.color_jitter, mask=self.model.learn_mask)
            inputs[side] = warped.contiguous(memory_format=torch.channels_last)
            targets[side], masks[side] = target, mask
        with self.autocast:
            outputs = dict(zip(SIDES, self.net(inputs["a"], inputs["b"]), strict=True))
        losses = []
        for side in SIDES:
            rgb, mask = outputs[side]
            loss = self.loss_fn(rgb.float(), targets[side])
            if mask is not None and masks[side] is not None:
                loss = loss + self.mask_loss_fn(mask.float(), masks[side])
            losses.append(loss)
        # One joint step on loss_a + loss_b rather than alternating A and B steps: the shared encoder
        # then gets both identities' gradients in every update and learns one latent space for both
        # faces instead of being pulled back and forth, Adam's moments see one consistent gradient per
        # step, and under DDP every parameter gets a gradient in each backward (one all-reduce, no
        # unused-parameter search).
        self.optimizer.zero_grad(set_to_none=True)
        (losses[0] + losses[1]).backward()
        self.optimizer.step()
        return torch.stack(losses).detach()

    def gather(self, pending: list[torch.Tensor], stop: StopFlag) -> tuple[float, float, bool]:
        """Mean losses of the pending steps over all ranks, and whether any rank was asked to stop.

        The stop request rides on the same all-reduce, so ranks always stop at the same iteration.
        """
        return gather_losses(self.cluster, pending, stop)

    def rewind(self) -> bool:
        """After a NaN/Inf loss, reload the last checkpoint (never saved broken); False: give up."""
        self.rewinds += 1
        if self.rewinds > self.config.max_rewinds:
            return False
        self.cluster.barrier()  # rank 0 has finished writing the checkpoint every rank now reads
        settings = self.state.settings
        self.state = checkpoint.restore(self.folder, self.model, self.optimizer)
        self.state.settings = settings
        for group in self.optimizer.param_groups:
            group["lr"] = self.config.lr
        self.reseed(self.state.iteration + 7919 * self.rewinds)  # not the batches that blew up
        return True

    def save(self) -> None:
        """Autosave (main rank): backup/ first when the smoothed loss improved, then the checkpoint."""
        if not self.cluster.is_main:
            return
        self.state.history.close(self.state.iteration)
        if checkpoint.save_backup_if_better(self.folder, self.model, self.optimizer, self.state):
            log.debug("backup at iteration %d, smoothed loss %.4f", self.state.iteration, self.state.best_loss)
        checkpoint.save(self.folder, self.model, self.optimizer, self.state)

    def snapshot(self) -> None:
        if self.cluster.is_main:
            checkpoint.save_snapshot(self.folder, self.model, self.state)

    def preview(self) -> np.ndarray | None:
        if not self.cluster.is_main:
            return None
        grid = render_grid(self.model, self.preview_inputs["a"], self.preview_inputs["b"], self.autocast)
        write_preview(self.folder, self.state.iteration, grid)
        return grid


def train(config: TrainConfig, listeners: list[Listener] | tuple = (), stop: StopFlag | None = None) -> TrainResult:
    """Train until `config.iterations`, a stop request, or divergence; the model folder is always
    left holding the last good checkpoint. Listeners hear progress on the main rank only."""
    stop = stop if stop is not None else StopFlag()
    cluster = distributed.setup(config.device)
    listeners = listeners if cluster.is_main else ()
    try:
        session = Session(config, cluster)
        reporter = Reporter("train", total=config.iterations, unit="it", listeners=listeners,
                            start_step=session.state.iteration)
        result = run_loop(session, reporter, stop)
        if config.color_net and result.status == "done":
            # After the model rather than alternating with it: the colour net learns to map this
            # model's outputs to real faces, and while the model still learns, those outputs drift
            # from blobs to faces, so colour steps taken then train on inputs no swap will feed it;
            # alternating would also double the cost of every model iteration on the way.
            result.color = _color_phase(config, cluster, session, listeners, stop)
        return result
    finally:
        distributed.teardown(cluster)


def _color_phase(config: TrainConfig, cluster: distributed.Cluster, session: Session,
                 listeners: list[Listener] | tuple, stop: StopFlag) -> TrainResult:
    """The colour net on the finished model, in this loop, with the face sets already loaded."""
    from .color import ColorConfig, ColorSession

    color_config = ColorConfig(
        model_dir=config.model_dir, faces_a=config.faces_a, faces_b=config.faces_b,
        iterations=config.color_iterations, scale=config.color_scale, batch_size=config.batch_size,
        resume=config.resume, device=config.device, save_every=config.save_every,
        preview_every=config.preview_every, preview_rows=config.preview_rows, report_every=config.report_every,
        bf16=config.bf16, seed=config.seed, max_rewinds=config.max_rewinds)
    color = ColorSession(color_config, cluster, swap_model=session.model, pools=session.pools)
    reporter = Reporter("train-color", total=color_config.iterations, unit="it", listeners=listeners,
                        start_step=color.state.iteration)
    return run_loop(color, reporter, stop)


def gather_losses(cluster: distributed.Cluster, pending: list[torch.Tensor],
                  stop: StopFlag) -> tuple[float, float, bool]:
    """Mean of pending [loss, loss] steps over all ranks, and whether any rank was asked to stop."""
    means = torch.stack(pending).float().mean(0)
    flag = torch.tensor([1.0 if stop else 0.0], device=means.device)
    totals = cluster.mean(torch.cat([means, flag])).tolist()
    return totals[0], totals[1], totals[2] > 0


def run_loop(s: Session, reporter: Reporter, stop: StopFlag) -> TrainResult:
    """The one loop: step until `s.config.iterations`, a stop request or divergence, saving,
    previewing and reporting on the way; `s` is a `Session` or another session of its face."""
    cfg = s.config
    names = s.METRICS
    report_every = cfg.report_every or (10 if s.device.type == "cuda" else 1)
    examples_per_step = 2 * cfg.batch_size * s.cluster.world_size  # A and B faces on every rank
    if s.state.iteration == 0:
        s.save()  # a fresh model is on disk at once: the NaN guard always has a good state to rewind to
    saved_at, status, last = s.state.iteration, "done", (None, None)
    pending: list[torch.Tensor] = []
    window_start, window_t0 = s.state.iteration, time.perf_counter()

    while s.state.iteration < cfg.iterations:
        if not s.cluster.distributed and stop:  # one process: honour a stop before the next step
            status = "stopped"
            break
        pending.append(s.step())
        s.state.iteration += 1
        it = s.state.iteration
        save_due = _due(it, cfg.save_every)
        snapshot_due = _due(it, s.snapshot_every)
        preview_due = _due(it, cfg.preview_every)
        if not (save_due or snapshot_due or preview_due or _due(it, report_every) or it == cfg.iterations):
            continue

        loss_a, loss_b, stop_requested = s.gather(pending, stop)
        count, pending = len(pending), []
        if not (math.isfinite(loss_a) and math.isfinite(loss_b)):
            if not s.rewind():
                status = "diverged"
                log.error("loss is NaN/Inf again after %d rewinds: stopping; %s keeps iteration %d",
                          cfg.max_rewinds, s.folder, saved_at)
                break
            reporter(s.state.iteration, message=f"loss became NaN/Inf at {it}: rewound to {s.state.iteration}")
            window_start, window_t0 = s.state.iteration, time.perf_counter()
            continue
        s.state.history.add(it, loss_a, loss_b, count)
        last = (loss_a, loss_b)
        preview = s.preview() if preview_due else None
        if save_due:
            s.save()
            saved_at = it
        if snapshot_due:
            s.snapshot()
        now = time.perf_counter()
        speed = examples_per_step * (it - window_start) / max(now - window_t0, 1e-9)
        window_start, window_t0 = it, now
        reporter(it, metrics={names[0]: loss_a, names[1]: loss_b, "examples_per_s": speed}, preview=preview)
        if stop_requested:
            status = "stopped"
            break

    if status != "diverged":
        if pending:  # steps since the last report (a one-process stop lands between reports)
            loss_a, loss_b, _ = s.gather(pending, stop)
            if math.isfinite(loss_a) and math.isfinite(loss_b):
                s.state.history.add(s.state.iteration, loss_a, loss_b, len(pending))
                last = (loss_a, loss_b)
            else:  # never save the broken weights; the folder keeps the last good checkpoint
                status = "diverged"
        if status != "diverged" and s.state.iteration != saved_at:
            s.save()
    message = {"done": "finished", "stopped": "stopped and saved", "diverged": "diverged: kept last good save"}
    reporter(s.state.iteration, metrics=dict(zip(names, last, strict=True)) if last[0] is not None else None,
             message=message[status], done=True)
    return TrainResult(status=status, iteration=s.state.iteration, loss_a=last[0], loss_b=last[1],
                       model_dir=s.folder, model=s.model)


def _due(iteration: int, every: int | None) -> bool:
    return bool(every) and iteration % every == 0


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
        _check_sides(model, folder)
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
    else:
        preset = config.preset or default_preset(device.type)
        model = build_model(preset, resolution=config.resolution, learn_mask=config.learn_mask, identities=SIDES)
    return model, checkpoint.TrainingState(), None


def _check_sides(model: nn.Module, folder: Path) -> None:
    if not set(SIDES) <= set(model.identities):
        raise UserError(f"{folder} has decoders {list(model.identities)}, training needs 'a' and 'b': "
                        "start a new model folder")


def settings_of(config: TrainConfig) -> dict:
    """The run's settings as stored in config.json (face sets, so a resume can find them again)."""
    keep = ("faces_a", "faces_b", "batch_size", "lr", "loss", "eye_mouth_weight", "init_from", "seed",
            "warp", "color_jitter")
    return {k: v for k, v in asdict(config).items() if k in keep}


def autocast_for(device: torch.device, bf16: bool) -> AbstractContextManager:
    """bf16 autocast: about 1.5x faster on CPUs with AVX512-BF16/AMX and on Ampere+ GPUs."""
    if bf16 and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        log.warning("this GPU has no bf16: training in float32")
        bf16 = False
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)


def model_coverage(model: nn.Module) -> float:
    """The share of the crop the face square fills for this model (augment's default unless stored)."""
    return float(model.config.get("coverage", MODEL_COVERAGE))


def make_losses(config: TrainConfig, model: nn.Module, coverage: float):
    loss_fn = make_loss(config.loss, model.resolution, coverage, eye_mouth_weight=config.eye_mouth_weight)
    return loss_fn, mask_loss
