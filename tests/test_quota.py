"""Per-visitor limits an operator sets with flags, and the fair line between users (issue 15, item 2).

Each refusal is a UserError naming its flag (the page shows it as is). Jobs here are closures that
wait on a gate: the line's order, not the work, is under test.
"""

from __future__ import annotations

import threading
import time

import pytest

from engine.errors import UserError
from webapp.jobs import RUNNING, JobManager, Limits


def _blocking(gate: threading.Event):
    def run(job):
        while not gate.is_set() and not job.stop:
            time.sleep(0.01)
    return run


def _wait(predicate, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_quota_fair_line_puts_a_new_user_ahead_of_one_users_backlog():
    jobs, gate = JobManager(), threading.Event()
    try:
        first = jobs.submit("ann", "p0", "train", _blocking(gate), lane="train")
        _wait(lambda: first.state == RUNNING)
        backlog = [jobs.submit("ann", f"p{i}", "train", _blocking(gate), lane="train") for i in range(1, 4)]
        bob = jobs.submit("bob", "q", "train", _blocking(gate), lane="train")
        assert jobs.position(bob) == 2  # right behind the running job, not 5th
        assert [jobs.position(j) for j in backlog] == [3, 4, 5]
        cat = jobs.submit("cat", "r", "train", _blocking(gate), lane="train")
        assert jobs.position(cat) == 3  # every user's first job before anyone's second
    finally:
        gate.set()
        jobs.shutdown(timeout=10)


def test_quota_jobs_per_user_refused_with_the_flag_named():
    jobs, gate = JobManager(limits=Limits(jobs_per_user=2)), threading.Event()
    try:
        jobs.submit("ann", "a", "train", _blocking(gate), lane="train")
        jobs.submit("ann", "b", "render", _blocking(gate), lane="media")
        with pytest.raises(UserError, match=r"--max-jobs-per-user 2"):
            jobs.submit("ann", "c", "train", _blocking(gate), lane="train")
        jobs.submit("bob", "a", "train", _blocking(gate), lane="train")  # others are not held back
    finally:
        gate.set()
        jobs.shutdown(timeout=10)


def test_quota_disk_per_user_refuses_new_jobs_when_full(tmp_path):
    from webapp.projects import Workspace
    from webapp.state import Studio

    studio = Studio(Workspace(tmp_path / "ws"), JobManager(limits=Limits(quota_mb=1)))
    try:
        project = studio.workspace.create("ann", "p")
        other = studio.workspace.create("bob", "p")
        studio.submit(project, "render", lambda job: None)  # under the quota
        (project.outputs / "big.bin").write_bytes(b"\0" * 1_200_000)
        with pytest.raises(UserError, match=r"--quota-mb 1"):
            studio.submit(project, "evaluate", lambda job: None)
        studio.submit(other, "render", lambda job: None)  # bob's disk is his own
    finally:
        studio.jobs.shutdown(timeout=10)


def test_quota_training_caps_name_their_flags(tmp_path, faceset_a, faceset_b):
    import shutil

    from test_train_tab import page

    from webapp.projects import Workspace
    from webapp.state import Studio
    from webapp.tabs.train import _config

    studio = Studio(Workspace(tmp_path / "ws"), JobManager(limits=Limits(train_minutes=10, iterations=5000)))
    try:
        project = studio.workspace.create("ann", "p")
        for side, faces in (("A", faceset_a), ("B", faceset_b)):
            shutil.copytree(faces, project.faces(side), dirs_exist_ok=True)
        with pytest.raises(UserError, match=r"--max-iterations"):
            _config(studio, project, page(iterations=6000, minutes=5.0), False)
        with pytest.raises(UserError, match=r"--max-train-minutes"):
            _config(studio, project, page(iterations=1000), False)  # no budget: unbounded
        with pytest.raises(UserError, match=r"--max-train-minutes"):
            _config(studio, project, page(iterations=1000, minutes=30.0), False)
        config = _config(studio, project, page(iterations=1000, minutes=10.0), False)
        assert config.minutes == 10 and config.iterations == 1000
    finally:
        studio.jobs.shutdown(timeout=10)


def test_quota_media_flags_set_the_engines_caps(monkeypatch):
    import argparse

    import engine.media
    import engine.video_reader
    from webapp.flags import apply_media_limits

    for module, name in ((engine.video_reader, "MAX_VIDEO_FRAMES"), (engine.video_reader, "MAX_VIDEO_PIXELS"),
                         (engine.media, "MAX_IMAGE_PIXELS")):
        monkeypatch.setattr(module, name, getattr(module, name))
    from PIL import Image

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)
    apply_media_limits(argparse.Namespace(max_video_frames=300, max_video_pixels=2.0, max_image_pixels=12.0))
    assert engine.video_reader.MAX_VIDEO_FRAMES == 300
    assert engine.video_reader.MAX_VIDEO_PIXELS == 2_000_000
    assert engine.media.MAX_IMAGE_PIXELS == Image.MAX_IMAGE_PIXELS == 12_000_000
    with pytest.raises(UserError, match="12000000 pixels|12 MP limit"):
        engine.media.decode_image(_png(4000, 4000), "big.png")


def _png(width: int, height: int) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", (width, height)).save(buf, format="PNG")
    return buf.getvalue()
