"""Several machines, on one: a web server and two workers as separate processes over one workspace and a
real Redis server (the job rows and the queues in it), as the README's several-machine section says to run them.

`app.py --worker external --queue redis://...` serves alice and bob; `python -m webapp.worker --name gpu1`
and `--name gpu2` (lanes train and media each) run the jobs. Both users start a training through the
page's API; the two run at once, one on each worker. The worker running alice's training gets SIGKILL
after her first save; gpu2 notices its silence (`--worker-timeout`), marks the job interrupted and
resumes it from that save once bob's training is done. Both then render a clip. Every job ends done
(alice's first training: interrupted, then done as its resumption), none ran twice at once, and each
user's model and render lie in that user's own project.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import free_port

from engine.models import folder as model_folder
from webapp.projects import Workspace
from webapp.records import RedisRecords

ROOT = Path(__file__).resolve().parents[1]
USERS = {"alice": "alice-pw", "bob": "bob-pw"}
TARGET, SAVE_EVERY, TIMEOUT_S = 60, 10, 10
pytestmark = pytest.mark.slow


class Processes:
    """The test's server and workers, each with its own log; every one still alive is ended after."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.procs = folder, {}

    def start(self, name: str, *args: str) -> subprocess.Popen:
        log = open(self.folder / f"{name}.log", "w")  # noqa: SIM115 - the process's, closed with it
        self.procs[name] = subprocess.Popen([sys.executable, *args], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                            env={**os.environ, "OMP_NUM_THREADS": "1"})
        return self.procs[name]

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text()[-2500:]}" for p in sorted(self.folder.glob("*.log")))

    def close(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()


def _clip(data_dir: Path, out: Path, frames: int = 8) -> Path:
    """The first frames of talk2 at 320 px: a render of a few seconds on a CPU."""
    import cv2

    from engine.video_reader import probe_video, read_frames
    from engine.video_writer import TimedVideoWriter

    info = probe_video(data_dir / "video" / "talk2.mp4")
    writer = TimedVideoWriter(out, 320, 320, time_base=info.times.time_base)  # the writer renders use
    for index, frame in read_frames(info):
        writer.write(cv2.resize(frame, (320, 320), interpolation=cv2.INTER_AREA), info.times.time_of(index))
        if index == frames - 1:
            break
    writer.close(info.times.duration_of(frames - 1))
    return out


def test_two_workers_share_the_jobs_and_a_killed_workers_training_resumes_on_the_other(
        faceset_a, faceset_b, data_dir, redis_url, tmp_path):
    from gradio_client import Client, handle_file

    workspace = tmp_path / "workspace"
    procs = Processes(tmp_path)
    rows = RedisRecords(redis_url)
    seen_running: dict[str, set[int]] = {}  # project -> ids of its trainings seen running at one moment

    def wait(predicate, timeout: float, what: str):
        deadline = time.time() + timeout
        while time.time() < deadline:
            trainings = [r for r in rows.active() if r["kind"] == "train" and r["state"] == "running"]
            for owner in USERS:
                ids = {r["id"] for r in trainings if r["owner"] == owner}
                assert len(ids) <= 1, f"{owner}'s training runs twice at once: {ids}"
                seen_running.setdefault(owner, set()).update(ids)
            if value := predicate():
                return value
            assert all(p.poll() is None for n, p in procs.procs.items() if n != "gpu-killed"), procs.logs()
            time.sleep(0.5)
        raise AssertionError(f"timed out waiting for {what}\n{procs.logs()}")

    try:
        port = free_port()
        auth = [a for user, pw in USERS.items() for a in ("--auth", f"{user}:{pw}")]
        procs.start("web", "app.py", "--port", str(port), "--workspace", str(workspace), "--device", "cpu",
                    "--worker", "external", "--queue", redis_url, *auth)
        for name in ("gpu1", "gpu2"):
            procs.start(name, "-m", "webapp.worker", "--workspace", str(workspace), "--queue", redis_url,
                        "--name", name, "--lanes", "train,media", "--worker-timeout", str(TIMEOUT_S))
        url = f"http://127.0.0.1:{port}/"
        wait(lambda: _answers(url), 120, "the web server")
        clients = {}
        for user, password in USERS.items():
            client = clients[user] = Client(url, auth=(user, password), verbose=False)
            client.predict("pair", api_name="/on_create")  # both users call their project "pair"
            project = Workspace(workspace).open(user, "pair")  # face sets as the Face sets tab leaves them
            shutil.copytree(faceset_a, project.faces("A"), dirs_exist_ok=True)
            shutil.copytree(faceset_b, project.faces("B"), dirs_exist_ok=True)
            client.predict("lite", 4, TARGET, 0, 1000, SAVE_EVERY, "auto", api_name="/train_start")

        # both trainings run at once, one on each worker
        both = wait(lambda: (t := {r["owner"]: r for r in rows.active() if r["kind"] == "train"
                                   and r["state"] == "running"}) and len(t) == 2 and t, 180, "both trainings")
        assert {r["worker"] for r in both.values()} == {"gpu1", "gpu2"}
        victim = both["alice"]["worker"]
        alice_model = Workspace(workspace).open("alice", "pair").model_dir
        wait(lambda: (model_folder.summary(alice_model) or {}).get("iteration") and _step(rows, both["alice"]["id"])
             >= SAVE_EVERY, 240, "alice's first save, and her row past it")
        os.kill(procs.procs[victim].pid, signal.SIGKILL)  # mid-training: the worker dies with no goodbye
        procs.procs["gpu-killed"] = procs.procs.pop(victim)
        procs.procs["gpu-killed"].wait(timeout=30)
        saved = model_folder.summary(alice_model)["iteration"]  # what the folder holds at the kill
        reported = _step(rows, both["alice"]["id"])  # the last step her row had (at most 2 s old)
        assert saved < TARGET, "the training ended before the kill: raise TARGET"
        killed_at = time.time()

        # the other worker notices the silence, marks it interrupted and resumes it from the save
        first = wait(lambda: (r := rows.get(both["alice"]["id"]))["state"] == "interrupted" and r,
                     TIMEOUT_S + 60, "the interruption")
        noticed = time.time() - killed_at
        assert time.time() - killed_at >= TIMEOUT_S - 1
        assert f"interrupted on {victim}: its worker went silent" in first["message"]
        assert f"last save: iteration {saved}" in first["message"]

        # renders, both users, while the trainings go on (the media lane of the live worker)
        clip = _clip(data_dir, tmp_path / "clip.mp4")
        for client in clients.values():
            client.predict(handle_file(str(clip)), api_name="/render_video")

        every = wait(lambda: (jobs := rows.listing(20)) and len(jobs) == 5 and not any(
            r["state"] in ("queued", "running") for r in jobs) and jobs, 600, "every job to end")
        states = sorted((r["owner"], r["kind"], r["state"], r["worker"]) for r in every)
        live = "gpu2" if victim == "gpu1" else "gpu1"
        assert states == sorted([("alice", "train", "interrupted", victim), ("alice", "train", "done", live),
                                 ("bob", "train", "done", live),
                                 ("alice", "render", "done", live), ("bob", "render", "done", live)]), every
        assert seen_running["alice"] == {both["alice"]["id"], max(r["id"] for r in every
                                                                  if r["owner"] == "alice" and r["kind"] == "train")}
        # the resumed training went on from the save: at most one save interval lost, nothing done twice
        steps = [int(row[0]) for row in model_folder.read_history_rows(alice_model)]
        assert steps == sorted(set(steps)) and steps[-1] == TARGET, steps
        assert saved % SAVE_EVERY == 0 and reported - saved <= SAVE_EVERY, (reported, saved)
        for user in USERS:  # each user's files in that user's project, none in the other's
            project = Workspace(workspace).open(user, "pair")
            assert model_folder.summary(project.model_dir)["iteration"] == TARGET
            renders = list(project.outputs.glob("clip-*.mp4"))
            assert len(renders) == 1 and renders[0].stat().st_size > 0, list(project.outputs.iterdir())
        assert sorted(p.name for p in workspace.iterdir() if not p.name.startswith(".")) == sorted(USERS)
        print(f"\nseveral machines: {victim} killed with alice's model saved at iteration {saved} (last step "
              f"reported {reported}); interrupted {noticed:.1f} s after the kill (--worker-timeout {TIMEOUT_S}); "
              f"every job done {time.time() - killed_at:.1f} s after it; {len(every)} jobs")
    finally:
        procs.close()
        rows.close()


def _step(rows: RedisRecords, job_id: int) -> int:
    return json.loads(rows.get(job_id)["progress"] or "{}").get("step", 0)


def _answers(url: str) -> bool:
    try:
        urllib.request.urlopen(url, timeout=5)
        return True
    except OSError:
        return False
