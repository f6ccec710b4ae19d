"""Kill-and-restart: a training started through the app survives `kill -9` of the server.

The real `app.py` on loopback: a training is started through the page's API (gradio_client, the
same endpoint the Start button calls), the server is killed with SIGKILL once the model has saved,
and a new server on the same workspace lists the job as interrupted with its last save and goes on
from that save on its own. A queued job keeps its place across the kill.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from engine.models import folder as model_folder
from webapp.projects import Workspace

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(workspace: Path, log: Path) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    out = open(log, "a")  # noqa: SIM115 - the server's, closed with it
    proc = subprocess.Popen([sys.executable, "app.py", "--port", str(port), "--workspace", str(workspace),
                             "--device", "cpu"], cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + 120
    while True:
        try:
            urllib.request.urlopen(url, timeout=5)
            return proc, url
        except OSError:
            assert proc.poll() is None and time.time() < deadline, log.read_text()
            time.sleep(1)


def _rows(workspace: Path) -> list[dict]:
    with sqlite3.connect(workspace / ".studio" / "jobs.db") as db:
        db.row_factory = sqlite3.Row
        return [dict(r) for r in db.execute("select id, project, kind, state, message from jobs order by id")]


def _wait(predicate, timeout: float, what: str, log: Path):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}\n{log.read_text()[-3000:]}")


def test_restart_after_sigkill_lists_the_interrupted_training_and_resumes_it(faceset_a, faceset_b, tmp_path):
    from gradio_client import Client

    workspace, log = tmp_path / "workspace", tmp_path / "app.log"
    proc, url = _start(workspace, log)
    try:
        for name in ("first", "second"):  # the second waits in the train lane behind the first
            client = Client(url, verbose=False)
            client.predict(name, api_name="/on_create")
            project = Workspace(workspace).open(None, name)  # face sets as the Face sets tab leaves them
            shutil.copytree(faceset_a, project.faces("A"), dirs_exist_ok=True)
            shutil.copytree(faceset_b, project.faces("B"), dirs_exist_ok=True)
            client.predict("lite", 4, 100_000, 0, 1000, 5, "auto", api_name="/train_start")
        model_dir = Workspace(workspace).open(None, "first").model_dir
        saved = _wait(lambda: (model_folder.summary(model_dir) or {}).get("iteration"), 240, "a save", log)
        rows = _rows(workspace)
        assert [(r["project"], r["state"]) for r in rows] == [("first", "running"), ("second", "queued")]
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    saved = model_folder.summary(model_dir)["iteration"]  # the last save before the kill

    proc, url = _start(workspace, log)
    try:
        rows = _wait(lambda: [r for r in _rows(workspace) if r["project"] == "first" and r["state"] == "running"],
                     60, "the resumed training", log)
        first, second, resumed = _rows(workspace)
        assert first["state"] == "interrupted" and f"last save: iteration {saved}" in first["message"]
        assert second["state"] == "queued"  # kept its place, behind the resumed training
        assert resumed["project"] == "first" and f"job {first['id']} was interrupted" in resumed["message"]
        _wait(lambda: model_folder.summary(model_dir)["iteration"] > saved, 240, "training past the save", log)
        client = Client(url, verbose=False)  # the page finds it again: its Stop reaches the resumed job
        client.predict("first", api_name="/on_load")  # the page opens the project it last had
        client.predict(api_name="/train_stop")
        _wait(lambda: _rows(workspace)[2]["state"] == "stopped", 120, "the stop", log)
        history = [row[0] for row in model_folder.read_history_rows(model_dir) or []]
        assert history and history[-1] > saved  # went on from the save, did not start again
    finally:
        proc.terminate()
        proc.wait(timeout=120)


def test_restart_a_separate_worker_runs_what_the_web_server_queued(tmp_path):
    """`app.py --worker external` + `python -m webapp.worker`: a job queued while no worker runs waits, a
    worker started later runs it, and `ping` says whether a worker answers."""
    from webapp.jobs import DONE, QUEUED, JobManager, Task, ping

    workspace = Workspace(tmp_path / "ws")
    web = JobManager(workspace.root / ".studio", worker=False)  # what app.py --worker external holds
    try:
        queued = web.submit("ann", "p", "ping", Task(ping, {"sent": time.time()}))
        time.sleep(1.0)
        assert web.get(queued.id).state == QUEUED  # nobody runs it yet
        worker = subprocess.Popen([sys.executable, "-m", "webapp.worker", "--workspace", str(workspace.root),
                                   "--name", "box1"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  text=True)
        try:
            deadline = time.time() + 60
            while web.get(queued.id).state != DONE:
                assert time.time() < deadline and worker.poll() is None, "the worker did not run the job"
                time.sleep(0.2)
            answer = subprocess.run([sys.executable, "-m", "webapp.worker", "--workspace", str(workspace.root),
                                     "ping"], cwd=ROOT, capture_output=True, text=True, timeout=120)
            assert answer.returncode == 0 and "a worker answered" in answer.stdout, answer
            listing = subprocess.run([sys.executable, "-m", "webapp.worker", "--workspace", str(workspace.root),
                                      "list"], cwd=ROOT, capture_output=True, text=True, timeout=120)
            rows = {line.split()[0]: line.split()[1] for line in listing.stdout.splitlines() if line.strip()}
            assert rows[str(queued.id)] == "done", listing.stdout
        finally:
            worker.terminate()
            worker.wait(timeout=60)
    finally:
        web.shutdown(timeout=5)
