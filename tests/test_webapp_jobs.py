"""The web app's job registry and projects, without a browser: queueing, stopping, failures, the
training listener, per-user project folders, uploads and the model archive's safety checks."""

from __future__ import annotations

import html
import io
import re
import stat
import threading
import time
import zipfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from engine.errors import UserError
from engine.evaluate.report import read_report
from engine.models.folder import loss_history, summary
from engine.progress import Progress, Reporter
from webapp.jobs import CANCELLED, DONE, FAILED, QUEUED, RUNNING, STOPPED, JobConflict, JobManager, LossCurve
from webapp.projects import (
    Workspace,
    check_name,
    export_model,
    import_model,
    keep_uploads,
    split_uploads,
)


def wait_for(predicate, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


@pytest.fixture
def jobs():
    manager = JobManager()
    yield manager
    manager.shutdown(timeout=10)


def blocking_job(gate: threading.Event, steps: int = 3):
    """A job that reports `steps` events, then waits for `gate` or a stop request."""
    def run(job):
        report = Reporter("test", total=steps, listeners=[job.listen])
        for i in range(1, steps + 1):
            report(i, metrics={"loss_a": 1.0 / i, "loss_b": 2.0 / i})
        while not gate.is_set() and not job.stop:
            time.sleep(0.01)
        return "finished"
    return run


def test_job_runs_in_background_and_keeps_latest_progress(jobs):
    gate = threading.Event()
    job = jobs.submit("ann", "p", "train", blocking_job(gate), lane="train")
    wait_for(lambda: job.progress is not None and job.progress.step == 3)
    assert job.state == RUNNING
    assert job.loss_points() == [(1.0, 1.0, 2.0), (2.0, 0.5, 1.0), (3.0, 1 / 3, 2 / 3)]
    gate.set()
    wait_for(lambda: not job.active)
    assert job.state == DONE and job.result == "finished"


def test_one_training_at_a_time_later_ones_queue_with_their_place(jobs):
    gate = threading.Event()
    first = jobs.submit("ann", "p1", "train", blocking_job(gate), lane="train")
    wait_for(lambda: first.state == RUNNING)
    second = jobs.submit("bob", "p2", "train", blocking_job(gate), lane="train")
    third = jobs.submit("cat", "p3", "train", blocking_job(gate), lane="train")
    time.sleep(0.1)
    assert (second.state, third.state) == (QUEUED, QUEUED)
    assert (jobs.position(first), jobs.position(second), jobs.position(third)) == (0, 2, 3)
    # an extraction does not wait behind the trainings: it has its own lane
    media = jobs.submit("ann", "p1", "extract:A", lambda job: "ok", lane="media")
    wait_for(lambda: media.state == DONE)
    jobs.stop(second)  # a queued job leaves the line without running
    assert second.state == CANCELLED and jobs.position(third) == 2
    gate.set()
    wait_for(lambda: third.state == DONE)
    assert first.state == DONE and second.progress is None


def test_stop_ends_a_running_job_as_stopped(jobs):
    job = jobs.submit("ann", "p", "train", blocking_job(threading.Event()), lane="train")
    wait_for(lambda: job.state == RUNNING)
    jobs.stop(job)
    wait_for(lambda: not job.active)
    assert job.state == STOPPED


def test_same_job_twice_for_a_project_is_refused_until_it_ends(jobs):
    gate = threading.Event()
    job = jobs.submit("ann", "p", "train", blocking_job(gate), lane="train")
    with pytest.raises(JobConflict, match="training is already"):
        jobs.submit("ann", "p", "train", blocking_job(gate), lane="train")
    other_user = jobs.submit("bob", "p", "train", blocking_job(gate), lane="train")
    gate.set()
    wait_for(lambda: not job.active and not other_user.active)
    again = jobs.submit("ann", "p", "train", lambda j: 1, lane="train")
    wait_for(lambda: again.state == DONE)
    assert jobs.find("ann", "p", "train") is again


def test_failures_are_reported_and_the_worker_lives_on(jobs):
    def user_error(job):
        raise UserError("face set A is empty")

    def bug(job):
        raise ZeroDivisionError("boom")

    a = jobs.submit("ann", "p", "extract:A", user_error)
    b = jobs.submit("ann", "p", "extract:B", bug)
    c = jobs.submit("ann", "q", "extract:A", lambda job: 42)
    wait_for(lambda: c.state == DONE)
    assert (a.state, a.message) == (FAILED, "face set A is empty")
    assert b.state == FAILED and "ZeroDivisionError: boom" in b.message
    assert c.result == 42


def test_shutdown_stops_running_and_cancels_queued_jobs():
    jobs = JobManager()
    running = jobs.submit("ann", "p", "train", blocking_job(threading.Event()), lane="train")
    wait_for(lambda: running.state == RUNNING)
    queued = jobs.submit("bob", "p", "train", blocking_job(threading.Event()), lane="train")
    jobs.shutdown(timeout=10)
    assert running.state == STOPPED and queued.state == CANCELLED
    with pytest.raises(UserError, match="shutting down"):
        jobs.submit("ann", "p", "train", lambda j: 1, lane="train")


def test_listener_keeps_preview_and_skips_the_final_summary_in_the_curve(jobs):
    job = jobs.submit("ann", "p", "x", lambda j: None)
    grid = np.zeros((4, 6, 3), np.uint8)
    job.listen(Progress(job="train", step=5, metrics={"loss_a": 0.3, "loss_b": 0.4}, preview=grid))
    job.listen(Progress(job="train", step=5, metrics={"loss_a": 0.3, "loss_b": 0.4}, done=True,
                        message="stopped and saved"))
    assert job.preview is grid and job.preview_version == 1
    assert job.loss_points() == [(5.0, 0.3, 0.4)] and job.message == "stopped and saved"


def test_loss_curve_stays_bounded_and_keeps_its_span():
    curve = LossCurve(limit=100)
    for i in range(1, 1001):
        curve.add(i, float(i), 2.0)  # loss_a = step: each point's loss is the mean of its steps
    points = curve.points
    assert 50 <= len(points) <= 100
    assert points[0][0] <= 16 and points[-1][0] > 980
    assert all(abs(a - s) < 1e-9 and b == 2.0 for s, a, b in points)
    gaps = {round(y[0] - x[0]) for x, y in zip(points[:-2], points[1:-1], strict=True)}
    assert len(gaps) == 1  # evenly sampled (the open last bucket aside)


# ---------------------------------------------------------------- projects


@pytest.mark.parametrize("bad", ["", "../x", "a/b", ".hidden", "x" * 65, "a\\b", "ends.", "név"])
def test_unsafe_names_are_refused(bad):
    with pytest.raises(UserError):
        check_name(bad)


def test_each_owner_sees_only_their_projects(tmp_path):
    ws = Workspace(tmp_path)
    ann = ws.create("ann", "talk to carell")
    ws.create("bob", "other")
    assert ws.projects("ann") == ["talk to carell"] and ws.projects("bob") == ["other"]
    assert ws.projects(None) == []  # no sign-in: the "local" owner
    assert ann.path == tmp_path.resolve() / "ann" / "talk to carell"
    assert all((ann.path / sub).is_dir() for sub in ("faces/A", "faces/B", "model", "outputs"))
    with pytest.raises(UserError, match="exists already"):
        ws.create("ann", "talk to carell")
    with pytest.raises(UserError, match="no project"):
        ws.open("bob", "talk to carell")
    with pytest.raises(UserError):
        ws.open("../ann", "talk to carell")


def test_uploads_of_the_wrong_kind_are_refused_and_duplicates_kept_once(tmp_path):
    ws = Workspace(tmp_path / "ws")
    project = ws.create(None, "p")
    (tmp_path / "a.JPG").write_bytes(b"jpeg-ish")
    (tmp_path / "b.exe").write_bytes(b"MZ")
    (tmp_path / "c.png").write_bytes(b"")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "a.jpg").write_bytes(b"different")
    usable, refused = split_uploads([str(tmp_path / n) for n in ("a.JPG", "b.exe", "c.png")])
    assert usable == [tmp_path / "a.JPG"]
    assert refused[0].startswith("b.exe: not a photo, video or zip") and refused[1].startswith("c.png: empty")
    kept = keep_uploads(project, "A", [tmp_path / "a.JPG", tmp_path / "a.JPG", tmp_path / "other" / "a.jpg"])
    assert [p.name for p in kept] == ["a.jpg", "a.jpg", "a-1.jpg"]
    assert kept[2].read_bytes() == b"different"


def _tiny_model(folder: Path, iteration: int = 7) -> None:
    from engine.models import build_model, save_model
    from engine.models.folder import LossHistory, write_history

    write_history(folder, LossHistory(rows=[[iteration - 2, 0.5, 0.6], [iteration, 0.4, 0.45]]))
    save_model(folder, build_model("lite"), {"iteration": iteration})


def test_model_archive_round_trip(tmp_path):
    ws = Workspace(tmp_path / "ws")
    here, there = ws.create("ann", "here"), ws.create("bob", "there")
    with pytest.raises(UserError, match="no trained model"):
        export_model(here)
    _tiny_model(here.model_dir)
    archive = export_model(here)
    assert sorted(zipfile.ZipFile(archive).namelist()) == ["model/config.json", "model/loss.csv",
                                                           "model/model.safetensors"]
    message = import_model(there, archive)
    assert "iteration 7" in message
    assert summary(there.model_dir) == {"iteration": 7, "minutes": 0.0, "preset": "lite", "resolution": 64,
                                      "batch_size": None, "precision": None, "precision_reason": None}
    assert loss_history(there.model_dir) == [(5.0, 0.5, 0.6), (7.0, 0.4, 0.45)]
    import_model(there, archive)  # a second import keeps the replaced model aside
    assert summary(there.path / "model.previous")["iteration"] == 7


def _zip(path: Path, members: dict[str, bytes], link: str | None = None) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
        if link:
            info = zipfile.ZipInfo(link)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, "/etc/passwd")
    return path


@pytest.mark.parametrize("members,link,match", [
    ({"../../evil.txt": b"x"}, None, "outside the archive"),
    ({"/abs/evil.txt": b"x"}, None, "outside the archive"),
    ({"model/config.json": b"{}"}, "model/model.safetensors", "is a link"),
    ({"notes.txt": b"hello"}, None, "holds no model"),
    ({"model/config.json": b'{"kind": "faceswap-studio model", "model": {"preset": "lite"}}',
      "model/model.safetensors": b"not weights"}, None, "model.safetensors|damaged|does not match"),
])
def test_bad_model_archives_are_refused_and_nothing_escapes(tmp_path, members, link, match):
    ws = Workspace(tmp_path / "ws")
    project = ws.create("ann", "p")
    _tiny_model(project.model_dir, iteration=3)
    archive = _zip(tmp_path / "up.zip", members, link)
    with pytest.raises(UserError, match=match):
        import_model(project, archive)
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "ws" / "evil.txt").exists()
    assert summary(project.model_dir)["iteration"] == 3  # the project's model is untouched
    assert [p.name for p in project.path.iterdir() if p.name.startswith(".import")] == []


def test_an_import_is_refused_while_the_model_trains(tmp_path):
    from engine.models.lock import training_lock

    ws = Workspace(tmp_path / "ws")
    here, there = ws.create("ann", "here"), ws.create("ann", "there")
    _tiny_model(here.model_dir)
    _tiny_model(there.model_dir, iteration=3)
    archive = export_model(here)
    held, done = threading.Event(), threading.Event()

    def training():  # a training holds the folder's lock for its whole run
        with training_lock(there.model_dir):
            held.set()
            done.wait(30)
    worker = threading.Thread(target=training)
    worker.start()
    try:
        held.wait(10)
        with pytest.raises(UserError, match="being trained: stop the training"):
            import_model(there, archive)
        assert summary(there.model_dir)["iteration"] == 3
    finally:
        done.set()
        worker.join()
    assert "iteration 7" in import_model(there, archive)  # once it stopped


def test_quota_leaks_exports_stay_in_the_project_uploads_are_linked_and_published_links_age_out(tmp_path):
    """Disk the audit found leaking: model exports in temp folders, uploads stored twice, published copies
    kept for ever (so a removed face lived on)."""
    import os

    from webapp.projects import keep_uploads
    from webapp.state import PUBLISHED_KEEP_S, sweep_published

    project = Workspace(tmp_path / "ws").create("ann", "p")
    _tiny_model(project.model_dir)
    first = export_model(project)
    assert first.parent == project.outputs and export_model(project) == first  # one archive, replaced
    assert [p.name for p in project.outputs.iterdir() if p.name.startswith(".")] == []  # no temp left
    upload = tmp_path / "cache" / "photo.jpg"
    upload.parent.mkdir()
    upload.write_bytes(b"jpeg bytes")
    (kept,) = keep_uploads(project, "A", [upload])
    assert os.path.samefile(kept, upload)  # one file on disk while Gradio's cache holds it
    root = tmp_path / "published"
    old, new = root / "old", root / "new"
    for folder, age in ((old, PUBLISHED_KEEP_S + 10), (new, 10)):
        folder.mkdir(parents=True)
        (folder / "face.png").write_bytes(b"png")
        os.utime(folder, (time.time() - age, time.time() - age))
    assert sweep_published(root, now=time.time() + 120) == 1
    assert not old.exists() and new.exists()


def test_a_non_zip_upload_is_refused(tmp_path):
    project = Workspace(tmp_path).create("ann", "p")
    fake = tmp_path / "model.zip"
    fake.write_bytes(io.BytesIO(b"PK\x03\x04 broken").getvalue())
    with pytest.raises(UserError, match="not a readable zip"):
        import_model(project, fake)


# ---------------------------------------------------------------- training through a job


def _random_faceset(folder: Path, n: int, seed: int) -> None:
    from engine.faces.faceset import FaceSet

    rng = np.random.default_rng(seed)
    faceset = FaceSet(folder, size=96, create=True)
    for i in range(n):
        faceset.add({"file": f"f{i}.png", "source": "synthetic", "frame": i},
                    rng.integers(0, 255, (96, 96, 3), dtype=np.uint8))
    faceset.save()


def test_training_job_streams_progress_losses_and_previews(tmp_path, jobs):
    from engine.train import TrainConfig, train

    _random_faceset(tmp_path / "A", 6, 0)
    _random_faceset(tmp_path / "B", 6, 1)
    config = TrainConfig(faces_a=str(tmp_path / "A"), faces_b=str(tmp_path / "B"), model_dir=str(tmp_path / "m"),
                         preset="lite", device="cpu", iterations=6, batch_size=2, preview_every=3, save_every=6,
                         preview_rows=2)
    job = jobs.submit("ann", "p", "train", lambda j: train(config, [j.listen], j.stop).status, lane="train")
    wait_for(lambda: not job.active, timeout=120)
    assert job.state == DONE and job.result == "done", job.message
    assert [p[0] for p in job.loss_points()] == [1, 2, 3, 4, 5, 6]
    assert job.preview_version == 2 and job.preview.shape[1] == 6 * job.preview.shape[0] // 2
    assert job.progress.done and job.progress.step == 6
    assert summary(tmp_path / "m")["iteration"] == 6 and summary(tmp_path / "m")["batch_size"] == 2


# ---------------------------------------------------------------- the studio's shared state


def test_the_owner_comes_from_the_sign_in_never_from_the_page(tmp_path):
    import gradio as gr

    from webapp.state import Studio

    studio = Studio(Workspace(tmp_path), auth=True)
    studio.workspace.create("ann", "mine")
    ann, bob = SimpleNamespace(username="ann"), SimpleNamespace(username="bob")
    assert studio.project(ann, "mine").path == tmp_path.resolve() / "ann" / "mine"
    with pytest.raises(gr.Error, match="no project called 'mine'"):
        studio.project(bob, "mine")
    with pytest.raises(gr.Error, match="sign in"):
        studio.owner(SimpleNamespace(username=None))
    with pytest.raises(gr.Error, match="not allowed"):
        studio.project(ann, "../bob/mine")
    assert Studio(Workspace(tmp_path)).owner(None) == "local"


def test_files_outside_the_served_folders_are_published_through_a_private_link(tmp_path, monkeypatch):
    import tempfile

    from webapp.state import publish

    for sub in ("cwd", "tmp", "ws"):
        (tmp_path / sub).mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    face = tmp_path / "ws" / "face.png"
    face.write_bytes(b"png")
    published = Path(publish(face))
    assert published.is_relative_to(tmp_path / "tmp") and published.read_bytes() == b"png"
    inside = tmp_path / "cwd" / "x.png"
    inside.write_bytes(b"x")
    assert publish(inside) == str(inside)


def test_credentials_from_flags_and_file(tmp_path):
    from webapp.ui import read_credentials

    users = tmp_path / "users"
    users.write_text("# comment\n\nbob:pa:ss\n")
    assert read_credentials(["ann:secret"], users) == {"ann": "secret", "bob": "pa:ss"}
    with pytest.raises(UserError, match="USER:PASS"):
        read_credentials(["ann"], None)
    with pytest.raises(UserError, match="user name"):
        read_credentials(["../x:pw"], None)


# ---------------------------------------------------------------- the Evaluate tab's job


@pytest.fixture(scope="module")
def evaluated_project(tmp_path_factory, faceset_a, faceset_b, tiny_model, data_dir):
    """A project holding the shared face sets and the tiny model, and 12 frames of talk2 (A) at 320 px."""
    import shutil

    import cv2

    from engine.video_reader import probe_video, read_frames
    from engine.video_writer import TimedVideoWriter

    root = tmp_path_factory.mktemp("evaluate_tab")
    proj = Workspace(root / "ws").create("ann", "pair")
    for side, folder in (("A", faceset_a), ("B", faceset_b)):
        shutil.rmtree(proj.faces(side))
        shutil.copytree(folder, proj.faces(side))
    shutil.rmtree(proj.model_dir)
    shutil.copytree(tiny_model, proj.model_dir)
    clip = root / "talk2 clip.mp4"
    info = probe_video(data_dir / "video" / "talk2.mp4")
    writer = TimedVideoWriter(clip, 320, 320, time_base=info.times.time_base)  # the writer renders use
    for index, frame in read_frames(info):
        writer.write(cv2.resize(frame, (320, 320), interpolation=cv2.INTER_AREA), info.times.time_of(index))
        if index == 11:
            break
    writer.close(info.times.duration_of(11))
    return proj, clip


def evaluation(proj, source, frames):
    """The options the Evaluate tab makes for the project and video (10 reference faces: quick)."""
    from engine.evaluate.options import EvaluateOptions
    from webapp.tasks import report_folder

    return EvaluateOptions(model=proj.model_dir, video=source, out=report_folder(proj, source),
                           faces_a=proj.faces("A"), faces_b=proj.faces("B"), frames=frames, reference_faces=10,
                           device="cpu")


def test_evaluate_tab_job_writes_a_report_the_tab_lists_and_shows(evaluated_project, jobs, one_torch_thread):
    from webapp.tabs.evaluate import _pick_video, _report_choices, report_view
    from webapp.tasks import evaluate_task

    proj, clip = evaluated_project
    source = _pick_video(proj, str(clip), None)  # an upload is kept in the project and listed after
    assert source.parent == proj.uploads("evaluate") and source in proj.videos()
    assert _pick_video(proj, None, str(source.relative_to(proj.path))) == source
    job = jobs.submit(proj.owner, proj.name, "evaluate", evaluate_task(proj, evaluation(proj, source, 10)))
    messages = set()
    wait_for(lambda: messages.add(getattr(job.progress, "message", None)) or not job.active, timeout=600)
    assert job.state == DONE, job.message
    assert {"identity references", "measuring"} <= messages
    assert proj.reports() == [job.result] and job.result.parent == proj.evaluations
    assert _report_choices(proj)["value"] == job.result.name

    frame, video, archive = report_view(read_report(job.result))
    doc = html.unescape(re.search(r'srcdoc="([^"]*)"', frame).group(1))  # the report page, images inlined
    assert re.search(r"\(lite, 64 px,\s+30 iterations\) on <code>[^<]*talk2_clip.mp4</code>", doc)
    figures = dict(re.findall(r"<tr><td>([^<]+)</td><td class=num>([^<]+)</td>", doc))
    assert len(figures) == 17 and all(figures[k] != "n/a" for k in ("identity retrieval", "landmark NME", "flicker"))
    assert doc.count("src='data:image/png;base64,") == 6 + 5 + 2  # strip, plots, reconstructions
    assert "src='frames/" not in doc and "report.json" not in doc
    assert video is None  # a sample is swapped frame by frame: no video written
    names = zipfile.ZipFile(archive).namelist()
    assert f"{job.result.name}/report.html" in names and len([n for n in names if "/frames/pair_" in n]) == 6


def test_a_stopped_evaluation_leaves_no_report(evaluated_project, jobs, one_torch_thread):
    from webapp.tasks import evaluate_task

    proj, clip = evaluated_project
    before = proj.reports()
    job = jobs.submit(proj.owner, proj.name, "evaluate", evaluate_task(proj, evaluation(proj, clip, None)))
    wait_for(lambda: job.progress is not None or not job.active, timeout=300)
    jobs.stop(job)
    wait_for(lambda: not job.active, timeout=300)
    assert job.state == STOPPED and job.result is None, job.message
    assert proj.reports() == before
    left = proj.evaluations.iterdir() if proj.evaluations.is_dir() else []  # none yet when this test runs alone
    assert [p.name for p in left if p.is_dir()] == [p.name for p in before]


def test_evaluate_tab_refuses_what_it_cannot_measure(evaluated_project, tmp_path):
    from webapp.tabs.evaluate import _pick_video
    from webapp.tasks import evaluate_task

    proj, clip = evaluated_project
    with pytest.raises(UserError, match="upload a video of A"):
        _pick_video(proj, None, None)
    with pytest.raises(UserError, match="no video '../../etc/passwd'"):
        _pick_video(proj, None, "../../etc/passwd")
    (tmp_path / "notes.txt").write_text("not a video")
    with pytest.raises(UserError, match="notes.txt: not a photo, video or zip"):
        _pick_video(proj, str(tmp_path / "notes.txt"), None)
    empty = Workspace(tmp_path / "ws").create("ann", "empty")
    with pytest.raises(UserError, match="no trained model yet"):
        evaluate_task(empty, evaluation(empty, clip, None))
    import shutil

    shutil.copytree(proj.model_dir, empty.model_dir, dirs_exist_ok=True)
    with pytest.raises(UserError, match="face set A is empty: extract faces of A first"):
        evaluate_task(empty, evaluation(empty, clip, None))
