"""Job rows in SQLite (one box) and in a real Redis server (several machines): the same tests on both.

The store's atomic conditional update is what keeps a job from running twice (one claim wins) and a
dead worker's training from being resumed twice; the managers here share one store the way a web
server and workers on several machines do (SQLite: one folder; Redis: one server), inside one process.
"""

from __future__ import annotations

import threading
import time

import pytest

from webapp.jobs import (
    CANCELLED,
    DONE,
    INTERRUPTED,
    QUEUED,
    RUNNING,
    STOPPED,
    JobManager,
    Task,
    ping,
)
from webapp.records import NOW, open_records


@pytest.fixture(params=["sqlite", "redis"])
def store(request, tmp_path):
    """(folder, queue URL) of one shared store: SQLite in a folder, or the test session's Redis server."""
    url = request.getfixturevalue("redis_url") if request.param == "redis" else None
    (tmp_path / ".studio").mkdir()
    return tmp_path / ".studio", url


@pytest.fixture
def managers(store):
    """Makes JobManagers over the store (a web server: worker=False; a worker: worker_name=...), shut after."""
    made = []

    def make(**kwargs) -> JobManager:
        manager = JobManager(store[0], queue_url=store[1], **kwargs)
        made.append(manager)
        return manager
    yield make
    for manager in reversed(made):
        manager.shutdown(timeout=10)


def wait_for(predicate, timeout: float = 30.0, what: str = "a condition"):
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)
    return value


def _until_stopped(job) -> bool:
    """A job body that runs until it is asked to stop (at most 30 s)."""
    deadline = time.monotonic() + 30
    while not job.stop and time.monotonic() < deadline:
        time.sleep(0.02)
    return bool(job.stop)


def _row(owner="ann", project="p", kind="train", lane="train", state=QUEUED, **extra) -> dict:
    return dict(owner=owner, project=project, kind=kind, lane=lane, state=state, info="{}", created=time.time(),
                priority=0, stop=0, version=0, **extra)


def test_rows_conditional_updates_and_stale_heartbeats(store):
    records = open_records(*store)
    try:
        first = records.insert(_row(project="p"))
        second = records.insert(_row(project="p", state=RUNNING, worker="gpu1", lease="a", heartbeat=time.time() - 60))
        other = records.insert(_row(owner="bob", project="q", kind="render", lane="media"))
        assert first < second < other
        assert records.get(first)["state"] == QUEUED and records.get(first)["worker"] is None
        assert records.get(second)["heartbeat"] == pytest.approx(time.time() - 60, abs=5)
        assert records.newest("ann", "p", "train")["id"] == second and records.newest("ann", "x", "train") is None
        assert [r["id"] for r in records.active(owner="ann")] == [first, second]
        assert [r["id"] for r in records.active(lane="media")] == [other]
        assert [r["id"] for r in records.listing(2)] == [other, second]
        # conditional: only while the row holds `when` (None: empty)
        assert not records.update(second, {"heartbeat": NOW}, when={"lease": "b"})
        assert [r["id"] for r in records.stale(("train",), 30)] == [second]
        assert records.update(second, {"heartbeat": NOW}, when={"lease": "a", "state": RUNNING})
        assert records.stale(("train",), 30) == [] and records.stale(("media",), 0) == []
        assert not records.update(first, {"state": RUNNING}, when={"worker": "gpu1"})
        assert records.update(first, {"state": DONE, "message": "ok"}, when={"worker": None})
        assert [r["id"] for r in records.active()] == [second, other]  # done: no longer active
        assert records.update(first, {"message": None}) and records.get(first)["message"] is None
        assert not records.update(999, {"state": DONE})
        with pytest.raises(ValueError, match="no field"):
            records.update(first, {"state; drop table jobs": 1})
    finally:
        records.close()


def test_of_many_racing_claims_exactly_one_wins(store):
    records = open_records(*store)
    try:
        job_id = records.insert(_row())
        wins, go = [], threading.Barrier(8)

        def claim(name: str) -> None:
            go.wait()
            if records.update(job_id, {"state": RUNNING, "worker": name, "lease": name}, when={"state": QUEUED}):
                wins.append(name)
        threads = [threading.Thread(target=claim, args=(f"w{i}",)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(wins) == 1 and records.get(job_id)["worker"] == wins[0]
    finally:
        records.close()


def test_a_web_server_queues_a_worker_runs_and_stop_reaches_it_across_managers(managers):
    web = managers(worker=False)  # app.py --worker external
    first = web.submit("ann", "p", "ping", Task(ping, {"sent": time.time()}))
    second = web.submit("ann", "q", "ping", Task(ping, {"sent": time.time()}))
    bob = web.submit("bob", "p", "ping", Task(ping, {"sent": time.time()}))
    assert [web.position(j) for j in (first, second, bob)] == [1, 3, 2]  # fair: bob's first before ann's second
    web.stop(second)
    assert web.get(second.id).state == CANCELLED and web.position(bob) == 2
    worker = managers(worker_name="gpu1")
    wait_for(lambda: web.get(bob.id).state == DONE, what="the worker")
    assert web.get(first.id).state == DONE and web.get(second.id).state == CANCELLED
    assert {r["id"]: r["worker"] for r in web.listing()} == {first.id: "gpu1", second.id: None, bob.id: "gpu1"}
    gate = threading.Event()  # a closure the worker runs until stopped (through the row, from the web side)
    running = worker.submit("cat", "p", "train", lambda job: _until_stopped(job) and gate.set(), lane="train")
    wait_for(lambda: web.get(running.id).state == RUNNING, what="the closure to run")
    web.stop(web.get(running.id))
    wait_for(lambda: web.get(running.id).state == STOPPED, what="the stop", timeout=15)
    assert gate.is_set()


def _claimed_by_a_dead_worker(web: JobManager, name: str) -> int:
    """A resumable job queued by the web server and taken by worker `name`, which then died at once."""
    job = web.submit("ann", "p", "train", Task(ping, {"sent": time.time()}, resume={"sent": time.time()}),
                     lane="train")
    assert web._records.update(job.id, {"state": RUNNING, "worker": name, "lease": "dead", "heartbeat": NOW},
                               when={"state": QUEUED})
    return job.id


def test_a_silent_workers_job_is_interrupted_and_resumed_by_a_live_worker_once(managers):
    web = managers(worker=False)
    dead = _claimed_by_a_dead_worker(web, "gpu1")
    t0 = time.monotonic()
    live = [managers(worker_name=f"gpu{i}", worker_timeout=3.0) for i in (2, 3)]  # both may look; one resumes
    wait_for(lambda: web.get(dead).state == INTERRUPTED, timeout=20, what="the reaper")
    assert time.monotonic() - t0 >= 3.0  # not before the heartbeat was worker_timeout old
    row = web._records.get(dead)
    assert "interrupted on gpu1: its worker went silent for more than 3 s" in row["message"]
    resumed = wait_for(lambda: [r for r in web.listing() if r["id"] != dead], what="the resumed job")
    assert len(resumed) == 1, resumed  # one resumption, not one per live worker
    wait_for(lambda: web.get(resumed[0]["id"]).state == DONE, what="the resumed job to run")
    assert web._records.get(resumed[0]["id"])["worker"] in ("gpu2", "gpu3")
    assert f"after job {dead} was interrupted on gpu1" in web.get(resumed[0]["id"]).message
    assert all(m.reap() == [] for m in live)  # nothing left to reap


def test_a_restarted_worker_resumes_its_own_job_at_once(managers):
    web = managers(worker=False)
    dead = _claimed_by_a_dead_worker(web, "gpu1")
    managers(worker_name="gpu1")  # the same name again: no need to wait for the heartbeat to age
    assert web.get(dead).state == INTERRUPTED
    assert "the server stopped while this ran" in web.get(dead).message
    wait_for(lambda: web.find("ann", "p", "train").state == DONE, what="the resumed job")


def test_a_worker_that_lost_its_lease_stops_the_job_and_leaves_the_row_alone(managers):
    worker = managers(worker_name="gpu1")
    job = worker.submit("ann", "p", "train", _until_stopped, lane="train")
    wait_for(lambda: job.state == RUNNING and job._lease, what="the job to run")
    # another worker found it silent and took it over (what reap() writes)
    assert worker._records.update(job.id, {"state": INTERRUPTED, "lease": None}, when={"lease": job._lease})
    wait_for(lambda: not job.active, timeout=15, what="the job to stop")
    assert job.state == STOPPED and worker._records.get(job.id)["state"] == INTERRUPTED


def test_a_job_taken_from_the_queue_by_a_worker_shutting_down_goes_back_in_line(managers):
    web = managers(worker=False)
    job = web.submit("ann", "p", "ping", Task(ping, {"sent": time.time()}))
    leaving = managers(worker=False)  # a worker whose lane thread took the item as it was shutting down
    assert leaving.queue._hueys["media"].dequeue() is not None
    leaving._closing = True
    leaving._execute(job.id)
    assert web.get(job.id).state == QUEUED
    managers(worker_name="gpu2")
    wait_for(lambda: web.get(job.id).state == DONE, what="another worker to run it")
