"""Progress events of the long jobs (extract, train, train-color, swap, evaluate) and their stop flag.

`Progress` is the one event type every job emits (step, total, rate, ETA, metrics, message, an
optional preview image, done). A job builds its events with a `Reporter`, which times the steps for
rate and ETA and hands each event to its listeners: any callable taking a `Progress` (`Listener`).
The commands listen with `TqdmListener`, a terminal bar; the web app with `webapp.jobs.Job.listen`,
which keeps the latest event, the loss curve and the newest preview for the page to poll.
`StopFlag` carries stop requests the other way: the web app's Stop button and the training
commands' Ctrl-C/SIGTERM handler set it, and jobs poll it between steps.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np


@dataclass
class Progress:
    """A snapshot of a running job.

    `metrics` holds job-specific figures (e.g. `loss_a`, `loss_b`, `faces`), `preview` an RGB
    uint8 image when the job has one to show (training preview grid, swapped frame).
    """

    job: str
    step: int
    total: int | None = None
    unit: str = "it"
    rate: float | None = None  # units per second
    eta_s: float | None = None  # the sooner of the step target's ETA and a time budget's end
    time_left_s: float | None = None  # what is left of the job's time budget, when it has one
    metrics: dict[str, float] = field(default_factory=dict)
    message: str = ""
    preview: np.ndarray | None = None
    done: bool = False

    @property
    def fraction(self) -> float | None:
        if not self.total:
            return None
        return min(1.0, self.step / self.total)


Listener = Callable[[Progress], None]


class Reporter:
    """Fans progress events out to listeners and derives rate and ETA from step timings."""

    def __init__(self, job: str, total: int | None = None, unit: str = "it",
                 listeners: Iterable[Listener] = (), start_step: int = 0) -> None:
        self.job, self.total, self.unit = job, total, unit
        self.listeners: list[Listener] = list(listeners)
        self._t0 = time.perf_counter()
        self._start_step = start_step
        self._rate: float | None = None

    def __call__(self, step: int, *, metrics: dict[str, float] | None = None, message: str = "",
                 preview: np.ndarray | None = None, done: bool = False,
                 total: int | None = None, time_left_s: float | None = None) -> Progress:
        if total is not None:
            self.total = total
        elapsed = time.perf_counter() - self._t0
        done_steps = step - self._start_step
        rate = done_steps / elapsed if elapsed > 0 and done_steps > 0 else None
        # smooth the rate so that the ETA does not jump around
        if rate is not None:
            self._rate = rate if self._rate is None else 0.7 * self._rate + 0.3 * rate
        eta = None
        if self._rate and self.total is not None:
            eta = max(0.0, (self.total - step) / self._rate)
        if time_left_s is not None:
            eta = time_left_s if eta is None else min(eta, time_left_s)
        event = Progress(job=self.job, step=step, total=self.total, unit=self.unit, rate=self._rate,
                         eta_s=eta, time_left_s=time_left_s, metrics=dict(metrics or {}), message=message,
                         preview=preview, done=done)
        for listener in self.listeners:
            listener(event)
        return event


class StopFlag:
    """A thread-safe stop request that jobs poll once per step (set by Stop buttons and signals)."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def set(self) -> None:
        self._event.set()

    def __bool__(self) -> bool:
        return self._event.is_set()


class Stopped(Exception):
    """Raised out of a loop when its StopFlag is set; the caller turns it into a result with no output."""


class TqdmListener:
    """Shows progress events as a tqdm bar on the terminal, with the metrics as a postfix."""

    def __init__(self, desc: str | None = None, **tqdm_kwargs) -> None:
        self.desc = desc
        self.kwargs = tqdm_kwargs
        self.bar = None

    def __call__(self, event: Progress) -> None:
        from tqdm.auto import tqdm

        if self.bar is None:
            self.bar = tqdm(total=event.total, desc=self.desc or event.job, unit=event.unit,
                            initial=event.step, dynamic_ncols=True, **self.kwargs)
        if event.total is not None and self.bar.total != event.total:
            self.bar.total = event.total
        self.bar.update(event.step - self.bar.n)
        postfix = {k: _short(v) for k, v in event.metrics.items()}
        if event.time_left_s is not None:
            postfix["left"] = _clock(event.time_left_s)
        if postfix:
            self.bar.set_postfix(postfix, refresh=False)
        # the description says what the job is doing now, as the web page does: a one-off note (a rewind,
        # the precision chosen) is shown until the next event, then the plain name comes back
        name = self.desc or event.job
        self.bar.set_description_str(f"{name}: {event.message}" if event.message else name, refresh=False)
        self.bar.refresh()
        if event.done:
            self.close()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _clock(seconds: float) -> str:
    """12:34 or 1:02:03: time left for a bar's postfix."""
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _short(value: float) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
