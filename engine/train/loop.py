"""The one training loop, and the session base class both training phases build on.

`run_loop` steps a `LoopSession` until its iteration target, a stop request or divergence, saving,
previewing and reporting on the way. The swap model's phase (`engine.train.trainer.Session`) and the
colour net's (`engine.train.color.ColorSession`) are both `LoopSession`s: what they share (random
streams, Adam, the checkpoint's save and the rewind after a NaN/Inf loss or a loss that blows up)
lives here once, and each adds its own `step` and `preview`.
"""

from __future__ import annotations

import logging
import math
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from engine.atomic import remove_temp_files
from engine.errors import UserError
from engine.models.folder import MODEL_FILES, TrainingState
from engine.models.lock import training_lock
from engine.precision import Choice, choose, forward_backward_probe
from engine.progress import Listener, Reporter, StopFlag

from . import checkpoint, data, distributed
from .average import WeightAverage
from .config import UNLIMITED, LoopConfig

log = logging.getLogger(__name__)

SIDES = ("a", "b")  # the two identities every run trains, A's and B's
ADAM_BETA2 = 0.999
REWIND_STRIDE = 7919  # a rewound run reseeds this many iterations away: not the batches that blew up
SPIKE_WINDOW = 50  # reported losses whose median a new one is compared with (LoopConfig.spike)
SPIKE_ARMED = 20  # reports before the spike guard judges: the first steps' losses fall fast


@dataclass
class TrainResult:
    status: str  # "done", "stopped" (stop flag or signal) or "diverged" (NaN/Inf or blow-ups beyond max_rewinds)
    iteration: int
    loss_a: float | None
    loss_b: float | None
    model_dir: Path
    model: nn.Module = field(repr=False)
    color: TrainResult | None = None  # the colour-net phase, when it ran


class LoopSession(ABC):
    """What `run_loop` drives: one run's network, optimizer, face sets, training state and chores.

    A subclass sets `METRICS`, loads `pools` (`load_pools`), hands its network and saved state to
    `start`, and writes `step` (one optimisation step -> tensor [loss_a, loss_b] on the device) and
    `preview` (main rank: the grid, or None). `FILES` names the files of the folder's network
    the checkpoint is (engine.models.folder: MODEL_FILES or COLOR_FILES); `SEED_SALT` keeps one phase's random streams apart from
    the other's.
    """

    METRICS: tuple[str, str]  # event metric names of step()'s two losses
    FILES = MODEL_FILES
    SEED_SALT: tuple[int, ...] = ()
    snapshot_every = 0  # numbered snapshots every N iterations; 0: none
    snapshot_minutes: tuple[float, ...] = ()  # and when the training time passes these marks
    first_message = ""  # said with the first step's progress event (the precision chosen, and why)

    config: LoopConfig  # and iterations, batch_size, lr
    pools: dict[str, data.FacePool]
    model: nn.Module  # the weights the optimizer steps
    average: WeightAverage | None = None  # their running average, when the run keeps one (`shown`)
    optimizer: torch.optim.Optimizer
    state: TrainingState

    def __init__(self, config: LoopConfig, cluster: distributed.Cluster) -> None:
        self.config, self.cluster, self.device = config, cluster, cluster.device
        self.folder = Path(config.model_dir)
        self.precision = Choice("fp32", "not chosen yet")  # `choose_precision` sets it before the loop
        self.autocast = self.precision.autocast(self.device)
        self.rewinds = 0
        self.lr_scale = 1.0  # halved at each loss-spike rewind (`run_loop`), for the rest of this run

    def load_pools(self, paths: tuple[str, str]) -> None:
        """This rank's slice of A's and B's face sets onto the device."""
        self.pools = {side: data.load_pool(path, self.device, self.cluster.rank, self.cluster.world_size)
                      for side, path in zip(SIDES, paths, strict=True)}

    def start(self, model: nn.Module, state: TrainingState, optimizer_state: dict | None, settings: dict) -> None:
        """Train `model` from `state`: Adam (with the saved moments when they match), this run's settings
        recorded, and random streams for the state's iteration."""
        self.model, self.state = model, state
        self.optimizer = adam(model.parameters(), self.config.lr, self.config.beta1)
        checkpoint.load_optimizer_into(self.optimizer, optimizer_state, self.folder, self.FILES)
        self._set_lr()
        self.state.settings = settings
        self.reseed(state.iteration)
        if state.iteration and self.cluster.is_main:
            label = self.FILES.label
            log.info("%s: resuming %sat iteration %d", self.folder, f"{label} " if label else "", state.iteration)

    def reseed(self, iteration: int) -> None:
        """Fresh random streams per rank and start point, so a resume does not replay old batches."""
        entropy = [self.config.seed, self.cluster.rank, iteration, *self.SEED_SALT]
        seed = int(np.random.SeedSequence(entropy).generate_state(1)[0])
        sample_gen = torch.Generator().manual_seed(seed)
        self.samplers = {side: data.BatchSampler(pool, self.config.batch_size, sample_gen)
                         for side, pool in self.pools.items()}
        self.augment_gen = torch.Generator(device=self.device).manual_seed(seed)

    @abstractmethod
    def step(self) -> torch.Tensor:
        ...

    @abstractmethod
    def preview(self) -> np.ndarray | None:
        ...

    @abstractmethod
    def probe_loss(self) -> torch.Tensor:
        """A scalar from one forward pass of the trained network over a batch of this run's size and
        shape (random pixels), under the current autocast: what the precision probe times with its backward."""

    @abstractmethod
    def probe_key(self) -> str:
        """What the probe's answer depends on besides the machine: the network, its size and the batch."""

    def choose_precision(self) -> Choice:
        """The run's precision (engine.precision: `auto` probes this network's forward+backward once per
        machine), recorded in the model folder's settings as what ran. Every rank of a run of several
        computes in the main rank's choice."""
        requested = self.config.precision
        if self.cluster.is_main:
            choice = choose(requested, self.device, network=self.probe_key(),
                            probe=forward_backward_probe(self.probe_loss, self.model, self.device))
        else:
            choice = Choice("fp32", "the main rank's choice")
        if self.cluster.distributed:  # only the main rank's vote counts
            bf16 = self.cluster.mean(torch.tensor([float(choice.bf16)], device=self.device)).item() > 0
            if not self.cluster.is_main:
                choice = Choice("bf16" if bf16 else "fp32", "the main rank's choice")
        self.precision, self.autocast = choice, choice.autocast(self.device)
        self.state.settings = {**self.state.settings, "precision": choice.precision,
                               "precision_reason": choice.reason}
        if self.cluster.is_main:
            log.info("%s: precision %s", self.folder, choice.describe())
        return choice

    def descend(self, losses: list[torch.Tensor], extra: torch.Tensor | None = None) -> torch.Tensor:
        """One joint Adam step on loss_a + loss_b (+ `extra`, a term the two reported losses leave out);
        -> tensor [loss_a, loss_b] left on the device (no sync).

        Joint rather than alternating A and B steps: a shared encoder (or trunk) then gets both
        identities' gradients in every update and learns one latent space for both faces instead of
        being pulled back and forth, Adam's moments see one consistent gradient per step, and under
        DDP every parameter gets a gradient in each backward (one all-reduce, no unused-parameter search).
        """
        self.optimizer.zero_grad(set_to_none=True)
        total = losses[0] + losses[1]
        (total if extra is None else total + extra).backward()
        self.optimizer.step()
        if self.average is not None:
            self.average.update(self.model)
        return torch.stack(losses).detach()

    @property
    def shown(self) -> nn.Module:
        """The network the run saves, previews and hands on: the weight average when it keeps one."""
        return self.model if self.average is None else self.average.module

    def gather(self, pending: list[torch.Tensor], stop: StopFlag) -> tuple[float, float, bool]:
        """Mean losses of the pending steps over all ranks, and whether any rank was asked to stop.

        The stop request rides on the same all-reduce, so ranks always stop at the same iteration.
        """
        return gather_losses(self.cluster, pending, stop)

    def rewind(self) -> bool:
        """After a NaN/Inf loss (or weights) or a blow-up, reload the last checkpoint (never saved broken);
        False: give up.

        UserError, naming the folder, when that checkpoint no longer loads (damaged or replaced since it
        was saved) or holds NaN/Inf weights: the run cannot go on from it, and says so in one line.
        """
        self.rewinds += 1
        if self.rewinds > self.config.max_rewinds:
            return False
        self.cluster.barrier()  # rank 0 has finished writing the checkpoint every rank now reads
        settings, at = self.state.settings, self.state.iteration
        what = f"{self.FILES.label}'s last save" if self.FILES.label else "the last save"
        try:
            state = checkpoint.restore(self.folder, self.model, self.optimizer, self.FILES,
                                       average=None if self.average is None else self.average.module)
        except (UserError, OSError, RuntimeError, ValueError, KeyError, TypeError) as err:
            raise UserError(f"training went NaN/Inf at iteration {at} and {what} in {self.folder} cannot be "
                            f"loaded to rewind to ({err}); restore the folder from its backup/ or a snapshot, "
                            "or retrain") from err
        if not self.weights_finite():
            raise UserError(f"training went NaN/Inf at iteration {at} and {what} in {self.folder} holds NaN/Inf "
                            "weights itself (it was not written by this training); restore the folder from its "
                            "backup/ or a snapshot, or retrain")
        self.state = state
        self.state.settings = settings
        self._set_lr()
        self.reseed(self.state.iteration + REWIND_STRIDE * self.rewinds)
        return True

    def save(self) -> None:
        """The checkpoint (main rank), with the loss history's open bucket closed first."""
        if self.cluster.is_main:
            self.state.history.close(self.state.iteration)
            self.write_checkpoint()

    def write_checkpoint(self) -> None:
        checkpoint.save(self.folder, self.shown, self.optimizer, self.state, self.FILES, trained=self.trained,
                        beside=self.beside())

    def beside(self) -> dict | None:
        """More training state a save keeps beside Adam's moments (`checkpoint.load_beside` reads it)."""
        return None

    def weights_finite(self) -> bool:
        """Whether what a save writes (the trained weights and their average) is free of NaN and Inf."""
        return checkpoint.weights_finite(self.model) and (self.average is None or checkpoint.weights_finite(self.shown))

    @property
    def trained(self) -> nn.Module | None:
        """The trained weights when they are not what the weights file gets (a run with a weight average)."""
        return None if self.average is None else self.model

    def snapshot(self, name: str | None = None) -> None:  # noqa: B027 (a default: sessions without snapshots skip it)
        """A copy of the weights, named by iteration or `name` (asked for by `snapshot_every` and
        `snapshot_minutes`)."""

    def _set_lr(self) -> None:
        """This run's lr (it wins over the saved one), ramped up linearly over the first `warmup` steps."""
        warmup = self.config.warmup
        scale = min(1.0, (self.state.iteration + 1) / warmup) if warmup > 0 else 1.0
        for group in self.optimizer.param_groups:
            group["lr"] = self.config.lr * scale * self.lr_scale


def adam(parameters, lr: float, beta1: float) -> torch.optim.Optimizer:
    """Adam as every training phase (and bench/train.py) runs it."""
    return torch.optim.Adam(parameters, lr=lr, betas=(beta1, ADAM_BETA2))


class SpikeGuard:
    """Tells a blow-up from noise: a reported loss `factor` times the median of the last SPIKE_WINDOW.

    Finite blow-ups pass the NaN guard: Adam can step a network off a cliff (loss 0.23 -> 7 -> 2e5 in
    three steps) and it may never come back, or come back as a different, worse network; the loop
    then rewinds it like a NaN. The median ignores ordinary jitter and a first drop from the start.
    """

    def __init__(self, factor: float) -> None:
        self.factor = factor
        self.recent: list[float] = []

    def ratio(self, loss: float) -> float | None:
        """loss / recent median when that is a blow-up, else None (also while the guard is not armed)."""
        if self.factor <= 0 or len(self.recent) < SPIKE_ARMED:
            return None
        median = float(np.median(self.recent))
        return loss / median if median > 0 and loss > self.factor * median else None

    def add(self, loss: float) -> None:
        self.recent = [*self.recent[-(SPIKE_WINDOW - 1):], loss]


class TimeBudget:
    """Training time of the model folder (all runs together) against `minutes`, and the marks passed.

    The time counts only the loop's own steps, not start-up, so a resumed run continues the clock
    where the last one stopped and `--minutes 30` means 30 minutes of training, however many runs.
    """

    def __init__(self, state: TrainingState, minutes: float | None, marks: tuple[float, ...]) -> None:
        self.state, self.limit = state, None if minutes is None else 60.0 * minutes
        self._t0, self._start = time.perf_counter(), state.seconds
        self.marks = sorted(m for m in marks if 60.0 * m > state.seconds)

    def tick(self) -> None:
        self.state.seconds = self._start + time.perf_counter() - self._t0

    def restart(self, state: TrainingState) -> None:
        """After a rewind: the clock goes on from the restored state's time plus the time spent since."""
        spent = self.state.seconds
        self.state, self._start, self._t0 = state, max(state.seconds, spent), time.perf_counter()

    @property
    def spent(self) -> bool:
        return self.limit is not None and self.state.seconds >= self.limit

    def left(self) -> float | None:
        return None if self.limit is None else max(0.0, self.limit - self.state.seconds)

    def passed_mark(self) -> float | None:
        """The next mark once the training time has reached it (then dropped from the list), else None."""
        if self.marks and self.state.seconds >= 60.0 * self.marks[0]:
            return self.marks.pop(0)
        return None


@contextmanager
def joined(device: str, cluster: distributed.Cluster | None = None) -> Iterator[distributed.Cluster]:
    """This process's place among the training processes for one run; a `cluster` handed in (an
    earlier phase's) is used and left up."""
    if cluster is not None:
        yield cluster
        return
    cluster = distributed.setup(device)
    try:
        yield cluster
    finally:
        distributed.teardown(cluster)


@contextmanager
def held_folder(folder: str | Path, cluster: distributed.Cluster) -> Iterator[None]:
    """The main rank holds the model folder's lock for the block (`engine.models.lock`: a second training
    of the folder gets a UserError) and, now the folder's only writer, first deletes the temporary files
    of saves that a kill interrupted (`engine.atomic.temp_files`), before anything is loaded or written.
    Other ranks never write the folder."""
    if not cluster.is_main:
        yield
        return
    with training_lock(folder) as outermost:
        if outermost:
            count, size = remove_temp_files(folder)
            if count:
                log.info("%s: removed %d temporary file(s), %.1f MB, of saves that were interrupted",
                         folder, count, size / 1e6)
        yield


def drive(session: LoopSession, job: str, listeners: list[Listener] | tuple, stop: StopFlag) -> TrainResult:
    """`run_loop` in the precision `choose_precision` picks, with progress events of `job` for the
    listeners (main rank only); the first step's event says which precision and why."""
    choice = session.choose_precision()
    total = session.config.iterations if session.config.iterations < UNLIMITED else None  # no bar to fill, no ETA
    reporter = Reporter(job, total=total, unit="it",
                        listeners=listeners if session.cluster.is_main else (), start_step=session.state.iteration)
    session.first_message = choice.describe()
    return run_loop(session, reporter, stop)


def gather_losses(cluster: distributed.Cluster, pending: list[torch.Tensor],
                  stop: StopFlag) -> tuple[float, float, bool]:
    """Mean of pending [loss, loss] steps over all ranks, and whether any rank was asked to stop."""
    means = torch.stack(pending).float().mean(0)
    flag = torch.tensor([1.0 if stop else 0.0], device=means.device)
    totals = cluster.mean(torch.cat([means, flag])).tolist()
    return totals[0], totals[1], totals[2] > 0


def run_loop(s: LoopSession, reporter: Reporter, stop: StopFlag) -> TrainResult:
    """The one loop: step until `s.config.iterations`, a stop request or divergence, saving,
    previewing and reporting on the way."""
    cfg = s.config
    names = s.METRICS
    report_every = cfg.report_every or (10 if s.device.type == "cuda" else 1)
    examples_per_step = 2 * cfg.batch_size * s.cluster.world_size  # A and B faces on every rank
    if s.state.iteration == 0:
        s.save()  # a fresh model is on disk at once: the NaN guard always has a good state to rewind to
    saved_at, status, last = s.state.iteration, "done", (None, None)
    pending: list[torch.Tensor] = []
    window_start, window_t0 = s.state.iteration, time.perf_counter()
    clock = TimeBudget(s.state, cfg.minutes, s.snapshot_minutes)
    spike = SpikeGuard(cfg.spike)

    while s.state.iteration < cfg.iterations:
        if not s.cluster.distributed and (stop or clock.spent):  # one process: honour these before a step
            status = "stopped" if stop else "done"
            break
        if s.state.iteration < cfg.warmup:
            s._set_lr()
        pending.append(s.step())
        s.state.iteration += 1
        it = s.state.iteration
        clock.tick()
        mark = clock.passed_mark()
        if mark is not None:
            s.snapshot(f"{mark:g}min")
        save_due = _due(it, cfg.save_every)
        snapshot_due = _due(it, s.snapshot_every)
        preview_due = _due(it, cfg.preview_every)
        # one process reports the step that spends the budget; ranks of several only meet at reports
        time_up = clock.spent and not s.cluster.distributed
        if not (save_due or snapshot_due or preview_due or time_up or _due(it, report_every)
                or it == cfg.iterations):
            continue

        # the main rank's clock ends a run of several processes, riding on the stop request's all-reduce
        loss_a, loss_b, stop_requested = s.gather(pending, _Either(stop, s.cluster.is_main and clock.spent))
        count, pending = len(pending), []
        finite = math.isfinite(loss_a) and math.isfinite(loss_b)
        if finite and (save_due or snapshot_due) and not s.weights_finite():
            finite = False  # a finite loss over NaN/Inf weights: never saved, rewound like a NaN loss
        jump = spike.ratio(loss_a + loss_b) if finite else None
        if not finite or jump is not None:
            if jump is not None:
                s.lr_scale *= 0.5  # the same rate would climb into the same cliff: go on at half of it
            if not s.rewind():
                status = "diverged"
                log.error("loss is %s again after %d rewinds: stopping; %s keeps iteration %d",
                          "NaN/Inf" if jump is None else "blowing up", cfg.max_rewinds, s.folder, saved_at)
                break
            clock.restart(s.state)
            what = ("loss or weights became NaN/Inf" if jump is None else
                    f"loss jumped to {jump:.0f}x its recent median")
            lr = "" if jump is None else f", learning rate halved to {cfg.lr * s.lr_scale:.2g}"
            note = f"{what} at {it}: rewound to {s.state.iteration}{lr}"
            log.warning("%s: %s", s.folder, note)  # kept in the log and the terminal; the bar shows it once
            reporter(s.state.iteration, message=note)
            window_start, window_t0 = s.state.iteration, time.perf_counter()
            continue
        spike.add(loss_a + loss_b)
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
        reporter(it, metrics={names[0]: loss_a, names[1]: loss_b, "examples_per_s": speed}, preview=preview,
                 time_left_s=clock.left(), message=s.first_message)
        s.first_message = ""
        if stop_requested:
            status = "stopped" if stop or not clock.limit else "done"
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
            if s.weights_finite():
                s.save()
            else:  # the same guard as the saves in the loop: the folder keeps the last good checkpoint
                status = "diverged"
    message = {"done": "time budget spent, saved" if clock.spent else "finished", "stopped": "stopped and saved",
               "diverged": "diverged: kept last good save"}
    reporter(s.state.iteration, metrics=dict(zip(names, last, strict=True)) if last[0] is not None else None,
             message=message[status], done=True)
    return TrainResult(status=status, iteration=s.state.iteration, loss_a=last[0], loss_b=last[1],
                       model_dir=s.folder, model=s.shown)


def require_sides(model: nn.Module, folder: Path, why: str) -> None:
    """UserError unless `model` has a decoder for each of SIDES; `why`: who needs them, and the fix."""
    if not set(SIDES) <= set(model.identities):
        raise UserError(f"{folder} has decoders {list(model.identities)}, {why}")


class _Either:
    """A stop request that is set when the user's flag or `also` is."""

    def __init__(self, stop: StopFlag, also: bool) -> None:
        self.stop, self.also = stop, also

    def __bool__(self) -> bool:
        return bool(self.stop) or self.also


def _due(iteration: int, every: int | None) -> bool:
    return bool(every) and iteration % every == 0
