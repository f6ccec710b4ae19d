"""The model folder as training leaves it: exact round trips, resumes, snapshots, backups, and the
state after SIGKILL and SIGTERM."""

from __future__ import annotations

import copy
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from test_train import tiny

from engine.models import build_model, load_model
from engine.models.folder import OPTIMIZER, LossHistory, TrainingState
from engine.train import train
from engine.train.checkpoint import (
    BrokenModelError,
    copy_matching_weights,
    load,
    save,
    save_backup_if_better,
    save_snapshot,
)

REPO = Path(__file__).resolve().parents[1]


def make_pair(weights: dict | None = None, moments: dict | None = None):
    torch.manual_seed(0)
    model = build_model("lite")
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-5, betas=(0.5, 0.999))
    if weights is not None:
        model.load_state_dict(weights)
        optimizer.load_state_dict(copy.deepcopy(moments))  # Adam would step the shared tensors in place
    return model, optimizer


@pytest.fixture(scope="module")
def trained_states():
    """Weights and Adam state after real steps (so the moments are non-trivial), computed once."""
    model, optimizer = make_pair()
    x = torch.rand(2, 3, 64, 64)
    for side in ("a", "b"):
        optimizer.zero_grad()
        (model(x, side)[0] - x).abs().mean().backward()
        optimizer.step()
    return model.state_dict(), optimizer.state_dict()


@pytest.fixture
def trained_pair(trained_states):
    """A fresh copy of the trained model and its optimizer for each test to change at will."""
    return make_pair(*trained_states)


def test_save_load_round_trip_is_exact(trained_pair, tmp_path):
    model, optimizer = trained_pair
    state = TrainingState(iteration=2, history=LossHistory(rows=[[1, 0.5, 0.25], [2, 0.4, 0.2]], every=1),
                          best_loss=0.6, settings={"faces_a": "x", "lr": 5e-5})
    save(tmp_path, model, optimizer, state)

    loaded, loaded_state, optimizer_state = load(tmp_path, torch.device("cpu"))
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, loaded.state_dict()[name]), name
    assert loaded_state.to_meta() == state.to_meta() and loaded_state.history.rows == state.history.rows
    saved_moments = optimizer.state_dict()["state"]
    assert optimizer_state["state"].keys() == saved_moments.keys()
    for key, moments in saved_moments.items():
        for name, value in moments.items():
            assert torch.equal(optimizer_state["state"][key][name], value), (key, name)
    assert (tmp_path / "loss.csv").read_text() == "iteration,loss_a,loss_b\n1,0.5,0.25\n2,0.4,0.2\n"


def test_the_history_is_stored_once_and_older_folders_still_read(trained_pair, tmp_path):
    model, optimizer = trained_pair
    rows = [[5, 0.5, 0.25], [10, 0.4, 0.2]]
    save(tmp_path, model, optimizer, TrainingState(iteration=10, history=LossHistory(rows=[list(r) for r in rows])))
    assert "loss_history" not in json.loads((tmp_path / "config.json").read_text())["meta"]  # loss.csv holds it

    # a crash between loss.csv and the weights leaves the CSV ahead of them: rows past the weights are dropped
    (tmp_path / "loss.csv").write_text((tmp_path / "loss.csv").read_text() + "15,0.3,0.1\n")
    assert load(tmp_path, torch.device("cpu"))[1].history.rows == rows

    # folders written before loss.csv was the one copy keep the history in config.json's meta
    config = json.loads((tmp_path / "config.json").read_text())
    config["meta"]["loss_history"] = rows
    (tmp_path / "config.json").write_text(json.dumps(config))
    (tmp_path / "loss.csv").unlink()
    assert load(tmp_path, torch.device("cpu"))[1].history.rows == rows


def test_an_optimizer_file_out_of_step_with_the_weights_is_dropped(trained_pair, tmp_path):
    model, optimizer = trained_pair
    save(tmp_path, model, optimizer, TrainingState(iteration=2))
    torch.save({"iteration": 1, "optimizer": optimizer.state_dict()}, tmp_path / OPTIMIZER)
    assert load(tmp_path, torch.device("cpu"))[2] is None


def test_weights_with_nan_are_never_saved(trained_pair, tmp_path):
    model, optimizer = trained_pair
    save(tmp_path, model, optimizer, TrainingState(iteration=2))
    before = (tmp_path / "model.safetensors").read_bytes()
    with torch.no_grad():
        model.decoders["b"][0][0].weight[0, 0, 0, 0] = float("inf")
    with pytest.raises(BrokenModelError):
        save(tmp_path, model, optimizer, TrainingState(iteration=3))
    with pytest.raises(BrokenModelError):
        save_snapshot(tmp_path, model, TrainingState(iteration=3))
    assert (tmp_path / "model.safetensors").read_bytes() == before
    assert not (tmp_path / "snapshots").exists()


def test_loss_history_averages_buckets_and_smooths():
    history = LossHistory(every=4)
    for it in range(1, 9):
        history.add(it, float(it), 1.0)
    history.add(9, 100.0, 0.0)
    assert history.rows == [[4, 2.5, 1.0], [8, 6.5, 1.0]]  # iteration 9 waits in the open bucket
    history.close(9)
    assert history.rows[-1] == [9, 100.0, 0.0]
    assert history.smoothed(span=5) == pytest.approx(((6.5 + 1.0) + 100.0) / 2)


def test_backup_is_kept_only_when_the_smoothed_loss_improves(trained_pair, tmp_path):
    model, optimizer = trained_pair
    state = TrainingState(iteration=10, history=LossHistory(rows=[[10, 0.5, 0.5]]))
    assert save_backup_if_better(tmp_path, model, optimizer, state)
    assert state.best_loss == 1.0 and load(tmp_path / "backup", torch.device("cpu"))[1].iteration == 10
    state.iteration, state.history.rows = 20, state.history.rows + [[20, 0.9, 0.9]]
    assert not save_backup_if_better(tmp_path, model, optimizer, state)
    state.iteration, state.history.rows = 500, [[500, 0.1, 0.1]]
    assert save_backup_if_better(tmp_path, model, optimizer, state)
    assert load(tmp_path / "backup", torch.device("cpu"))[1].iteration == 500


def test_copy_matching_weights_transfers_encoder_and_decoders(trained_pair):
    source, _ = trained_pair
    target = build_model("lite", learn_mask=True)  # the mask adds a channel to the output convs only
    copied = copy_matching_weights(target, source)
    assert 0 < copied < len(target.state_dict())
    assert all(torch.equal(t, source.encoder.state_dict()[k]) for k, t in target.encoder.state_dict().items())


def test_resume_continues_iterations_history_and_optimizer(faceset_a, faceset_b, tmp_path):
    folder = tmp_path / "m"
    first = train(tiny(faceset_a, faceset_b, folder, iterations=10, snapshot_every=5))
    first_rows = load(folder, torch.device("cpu"))[1].history.rows
    assert first.iteration == 10 and [r[0] for r in first_rows] == [5, 10]
    assert sorted(p.name for p in (folder / "snapshots").iterdir()) == ["00000005", "00000010"]

    events = []
    second = train(tiny(faceset_a, faceset_b, folder, iterations=15, resume=True), listeners=[events.append])
    assert second.iteration == 15 and events[0].step == 11
    _, meta, optimizer_state = load(folder, torch.device("cpu"))
    assert meta.iteration == 15
    assert meta.history.rows[:2] == first_rows and [r[0] for r in meta.history.rows] == [5, 10, 15]
    adam_steps = {int(s["step"]) for s in optimizer_state["state"].values()}
    assert adam_steps == {15}  # the moments carried over: Adam has counted every iteration


def start_cli_training(faceset_a, faceset_b, folder: Path) -> subprocess.Popen:
    args = [sys.executable, "-m", "engine", "train", "--faces-a", str(faceset_a), "--faces-b", str(faceset_b),
            "--model", str(folder), "--preset", "lite", "--device", "cpu", "--batch-size", "4",
            "--iterations", "100000", "--save-every", "3", "--preview-every", "0"]
    return subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_saved_iteration(process: subprocess.Popen, folder: Path, at_least: int, timeout: float = 120) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()
        try:
            iteration = json.loads((folder / "config.json").read_text())["meta"]["iteration"]
        except (OSError, ValueError, KeyError):
            iteration = -1
        if iteration >= at_least:
            return iteration
        time.sleep(0.05)
    process.kill()
    raise AssertionError(f"no save at iteration {at_least} within {timeout} s")


def test_sigkill_mid_run_leaves_a_model_that_loads_and_resumes(faceset_a, faceset_b, tmp_path):
    folder = tmp_path / "m"
    process = start_cli_training(faceset_a, faceset_b, folder)
    wait_for_saved_iteration(process, folder, at_least=3)
    time.sleep(0.3)  # land somewhere in the following iterations, maybe inside the next save
    process.send_signal(signal.SIGKILL)
    process.communicate()

    model, meta = load_model(folder)
    assert meta["iteration"] >= 3 and meta["iteration"] % 3 == 0
    result = train(tiny(faceset_a, faceset_b, folder, iterations=meta["iteration"] + 2, resume=True))
    assert result.status == "done" and result.iteration == meta["iteration"] + 2


def test_sigterm_saves_and_exits_cleanly(faceset_a, faceset_b, tmp_path):
    folder = tmp_path / "m"
    process = start_cli_training(faceset_a, faceset_b, folder)
    wait_for_saved_iteration(process, folder, at_least=3)
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    stopped_at = int(out.split("stopped at iteration ")[1].split(",")[0])
    _, meta = load_model(folder)
    assert meta["iteration"] == stopped_at >= 3
    assert (folder / OPTIMIZER).is_file() and torch.load(folder / OPTIMIZER)["iteration"] == stopped_at
