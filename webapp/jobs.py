"""Background jobs: long work (extraction, training, renders, evaluations, exports) runs here, never in a request.

A browser request only submits a job and returns; a worker runs it and a listener keeps the engine's
latest `Progress` (plus the loss curve and preview for training) on the `Job`. Pages poll that state
with a timer, so closing the tab, reloading or opening the page on another machine shows the same job.

Durable: every job is a row (`webapp.records`: the workspace's `jobs.db` on one box, Redis with
`--queue redis://...` for several machines), and its place in line is a task in huey's queue
(`queue.db`, or the same Redis; see `webapp.queue`). A job's work is a `Task`: a module-level function
and JSON-able arguments, so a worker that starts after a crash, a deploy or `kill -9` can run what was
queued, in its place. A worker claims a job with a lease and beats a heartbeat while it runs it; a job
whose worker died is marked `interrupted` (the row says so, with what was saved) by the same worker
when it starts again, or by any live worker of its lane once the heartbeat is `worker_timeout` old,
and a training, which saves as it goes, is queued again to resume from its last save.
Closures are still accepted (tests, one-off work) but cannot outlive the process.

Lanes are queues with one worker each: `train` keeps one training at a time on the GPU (or CPU),
`media` runs extraction, renders, evaluations and exports beside it. The line is fair between users:
a job's priority falls with the number of jobs its owner already has in that lane, so one visitor
queueing fifty trainings puts the next visitor second, not fifty-first. Limits per user (active jobs)
come from `Limits` (the operator's flags).
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import json
import logging
import os
import socket
import tempfile
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from engine.errors import UserError
from engine.progress import Progress, StopFlag
from webapp.records import NOW

log = logging.getLogger(__name__)

QUEUED, RUNNING, DONE, STOPPED, FAILED, CANCELLED = "queued", "running", "done", "stopped", "failed", "cancelled"
INTERRUPTED = "interrupted"  # the process running it died (kill, crash, restart)
ACTIVE = (QUEUED, RUNNING)
LANES = ("train", "media")
SAVE_PROGRESS_S = 2.0  # a running job's progress reaches its row at most this often
HEARTBEAT_S = 1.0  # how often a worker renews its jobs' leases and looks for a Stop asked through the row
REAP_S = 5.0  # how often a worker looks for jobs whose worker went silent
WORKER_TIMEOUT_S = 60.0  # a running job whose heartbeat is this old has lost its worker (--worker-timeout)


class JobConflict(UserError):
    """The same work is already queued or running for this project."""


@dataclass(frozen=True)
class Task:
    """What a job runs, in a form that survives a restart: `func(job, **kwargs)`, a module-level function
    of this project, and arguments the codec below writes as JSON. `resume`: the arguments to queue
    again after an interruption (a training resumes from its last save); None: not restarted."""

    func: Callable[..., Any]
    kwargs: dict = field(default_factory=dict)
    resume: dict | None = None

    @property
    def name(self) -> str:
        return f"{self.func.__module__}:{self.func.__qualname__}"


@dataclass
class Limits:
    """What the operator allows each signed-in user (0 = no limit)."""

    jobs_per_user: int = 0  # queued or running, all lanes together
    quota_mb: int = 0  # disk a user's projects may take: uploads, face sets, models, renders, exports
    train_minutes: float = 0  # training time one job may add to a model (demo visitors)
    iterations: int = 0  # highest iteration target a training may ask for


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
    run: Callable[[Job], Any] | Task | None = field(repr=False)
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
    _saved: Callable[[Job, bool], None] | None = field(default=None, repr=False)  # writes the row
    _saved_at: float = field(default=0.0, repr=False)
    _lease: str | None = field(default=None, repr=False)  # this worker's claim on the row while it runs it

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
            due = event.done or time.monotonic() - self._saved_at >= SAVE_PROGRESS_S
            if due:
                self._saved_at = time.monotonic()
        if due and self._saved is not None:
            self._saved(self, False)

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
        if self._saved is not None:
            self._saved(self, True)

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
    """The registry of jobs (rows in `webapp.records`) and one worker per lane (huey consumers).

    `folder`: where jobs.db and the queue live (the workspace's `.studio/`); None keeps them in a
    temporary folder for this process alone. `worker`: run the lanes' workers in this process
    (the default), or leave them to `python -m webapp.worker` on this or other machines. `queue_url`:
    redis://... keeps the queue and the job rows in Redis, for workers on several machines.

    A worker claims a queued job with a lease (only one claim of a row succeeds), renews it with a
    heartbeat every `HEARTBEAT_S`, and looks for the jobs of its lanes whose heartbeat is older than
    `worker_timeout`: their worker died (kill, crash, power or network lost), so they are marked
    interrupted and a training is queued again to resume from its last save, for a live worker.
    """

    def __init__(self, folder: str | os.PathLike | None = None, lanes: tuple[str, ...] = LANES, *,
                 worker: bool = True, limits: Limits | None = None, queue_url: str | None = None,
                 worker_name: str | None = None, worker_timeout: float | None = None) -> None:
        from webapp.queue import JobQueue
        from webapp.records import open_records

        self._scratch = None if folder is not None else tempfile.TemporaryDirectory(prefix="studio-jobs-")
        self.folder = Path(folder if folder is not None else self._scratch.name)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.lanes = lanes
        self.limits = limits or Limits()
        self.worker_name = worker_name or f"{socket.gethostname()}:{os.getpid() if folder is None else 'main'}"
        self.worker_timeout = worker_timeout or WORKER_TIMEOUT_S
        self._lock = threading.RLock()
        self._records = open_records(self.folder, queue_url)
        self._jobs: dict[int, Job] = {}  # jobs this process has seen: live progress of those it runs
        self._running: dict[str, Job | None] = dict.fromkeys(lanes)
        self._closing = False
        self._heart: _Heartbeat | None = None
        self.queue = JobQueue(self.folder, lanes, self._execute, url=queue_url)
        if worker:
            self.recover()
            self._heart = _Heartbeat(self)
            self.queue.start()

    # --- submitting and finding -------------------------------------------------------------------
    def submit(self, owner: str, project: str, kind: str, run: Callable[[Job], Any] | Task, lane: str = "media",
               info: dict | None = None, message: str = "", first: bool = False) -> Job:
        """Queue `run` (a `Task`, or a closure that cannot outlive this process); JobConflict when the same
        kind of job is active for the project, UserError when the owner is at their limit. `first`: ahead of
        every waiting job (a resumed training takes back the place it had)."""
        if lane not in self.lanes:
            raise ValueError(f"unknown lane {lane!r}")
        args = _encode(run.kwargs) if isinstance(run, Task) else None  # fail here, not in the worker
        with self._lock:
            if self._closing:
                raise UserError("the server is shutting down: try again when it is back")
            old = self.find(owner, project, kind)
            if old is not None and old.active:
                raise JobConflict(f"{describe(kind)} is already {old.state} for this project: "
                                  "wait for it, or stop it first")
            mine = self._count(owner, lane=None)
            if self.limits.jobs_per_user and mine >= self.limits.jobs_per_user:
                raise UserError(f"you have {mine} jobs queued or running, the most this server allows each "
                                f"user (--max-jobs-per-user {self.limits.jobs_per_user}): wait for one to "
                                "finish, or stop one")
            priority = 1 if first else -self._count(owner, lane=lane)  # fair: a user's n-th job waits behind others' first
            now = time.time()
            job_id = self._records.insert(dict(
                owner=owner, project=project, kind=kind, lane=lane, task=run.name if isinstance(run, Task) else None,
                args=args, resume=None if not isinstance(run, Task) or run.resume is None else _encode(run.resume),
                info=json.dumps(info or {}), state=QUEUED, message=message, created=now, priority=priority,
                stop=0, version=0))
            job = Job(id=job_id, owner=owner, project=project, kind=kind, lane=lane, run=run,
                      info=dict(info or {}), message=message, created=now)
            job._saved = self._save
            self._jobs[job.id] = job
        self.queue.enqueue(lane, job.id, priority)
        return job

    def find(self, owner: str, project: str, kind: str) -> Job | None:
        """The newest job of this kind for the project (running, queued or finished), if any."""
        row = self._records.newest(owner, project, kind)
        return None if row is None else self._job(row)

    def get(self, job_id: int) -> Job | None:
        row = self._records.get(job_id)
        return None if row is None else self._job(row)

    def active_jobs(self, owner: str, project: str | None = None) -> list[Job]:
        rows = self._records.active(owner=owner)
        return [self._job(r) for r in rows if project is None or r["project"] == project]

    def listing(self, limit: int = 50) -> list[dict]:
        """The newest jobs of every user, for the operator (`python -m webapp.worker list`)."""
        keep = ("id", "owner", "project", "kind", "lane", "state", "message", "created", "worker", "heartbeat")
        return [{k: r[k] for k in keep} for r in self._records.listing(limit)]

    def position(self, job: Job) -> int:
        """0 while running (or finished), else 1 + how many jobs run or wait before it in its lane."""
        rows = self._records.active(lane=job.lane)
        me = next((r for r in rows if r["id"] == job.id), None)
        if me is None or me["state"] != QUEUED:
            return 0
        return 1 + sum(1 for r in rows if r["state"] == RUNNING or (
            r["id"] != job.id and (-r["priority"], r["id"]) < (-me["priority"], me["id"])))

    # --- stopping ------------------------------------------------------------------------------------
    def stop(self, job: Job) -> None:
        """Ask a running job to stop (it saves and ends), or take a queued one out of the line; works
        across processes and machines (the row carries the request)."""
        with self._lock:
            cancelled = self._records.update(job.id, {"state": CANCELLED, "message": "taken out of the queue",
                                                      "finished": time.time()}, when={"state": QUEUED})
            if not cancelled:
                self._records.update(job.id, {"stop": 1})
        live = self._jobs.get(job.id)
        for j in [job] if live is None or live is job else [job, live]:
            if cancelled:
                j.state, j.message, j.finished = CANCELLED, "taken out of the queue", time.time()
                j.version += 1
            j.stop.set()

    def cancel(self, job_id: int) -> bool:
        """The operator's stop (any user's job); False when there is no such active job."""
        job = self.get(job_id)
        if job is None or not job.active:
            return False
        self.stop(job)
        return True

    def shutdown(self, timeout: float = 60.0) -> None:
        """Stop the running jobs (training saves) and the workers, e.g. when the server exits. Queued tasks
        stay queued (the next start runs them); queued closures are cancelled."""
        with self._lock:
            self._closing = True
            running = [j for j in self._running.values() if j is not None]
            for job in self._jobs.values():  # a closure cannot outlive this process: out of the line
                if job.state == QUEUED and job.run is not None and not isinstance(job.run, Task):
                    job.set_state(CANCELLED, "the server shut down before it started")
        for job in running:
            job.stop.set()
        self.queue.stop(timeout)
        if self._heart is not None:
            self._heart.close()
        with contextlib.suppress(Exception):
            self._records.close()
        if self._scratch is not None:
            self._scratch.cleanup()

    # --- the worker's side ---------------------------------------------------------------------------
    def recover(self) -> list[Job]:
        """Mark the jobs this worker was running when it died as interrupted, saying what was saved, and
        queue resumable ones (trainings) again. Returns the jobs queued again."""
        rows = [r for r in self._records.active() if r["state"] == RUNNING and r["worker"] == self.worker_name
                and r["lane"] in self.lanes]
        return self._interrupt(rows, "the server stopped while this ran (crash, kill or restart)")

    def reap(self) -> list[Job]:
        """Mark the running jobs of this worker's lanes whose worker has gone silent (no heartbeat for
        `worker_timeout` seconds) as interrupted, and queue trainings again. Returns the jobs queued again."""
        with self._lock:
            mine = {j.id for j in self._running.values() if j is not None}
        rows = [r for r in self._records.stale(self.lanes, self.worker_timeout) if r["id"] not in mine]
        return self._interrupt(rows, f"its worker went silent for more than {self.worker_timeout:g} s "
                                     "(killed, crashed, or cut off)")

    def _interrupt(self, rows: list[dict], why: str) -> list[Job]:
        again = []
        for row in rows:
            saved = _last_save(row)
            worker = f" on {row['worker']}" if row["worker"] else ""
            note = f"interrupted{worker}: {why}{saved}"
            # the row's lease as read: if its worker beat or another worker got here first, this does nothing
            if not self._records.update(row["id"], {"state": INTERRUPTED, "message": note, "finished": time.time(),
                                                    "lease": None},
                                        when={"state": RUNNING, "lease": row["lease"]}):
                continue
            log.warning("job %s (%s of %s/%s) %s", row["id"], row["kind"], row["owner"], row["project"], note)
            if row["resume"] and not row["stop"]:
                resume = _decode(json.loads(row["resume"]))
                task = Task(_resolve(row["task"]), resume, resume)  # resumed again if this run is cut too
                again.append(self.submit(row["owner"], row["project"], row["kind"], task, lane=row["lane"],
                                         info=json.loads(row["info"]), first=True,
                                         message=f"resumed on its own after job {row['id']} was {note}"))
        return again

    def _execute(self, job_id: int) -> None:
        """Run one queued job (called by the lane's huey worker), if this worker's claim on it wins."""
        lease = uuid.uuid4().hex
        with self._lock:
            if self._closing:  # back in the line for another worker (or this one's next start)
                row = self._records.get(job_id)
                if row is not None and row["state"] == QUEUED:
                    self.queue.enqueue(row["lane"], job_id, row["priority"])
                return
            if not self._records.update(job_id, {"worker": self.worker_name, "lease": lease, "heartbeat": NOW,
                                                 "state": RUNNING, "started": time.time()},
                                        when={"state": QUEUED}):
                return  # cancelled while it waited, or another worker's
            row = self._records.get(job_id)
            job = self._jobs.get(job_id) or self._job(row)
            job._lease = lease
            run = job.run if job.run is not None else _task_of(row)
            self._running[job.lane] = job
            if run is None:
                job.set_state(INTERRUPTED, "lost: it was queued by a server that has since restarted, and only a "
                                           "training can be picked up again; start it again")
                self._running[job.lane] = None
                return
            job.set_state(RUNNING)
        try:
            self._run(job, run)
        finally:
            with self._lock:
                self._running[job.lane] = None

    @staticmethod
    def _run(job: Job, run: Callable[[Job], Any] | Task) -> None:
        try:
            job.result = run.func(job, **run.kwargs) if isinstance(run, Task) else run(job)
        except UserError as err:
            job.set_state(FAILED, str(err))
        except Exception as err:  # a bug or a broken file: the worker lives on for the next job
            log.error("job %s (%s) failed:\n%s", job.id, job.kind, traceback.format_exc())
            job.set_state(FAILED, f"{type(err).__name__}: {err}")
        else:
            job.set_state(STOPPED if job.stop else DONE)

    # --- rows --------------------------------------------------------------------------------------
    def _count(self, owner: str, lane: str | None) -> int:
        return len(self._records.active(owner=owner, lane=lane))

    def _job(self, row: dict) -> Job:
        """The live `Job` of a row: the one this process runs or submitted, brought up to date with its row
        when another process runs it, or one built from the row."""
        job = self._jobs.get(row["id"])
        if job is None:
            job = Job(id=row["id"], owner=row["owner"], project=row["project"], kind=row["kind"], lane=row["lane"],
                      run=None, info=json.loads(row["info"] or "{}"), created=row["created"])
            job._saved = self._save
            self._jobs[job.id] = job
        if job is not self._running.get(job.lane):  # not run here: the row is the truth
            with job._lock:
                if (row["state"], row["message"] or "", row["version"]) != (job.state, job.message, job.version):
                    job.state, job.message = row["state"], row["message"] or ""
                    job.started, job.finished = row["started"], row["finished"]
                    job.progress = _progress_from(row["progress"]) or job.progress
                    if row["result"] is not None and job.result is None:
                        job.result = _decode(json.loads(row["result"]))
                    job.version = max(job.version + 1, row["version"] or 0)
        return job

    def _save(self, job: Job, whole: bool) -> None:
        """Write a job's state (and, `whole`, its result) to its row; never raises into the job. A job this
        worker runs writes only while it holds the row's lease: one whose lease was taken (its worker was
        silent too long and the job was resumed elsewhere) is stopped instead."""
        try:
            progress = None if job.progress is None else json.dumps(_progress_json(job.progress))
            fields = {"message": job.message, "progress": progress, "version": job.version}
            if whole:
                fields.update(state=job.state, started=job.started, finished=job.finished,
                              result=_encode_result(job.result))
            if not self._records.update(job.id, fields, when=None if job._lease is None else {"lease": job._lease}):
                if job._lease is not None and not job.stop:
                    log.warning("job %s: its lease was taken (this worker was silent too long): stopping it", job.id)
                    job.stop.set()
        except Exception as err:  # a store that is briefly away (a restarting Redis, a locked SQLite file)
            log.warning("could not save job %s: %s", job.id, err)


class _Heartbeat:
    """A worker's beat: every HEARTBEAT_S it renews the lease of each job it runs (a lost lease stops the
    job), passes on a Stop asked through the row (from another process), and every REAP_S looks for jobs
    whose worker went silent."""

    def __init__(self, manager: JobManager) -> None:
        self.manager = manager
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="job-heartbeat", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        m, reaped = self.manager, time.monotonic()
        while not self._done.wait(HEARTBEAT_S):
            with m._lock:
                running = [j for j in m._running.values() if j is not None and j._lease is not None]
            for job in running:
                try:
                    if not m._records.update(job.id, {"heartbeat": NOW}, when={"lease": job._lease, "state": RUNNING}):
                        if job.active and not job.stop:  # not finished here meanwhile: another worker took it
                            log.warning("job %s: its lease was taken (this worker was silent too long): stopping it",
                                        job.id)
                            job.stop.set()
                        continue
                    row = m._records.get(job.id)
                except Exception as err:  # the store is briefly away: beat again next time
                    log.warning("heartbeat of job %s: %s", job.id, err)
                    continue
                if row is not None and row["stop"]:
                    job.stop.set()
            if time.monotonic() - reaped >= REAP_S:
                reaped = time.monotonic()
                try:
                    m.reap()
                except Exception as err:
                    log.warning("looking for silent workers: %s", err)

    def close(self) -> None:
        self._done.set()
        self._thread.join(timeout=10)


def _last_save(row: dict) -> str:
    """", last save: iteration N" for a training's model folder, else ""."""
    try:
        args = _decode(json.loads(row["args"] or "{}"))
        config = args.get("config")
        folder = getattr(config, "model_dir", None)
        if folder is None:
            return ""
        from engine.models import folder as model_folder

        summary = model_folder.summary(folder)
    except Exception:  # the note is a courtesy: never let it stop the recovery
        return ""
    return f"; last save: iteration {summary['iteration']}" if summary else "; nothing was saved yet"


# --- the JSON codec of task arguments and results -------------------------------------------------------
_OWN_MODULES = ("engine.", "webapp.")  # only this project's classes and functions are rebuilt from a row


def _encode(value) -> str:
    return json.dumps(_to_json(value))


def _to_json(value):
    if isinstance(value, Path):
        return {"$path": str(value)}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {"$dataclass": f"{type(value).__module__}:{type(value).__qualname__}",
                "fields": {f.name: _to_json(getattr(value, f.name)) for f in dataclasses.fields(value) if f.init}}
    if isinstance(value, tuple):
        return {"$tuple": [_to_json(v) for v in value]}
    if isinstance(value, list):
        return [_to_json(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _to_json(v) for k, v in value.items()}
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"cannot keep a {type(value).__name__} in a job row")


def _decode(value):
    if isinstance(value, list):
        return [_decode(v) for v in value]
    if not isinstance(value, dict):
        return value
    if "$path" in value:
        return Path(value["$path"])
    if "$tuple" in value:
        return tuple(_decode(v) for v in value["$tuple"])
    if "$dataclass" in value:
        cls = _resolve(value["$dataclass"])
        return cls(**{k: _decode(v) for k, v in value["fields"].items()})
    return {k: _decode(v) for k, v in value.items()}


# job bodies that moved from the tabs to webapp.tasks: rows written before the move still find theirs, so a
# deploy strands no queued or interrupted job (an evaluation's arguments changed: its old rows are lost)
MOVED = {"webapp.tabs.faces:_extract": "webapp.tasks:extract", "webapp.tabs.train:_train": "webapp.tasks:train",
         "webapp.tabs.swap:_render": "webapp.tasks:render", "webapp.tabs.export:_export": "webapp.tasks:export"}


def _resolve(name: str):
    module, _, qualname = MOVED.get(name, name).partition(":")
    if not module.startswith(_OWN_MODULES):
        raise ValueError(f"{name}: not one of this project's names")
    obj = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def _task_of(row: dict) -> Task | None:
    if not row["task"]:
        return None
    try:
        func = _resolve(row["task"])
    except (ImportError, AttributeError):  # written by a version whose job bodies this one does not have
        return None
    return Task(func, _decode(json.loads(row["args"] or "{}")))


def _encode_result(result) -> str | None:
    if result is None:
        return None
    try:
        return _encode(result)
    except (TypeError, ValueError):
        return None  # this process keeps it; a restart shows the job without it


def _progress_json(event: Progress) -> dict:
    return {"job": event.job, "step": event.step, "total": event.total, "unit": event.unit, "rate": event.rate,
            "eta_s": event.eta_s, "time_left_s": event.time_left_s, "message": event.message, "done": event.done,
            "metrics": {k: float(v) for k, v in event.metrics.items() if isinstance(v, (int, float, np.number))}}


def _progress_from(text: str | None) -> Progress | None:
    if not text:
        return None
    try:
        return Progress(**json.loads(text))
    except (TypeError, ValueError):
        return None


def ping(job: Job, sent: float) -> float:
    """A job that does nothing: `python -m webapp.worker ping` queues it to see that a worker answers.
    -> seconds from queueing to running."""
    return time.time() - sent


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
