"""A model folder under crashes and competition: fsync before and after every rename, orphaned temporary
files swept, one training per folder (the lock), a rewind that cannot load, an optimizer file that
must not be unpickled. tests/test_sigkill_training.py kills real trainings for the figures."""

from __future__ import annotations

import json
import os
import pickle
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from test_train import tiny

from engine import atomic
from engine.cli import main as cli_main
from engine.errors import UserError
from engine.models import build_model, load_model, save_model
from engine.models.folder import LOCK, OPTIMIZER, portable_files
from engine.models.lock import FolderBusyError, training_lock
from engine.train import ColorConfig, train, train_color
from engine.train.checkpoint import load, weights_finite
from engine.train.trainer import Session

REPO = Path(__file__).resolve().parents[1]


def test_every_atomic_write_fsyncs_its_file_before_the_rename_and_the_folder_after(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync

    def record(fd):
        info = os.fstat(fd)
        synced.append(("folder" if stat.S_ISDIR(info.st_mode) else "file", info.st_ino))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", record)

    def writer(tmp: Path) -> None:  # a library that opens, writes and closes the file itself
        tmp.write_bytes(b"weights")

    target = tmp_path / "new" / "deeper" / "model.safetensors"
    atomic.write_with(target, writer)
    assert target.read_bytes() == b"weights"
    kinds = [kind for kind, _ in synced]
    assert synced[0] == ("file", target.stat().st_ino)  # the data before the name points at it
    assert ("folder", target.parent.stat().st_ino) in synced  # the rename
    # the two folders the write created are entries of their parents, which are synced too
    assert ("folder", tmp_path.stat().st_ino) in synced and ("folder", (tmp_path / "new").stat().st_ino) in synced
    assert kinds.index("folder") > 0

    synced.clear()
    atomic.write_json(tmp_path / "config.json", {"a": 1})
    assert synced == [("file", (tmp_path / "config.json").stat().st_ino), ("folder", tmp_path.stat().st_ino)]


def test_a_failing_writer_leaves_the_old_file_and_no_temporary_one(tmp_path):
    target = tmp_path / "optimizer.pt"
    target.write_bytes(b"old")

    def failing(tmp: Path) -> None:
        tmp.write_bytes(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError):
        atomic.write_with(target, failing)
    assert target.read_bytes() == b"old" and atomic.temp_files(tmp_path) == []


def test_temp_files_match_the_names_atomic_writes_make_and_nothing_else(tmp_path):
    kept = [".lock", ".hidden", "optimizer.pt", ".optimizer.pt.refused", ".notes.txt.abc.txt", ".x.abcdefgh.png"]
    for name in kept:
        (tmp_path / name).write_bytes(b"x")
    made = []
    for name in ("optimizer.pt", "model.safetensors", "config.json", "loss.csv", "snapshots/00000005/model.safetensors",
                 "previews/latest.png", "README"):
        with atomic.atomic_path(tmp_path / name) as tmp:
            made.append(tmp)
            tmp.write_bytes(b"x")
            assert atomic.temp_files(tmp_path) == sorted(made)
            hard = tmp.with_name(tmp.name + "-kept")  # no temp name: not matched
            os.link(tmp, hard)
        os.rename(hard, tmp)  # as if the rename never happened: the orphan a kill leaves
    assert atomic.temp_files(tmp_path) == sorted(made)
    assert atomic.remove_temp_files(tmp_path) == (len(made), len(made))
    assert atomic.temp_files(tmp_path) == [] and all((tmp_path / name).exists() for name in kept)


def hold_in_another_process(folder: Path) -> subprocess.Popen:
    """A process that holds `folder`'s training lock until it is killed."""
    code = ("import sys, time\nfrom engine.models.lock import training_lock\n"
            "with training_lock(sys.argv[1]):\n    print('held', flush=True)\n    time.sleep(600)\n")
    holder = subprocess.Popen([sys.executable, "-c", code, str(folder)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_a_folder_held_by_another_process_is_refused_by_train_cli_and_colour_net(faceset_a, faceset_b, tmp_path,
                                                                                   capsys):
    folder = tmp_path / "m"
    train(tiny(faceset_a, faceset_b, folder, iterations=2, save_every=2))
    holder = hold_in_another_process(folder)
    try:
        with pytest.raises(FolderBusyError) as caught:
            train(tiny(faceset_a, faceset_b, folder, iterations=4, resume=True))
        assert str(caught.value) == f"{folder} is being trained by another process (pid {holder.pid}); stop it first"
        with pytest.raises(FolderBusyError, match=f"pid {holder.pid}"):
            train_color(ColorConfig(model_dir=str(folder), device="cpu", iterations=1, batch_size=2))
        assert cli_main(["train", "--model", str(folder), "--resume", "--device", "cpu", "--iterations", "4"]) == 2
        assert f"is being trained by another process (pid {holder.pid}); stop it first" in capsys.readouterr().err
    finally:
        holder.kill()
        holder.wait()
    _, meta = load_model(folder)
    assert meta["iteration"] == 2  # nothing was written while it was held
    # the kernel let go with the process (a stale .lock file stays): the next training takes it over
    assert (folder / LOCK).is_file()
    assert train(tiny(faceset_a, faceset_b, folder, iterations=3, resume=True)).iteration == 3
    assert not (folder / LOCK).exists()  # a run that ends removes its lock file


def test_two_trainings_of_one_folder_one_of_them_a_real_cli_process(faceset_a, faceset_b, tmp_path, capsys):
    folder = tmp_path / "m"
    args = [sys.executable, "-m", "engine", "train", "--faces-a", str(faceset_a), "--faces-b", str(faceset_b),
            "--model", str(folder), "--preset", "lite", "--device", "cpu", "--batch-size", "2",
            "--iterations", "100000", "--save-every", "2", "--preview-every", "0"]
    first = subprocess.Popen(args, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not (folder / "config.json").is_file():
            assert first.poll() is None and time.monotonic() < deadline
            time.sleep(0.1)
        assert cli_main(["train", "--model", str(folder), "--resume", "--device", "cpu", "--iterations", "5"]) == 2
        assert f"{folder} is being trained by another process (pid {first.pid}); stop it first" in capsys.readouterr().err
    finally:
        first.kill()
        first.wait()


def test_the_lock_is_reentrant_for_its_thread_refused_to_others_and_leaves_nothing_behind(tmp_path):
    folder = tmp_path / "new" / "m"
    refused = []

    def other_thread():
        try:
            with training_lock(folder):
                pass
        except FolderBusyError as err:
            refused.append(str(err))

    with training_lock(folder) as outer:
        assert outer and (folder / LOCK).read_text() == f"{os.getpid()}\n"
        with training_lock(folder) as inner:  # the colour phase inside its swap model's run
            assert not inner
        assert (folder / LOCK).is_file()  # still held by the outer block
        thread = threading.Thread(target=other_thread)
        thread.start()
        thread.join()
        assert refused == [f"{folder} is being trained by another training of this process "
                           f"(pid {os.getpid()}); stop it first"]
        (folder / "config.json").write_text("{}")
        assert [name for _, name in portable_files(folder)] == ["config.json"]  # .lock never travels
        (folder / "config.json").unlink()
    assert not folder.exists()  # it made the folder and nothing was saved there: gone again
    (folder).mkdir(parents=True)
    with training_lock(folder):
        pass
    assert folder.is_dir() and list(folder.iterdir()) == []  # a folder it did not make stays


def test_temporary_files_of_interrupted_saves_are_swept_when_training_opens_the_folder(faceset_a, faceset_b,
                                                                                      tmp_path, caplog):
    folder = tmp_path / "m"
    train(tiny(faceset_a, faceset_b, folder, iterations=2, save_every=2, snapshot_every=2))
    orphans = [folder / ".optimizer.pt.k2j4x9_a.pt", folder / ".model.safetensors.0abcdefg.safetensors",
               folder / ".config.json.zz11yy22.json", folder / "backup" / ".optimizer.pt.q1w2e3r4.pt",
               folder / "snapshots" / "00000002" / ".model.safetensors.abcd1234.safetensors",
               folder / "previews" / ".latest.png.x_y_z_12.png"]
    others = [folder / ".hidden", folder / "notes.txt", folder / "snapshots" / "00000002" / ".keep.abc"]
    for path in orphans + others:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"\0" * 100_000)
    assert atomic.temp_files(folder) == sorted(orphans)

    with caplog.at_level("INFO", logger="engine.train.loop"):
        train(tiny(faceset_a, faceset_b, folder, iterations=3, resume=True))
    assert not any(path.exists() for path in orphans) and all(path.exists() for path in others)
    assert f"{folder}: removed 6 temporary file(s), 0.6 MB, of saves that were interrupted" in caplog.text
    assert load_model(folder)[1]["iteration"] == 3


def test_a_held_folder_is_not_swept_by_the_training_it_refuses(faceset_a, faceset_b, tmp_path):
    folder = tmp_path / "m"
    train(tiny(faceset_a, faceset_b, folder, iterations=2, save_every=2))
    live = folder / ".optimizer.pt.abcd1234.pt"  # as the holder's save in progress would have it
    live.write_bytes(b"x")
    holder = hold_in_another_process(folder)
    try:
        with pytest.raises(FolderBusyError):
            train(tiny(faceset_a, faceset_b, folder, iterations=4, resume=True))
        assert live.exists()
    finally:
        holder.kill()
        holder.wait()


class CodeOnLoad:
    """Pickles to a call of os.mkdir(marker): what an optimizer.pt made to run code would hold."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (str(self.marker),)


def test_an_optimizer_file_with_a_code_payload_is_set_aside_and_training_resumes(faceset_a, faceset_b, tmp_path,
                                                                               caplog):
    folder = tmp_path / "m"
    train(tiny(faceset_a, faceset_b, folder, iterations=2, save_every=2))
    marker = tmp_path / "payload-ran"
    torch.save({"iteration": 2, "optimizer": {"state": {0: CodeOnLoad(marker)}, "param_groups": []}},
               folder / OPTIMIZER)
    with pytest.raises(pickle.UnpicklingError):  # what every resume used to fail on
        torch.load(folder / OPTIMIZER, weights_only=True)

    with caplog.at_level("WARNING", logger="engine.train.checkpoint"):
        result = train(tiny(faceset_a, faceset_b, folder, iterations=4, resume=True))
    assert not marker.exists()
    assert result.status == "done" and result.iteration == 4
    assert (folder / f"{OPTIMIZER}.refused").is_file()
    assert "it cannot be read safely" in caplog.text and "set aside as optimizer.pt.refused" in caplog.text
    _, _, optimizer_state = load(folder, torch.device("cpu"))
    assert {int(s["step"]) for s in optimizer_state["state"].values()} == {2}  # a fresh Adam, 2 steps old
    assert f"{OPTIMIZER}.refused" not in [name for _, name in portable_files(folder)]

    caplog.clear()
    with caplog.at_level("WARNING", logger="engine.train.checkpoint"):
        assert train(tiny(faceset_a, faceset_b, folder, iterations=5, resume=True)).iteration == 5
    assert "set aside" not in caplog.text  # the next resume finds the new file and uses it
    assert not marker.exists()


def test_an_optimizer_file_of_another_model_is_set_aside_not_loaded(faceset_a, faceset_b, tmp_path, caplog):
    folder = tmp_path / "m"
    train(tiny(faceset_a, faceset_b, folder, iterations=2, save_every=2))
    saved = torch.load(folder / OPTIMIZER, weights_only=True)
    first = next(iter(saved["optimizer"]["state"].values()))
    first["exp_avg"] = torch.zeros(3, 3)  # another architecture's moments
    torch.save(saved, folder / OPTIMIZER)

    with caplog.at_level("WARNING", logger="engine.train.checkpoint"):
        assert train(tiny(faceset_a, faceset_b, folder, iterations=3, resume=True)).iteration == 3
    assert "it does not fit the model (exp_avg of parameter" in caplog.text
    assert (folder / f"{OPTIMIZER}.refused").is_file()


def poison_at(monkeypatch, iteration: int, *, nan_loss: bool, before=None) -> None:
    """Session.step breaks the weights at `iteration` (after `before(session)`), with a NaN loss or
    with the finite loss computed before the weights broke."""
    real_step = Session.step
    calls = {"n": 0}

    def step(self):
        losses = real_step(self)
        calls["n"] += 1
        if calls["n"] == iteration:
            if before is not None:
                before(self)
            with torch.no_grad():
                next(self.model.parameters()).fill_(float("nan"))
            return losses * float("nan") if nan_loss else losses
        return losses

    monkeypatch.setattr(Session, "step", step)


def test_a_rewind_to_a_save_that_no_longer_loads_is_a_user_error_naming_the_folder(faceset_a, faceset_b,
                                                                                  tmp_path, monkeypatch):
    folder = tmp_path / "m"

    def damage(session):  # the save at 5 is damaged on disk before the loss blows up at 7
        (folder / "model.safetensors").write_bytes(b"not safetensors")

    poison_at(monkeypatch, 7, nan_loss=True, before=damage)
    with pytest.raises(UserError) as caught:
        train(tiny(faceset_a, faceset_b, folder, iterations=12))
    message = str(caught.value)
    assert message.startswith(f"training went NaN/Inf at iteration 7 and the last save in {folder} cannot be "
                              "loaded to rewind to (")
    assert "model.safetensors is not a readable safetensors file" in message
    assert message.endswith("restore the folder from its backup/ or a snapshot, or retrain")
    assert not (folder / LOCK).exists()  # the lock went with the failed run


def test_a_rewind_to_a_save_with_nan_weights_is_a_user_error(faceset_a, faceset_b, tmp_path, monkeypatch):
    folder = tmp_path / "m"

    def replace_with_broken(session):  # another tool wrote NaN weights over the save at 5
        broken = build_model("lite")
        with torch.no_grad():
            next(broken.parameters()).fill_(float("nan"))
        save_model(folder, broken, json.loads((folder / "config.json").read_text())["meta"])

    poison_at(monkeypatch, 7, nan_loss=True, before=replace_with_broken)
    with pytest.raises(UserError, match=f"the last save in {folder} holds NaN/Inf weights itself"):
        train(tiny(faceset_a, faceset_b, folder, iterations=12))


def test_weights_gone_nan_under_a_finite_loss_are_rewound_not_a_crash_on_save(faceset_a, faceset_b, tmp_path,
                                                                            monkeypatch):
    folder = tmp_path / "m"
    poison_at(monkeypatch, 10, nan_loss=False)  # iteration 10 is a save: its loss was still finite
    events = []
    result = train(tiny(faceset_a, faceset_b, folder, iterations=12), listeners=[events.append])
    assert result.status == "done" and result.iteration == 12
    assert any("loss or weights became NaN/Inf at 10: rewound to 5" in e.message for e in events)
    model, meta = load_model(folder)
    assert weights_finite(model) and meta["iteration"] == 12
