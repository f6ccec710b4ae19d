"""The lanes' queues and workers: huey, with its SQLite storage by default and Redis for several machines.

Why huey: it keeps a queue in one SQLite file with no server to run (so `make run` needs nothing
more), the same code talks to Redis when a studio outgrows one machine, it has priorities (the fair
line of `webapp.jobs`) and a consumer that runs inside a process as threads or on its own
(`python -m webapp.worker`). Celery and Dramatiq need a broker server even on one box; RQ needs
Redis. Each lane is a huey instance (a queue name) with one worker thread: one training at a time on
the GPU, media work beside it. A queued item is only a job id: the job's row (`webapp.jobs`) says
what to run, so a queued job keeps its place across restarts while its row stays the one truth.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

from huey import PriorityRedisHuey, SqliteHuey
from huey.consumer import Consumer

from webapp.records import is_redis

log = logging.getLogger(__name__)


class _QuietConsumer(Consumer):
    """A huey consumer that leaves the host process's signals alone (the web server owns them)."""

    def _set_signal_handlers(self) -> None:
        pass


class JobQueue:
    """One huey queue per lane, each running `execute(job_id)` for its items, one at a time."""

    def __init__(self, folder: str | os.PathLike, lanes: tuple[str, ...], execute: Callable[[int], None],
                 url: str | None = None) -> None:
        self.lanes = lanes
        self._hueys = {}
        self._tasks = {}
        self._consumers: list[Consumer] = []
        for lane in lanes:
            if is_redis(url):  # a sorted set per lane (Redis >= 5): plain RedisHuey refuses priorities
                huey = PriorityRedisHuey(name=f"studio-{lane}", url=url, results=False, utc=True)
            else:
                huey = SqliteHuey(name=f"studio-{lane}", filename=str(Path(folder) / "queue.db"), results=False,
                                  utc=True, timeout=30)
            self._tasks[lane] = huey.task(name="run_job")(execute)
            self._hueys[lane] = huey

    def enqueue(self, lane: str, job_id: int, priority: int) -> None:
        self._hueys[lane].enqueue(self._tasks[lane].s(job_id, priority=priority))

    def start(self) -> None:
        """Run each lane's worker as a thread of this process."""
        for huey in self._hueys.values():
            consumer = _QuietConsumer(huey, workers=1, worker_type="thread", periodic=False, initial_delay=0.05,
                                      max_delay=0.5, check_worker_health=False)
            consumer.start()
            self._consumers.append(consumer)

    def stop(self, timeout: float = 60.0) -> None:
        for consumer in self._consumers:
            consumer.stop_flag.set()
        for consumer in self._consumers:
            for _, worker in consumer.worker_threads:
                worker.join(timeout)
            consumer.scheduler.join(5)
        self._consumers.clear()
        for huey in self._hueys.values():
            try:
                huey.storage.close()
            except Exception:  # closing a storage that never opened a connection
                pass
