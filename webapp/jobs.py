"""Background jobs: long work (extraction, training, video renders) runs here, never in a request.

A browser request only submits a job and returns; a worker thread runs it and a listener stores the
engine's latest `Progress` (plus the loss curve and preview for training) on the `Job`. Pages poll
that state with a timer, so closing the tab, reloading or opening the page on another machine shows
the same running job.

Jobs run in lanes, each a FIFO queue with one worker: the `train` lane keeps one training at a time
on the GPU (or CPU), however many visitors press Start; the others wait and see their place in line.
Extraction and renders use the `media` lane so they need not wait hours for a training to end.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from engine.errors import UserError
from engine.progress import Progress, StopFlag

log = logging.getLogger(__name__)

QUEUED, RUNNING, DONE, STOPPED, FAILED, CANCELLED = "queued", "running", "done", "stopped", "failed", "cancelled"
ACTIVE = (QUEUED, RUNNING)
LANES = ("train", "media")


class JobConflict(UserError):
    """The same work is already queued or running for this project."""


class LossCurve:
    """Loss points (step, loss_a, loss_b) for the chart, at most `limit` of them.

    Events are averaged into buckets of `width` events; when there are more than `limit` buckets,
    neighbours merge in pairs and the width doubles. A run of a million iterations still draws its
    whole curve, evenly sampled, from a few thousand points, and memory stays bounded.
    """

    def __init__(self, limit: int = 2000) -> None:
        self.limit = max(2, limit - limit % 2)  # even, so buckets always merge in whole pairs
        self.width = 1
        self._closed: list[tuple[float, float, float, int]] = []  # means of step, loss_a, loss_b; count
        self._open = [0.0, 0.0, 0.0, 0]

    def add(self, step: float, loss_a: float, loss_b: float) -> None:
        o = self._open
        o[0] += step
        o[1] += loss_a
        o[2] += loss_b
        o[3] += 1
        if o[3] >= self.width:
            self._closed.append((o[0] / o[3], o[1] / o[3], o[2] / o[3], o[3]))
            self._open = [0.0, 0.0, 0.0, 0]
            if len(self._closed) >= self.limit:
                pairs = zip(self._closed[0::2], self._closed[1::2], strict=True)
                self._closed = [_merge(x, y) for x, y in pairs]
                self.width *= 2

    @property
    def points(self) -> list[tuple[float, float, float]]:
        o = self._open
        tail = [(o[0] / o[3], o[1] / o[3], o[2] / o[3])] if o[3] else []
        return [(s, a, b) for s, a, b, _ in self._closed] + tail

    def __len__(self) -> int:
        return len(self._closed) + (1 if self._open[3] else 0)


def _merge(x: tuple[float, float, float, int], y: tuple[float, float, float, int]) -> tuple[float, float, float, int]:
    n = x[3] + y[3]
    return ((x[0] * x[3] + y[0] * y[3]) / n, (x[1] * x[3] + y[1] * y[3]) / n, (x[2] * x[3] + y[2] * y[3]) / n, n)


@dataclass
class Job:
    """One unit of background work and everything a page needs to show it."""

    id: int
    owner: str
    project: str
    kind: str  # "train", "extract:A", "render", ...
    lane: str
    run: Callable[[Job], Any] = field(repr=False)
    info: dict = field(default_factory=dict)  # what it was asked to do (e.g. the training settings)
    state: str = QUEUED
    progress: Progress | None = None
    losses: LossCurve = field(default_factory=LossCurve)
    preview: np.ndarray | None = field(default=None, repr=False)
    preview_version: int = 0
    version: int = 0  # bumped on every change, so pollers can skip redrawing what they have
    message: str = ""
    result: Any = None
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    stop: StopFlag = field(default_factory=StopFlag)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def listen(self, event: Progress) -> None:
        """The engine's listener: keep the latest event, the loss curve and the newest preview."""
        with self._lock:
            self.progress = event
            loss_a, loss_b = event.metrics.get("loss_a"), event.metrics.get("loss_b")
            if loss_a is not None and loss_b is not None and not event.done:
                self.losses.add(event.step, loss_a, loss_b)
            if event.preview is not None:
                self.preview = event.preview
                self.preview_version += 1
            if event.message:
                self.message = event.message
            self.version += 1

    @property
    def active(self) -> bool:
        return self.state in ACTIVE

    def set_state(self, state: str, message: str | None = None) -> None:
        with self._lock:
            self.state = state
            if message is not None:
                self.message = message
            if state == RUNNING:
                self.started = time.time()
            elif state not in ACTIVE:
                self.finished = time.time()
            self.version += 1

    def add_losses(self, rows) -> None:
        """Earlier (step, loss_a, loss_b) rows, e.g. a resumed model's saved history, before the first event."""
        with self._lock:
            for row in rows:
                self.losses.add(*row)
            self.version += 1

    def loss_points(self) -> list[tuple[float, float, float]]:
        with self._lock:
            return list(self.losses.points)


class JobManager:
    """The registry of jobs (newest per project and kind) and one FIFO worker per lane."""

    def __init__(self, lanes: tuple[str, ...] = LANES) -> None:
        self._lock = threading.Condition()
        self._queues: dict[str, deque[Job]] = {lane: deque() for lane in lanes}
        self._running: dict[str, Job | None] = dict.fromkeys(lanes)
        self._latest: dict[tuple[str, str, str], Job] = {}
        self._workers: dict[str, threading.Thread] = {}
        self._next_id = 1
        self._closing = False

    def submit(self, owner: str, project: str, kind: str, run: Callable[[Job], Any], lane: str = "media",
               info: dict | None = None) -> Job:
        """Queue `run(job)`; raises JobConflict when the same kind of job is active for the project."""
        if lane not in self._queues:
            raise ValueError(f"unknown lane {lane!r}")
        with self._lock:
            if self._closing:
                raise UserError("the server is shutting down: try again when it is back")
            old = self._latest.get((owner, project, kind))
            if old is not None and old.active:
                raise JobConflict(f"{describe(kind)} is already {old.state} for this project: "
                                  "wait for it, or stop it first")
            job = Job(id=self._next_id, owner=owner, project=project, kind=kind, lane=lane, run=run,
                      info=dict(info or {}))
            self._next_id += 1
            self._latest[(owner, project, kind)] = job
            self._queues[lane].append(job)
            self._ensure_worker(lane)
            self._lock.notify_all()
        return job

    def find(self, owner: str, project: str, kind: str) -> Job | None:
        """The newest job of this kind for the project (running, queued or finished), if any."""
        with self._lock:
            return self._latest.get((owner, project, kind))

    def active_jobs(self, owner: str, project: str | None = None) -> list[Job]:
        with self._lock:
            return [j for (o, p, _), j in self._latest.items()
                    if o == owner and (project is None or p == project) and j.active]

    def position(self, job: Job) -> int:
        """0 while running (or finished), else 1 + how many jobs run or wait before it in its lane."""
        with self._lock:
            if job.state != QUEUED:
                return 0
            queue = self._queues[job.lane]
            ahead = list(queue).index(job) if job in queue else 0
            return ahead + 1 + (self._running[job.lane] is not None)

    def stop(self, job: Job) -> None:
        """Ask a running job to stop (it saves and ends), or take a queued one out of the line."""
        with self._lock:
            if job.state == QUEUED and job in self._queues[job.lane]:
                self._queues[job.lane].remove(job)
                job.set_state(CANCELLED, "taken out of the queue")
                return
        job.stop.set()

    def shutdown(self, timeout: float = 60.0) -> None:
        """Stop every job (training saves) and wait for the workers, e.g. when the server exits."""
        with self._lock:
            self._closing = True
            for queue in self._queues.values():
                while queue:
                    queue.popleft().set_state(CANCELLED, "the server shut down before it started")
            running = [j for j in self._running.values() if j is not None]
            self._lock.notify_all()
        for job in running:
            job.stop.set()
        deadline = time.monotonic() + timeout
        for worker in list(self._workers.values()):
            worker.join(max(0.0, deadline - time.monotonic()))

    def _ensure_worker(self, lane: str) -> None:
        worker = self._workers.get(lane)
        if worker is None or not worker.is_alive():
            worker = threading.Thread(target=self._work, args=(lane,), name=f"jobs-{lane}", daemon=True)
            self._workers[lane] = worker
            worker.start()

    def _work(self, lane: str) -> None:
        while True:
            with self._lock:
                while not self._queues[lane] and not self._closing:
                    self._lock.wait()
                if self._closing and not self._queues[lane]:
                    return
                job = self._queues[lane].popleft()
                self._running[lane] = job
                job.set_state(RUNNING)
            try:
                self._run(job)
            finally:
                with self._lock:
                    self._running[lane] = None

    @staticmethod
    def _run(job: Job) -> None:
        try:
            job.result = job.run(job)
        except UserError as err:
            job.set_state(FAILED, str(err))
        except Exception as err:  # a bug or a broken file: the worker lives on for the next job
            log.error("job %s (%s) failed:\n%s", job.id, job.kind, traceback.format_exc())
            job.set_state(FAILED, f"{type(err).__name__}: {err}")
        else:
            job.set_state(STOPPED if job.stop else DONE)


def describe(kind: str) -> str:
    """A job kind in words for messages ("train" -> "training")."""
    words = {"train": "training", "render": "video render", "evaluate": "evaluation"}
    if kind.startswith("extract:"):
        return f"extraction into face set {kind.split(':', 1)[1]}"
    return words.get(kind, kind)


def format_eta(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes:02d} min"
    if minutes:
        return f"{minutes} min {secs:02d} s"
    return f"{secs} s"


def ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"
