"""The training loop on real faces: it learns, reports, previews, stops on request and survives NaN."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from engine.cli import main as cli_main
from engine.errors import UserError
from engine.faces.crops import center_crop_batch
from engine.faces.faceset import FaceSet
from engine.models import MODEL_COVERAGE, load_model
from engine.models.folder import loss_history, training_settings
from engine.progress import Reporter, StopFlag
from engine.train import TrainConfig, distributed, train
from engine.train.checkpoint import weights_finite
from engine.train.loop import run_loop
from engine.train.trainer import Session


def tiny(faceset_a, faceset_b, model_dir, **overrides) -> TrainConfig:
    """A lite CPU run small enough for a shared 2-core test machine."""
    settings = dict(faces_a=str(faceset_a), faces_b=str(faceset_b), model_dir=str(model_dir), preset="lite",
                    device="cpu", batch_size=4, iterations=10, save_every=5, preview_every=0, preview_rows=3)
    settings.update(overrides)
    return TrainConfig(**settings)


def test_loss_falls_on_real_faces_and_events_carry_losses_rate_and_previews(faceset_a, faceset_b, tmp_path):
    events = []
    result = train(tiny(faceset_a, faceset_b, tmp_path / "m", iterations=60, save_every=60, preview_every=30,
                        batch_size=8, prior="none"),  # from random weights: the loss has far to fall
                   listeners=[events.append])

    assert result.status == "done" and result.iteration == 60
    assert events[0].message  # the precision chosen, and why
    steps = [e for e in events if not e.done]
    assert [e.step for e in steps] == list(range(1, 61))
    total = np.array([e.metrics["loss_a"] + e.metrics["loss_b"] for e in steps])
    assert total[-8:].mean() < 0.85 * total[:8].mean(), total
    assert all(e.metrics["examples_per_s"] > 0 for e in steps)
    previews = [e for e in steps if e.preview is not None]
    assert [e.step for e in previews] == [30, 60]
    grid = previews[-1].preview
    assert grid.dtype == np.uint8 and grid.shape == (3 * 64, 6 * 64, 3)
    assert (tmp_path / "m" / "previews" / "latest.png").is_file()
    assert (tmp_path / "m" / "previews" / "00000030.png").is_file()
    assert events[-1].done and events[-1].step == 60
    csv_lines = (tmp_path / "m" / "loss.csv").read_text().splitlines()
    assert csv_lines[0] == "iteration,loss_a,loss_b" and csv_lines[-1].startswith("60,")


def test_preview_columns_show_inputs_and_both_decoders(faceset_a, faceset_b, tmp_path):
    events = []
    train(tiny(faceset_a, faceset_b, tmp_path / "m", iterations=2, preview_every=2, preview_rows=2),
          listeners=[events.append])
    grid = next(e.preview for e in events if e.preview is not None)
    tiles = grid.reshape(2, 64, 6, 64, 3).transpose(0, 2, 1, 3, 4)  # rows, columns, R, R, 3
    faces = torch.from_numpy(FaceSet(faceset_a).load_images()[[0]]).permute(0, 3, 1, 2)
    crop = center_crop_batch(faces, resolution=64, src_coverage=FaceSet(faceset_a).coverage,
                             model_coverage=MODEL_COVERAGE)
    expected = (crop[0].permute(1, 2, 0) * 255 + 0.5).to(torch.uint8).numpy()
    assert np.abs(tiles[0, 0].astype(int) - expected.astype(int)).max() <= 1  # column A is the face itself
    assert not np.array_equal(tiles[0, 1], tiles[0, 2])  # A->A and A->B come from different decoders


def test_stop_flag_is_honoured_within_one_iteration_and_saves(faceset_a, faceset_b, tmp_path):
    stop = StopFlag()

    def stop_at_three(event):
        if event.step == 3:
            stop.set()

    result = train(tiny(faceset_a, faceset_b, tmp_path / "m", iterations=50, save_every=50),
                   listeners=[stop_at_three], stop=stop)
    assert result.status == "stopped" and result.iteration == 3
    _, meta = load_model(tmp_path / "m")
    assert meta["iteration"] == 3


def test_nan_guard_rewinds_to_the_last_good_checkpoint_and_never_saves_nan(faceset_a, faceset_b, tmp_path,
                                                                           monkeypatch):
    real_step = Session.step
    calls = {"n": 0}

    def poisoned_step(self):
        losses = real_step(self)
        calls["n"] += 1
        if calls["n"] == 7:  # iteration 7, after the save at 5: break the weights as a real blow-up would
            with torch.no_grad():
                next(self.model.parameters()).fill_(float("nan"))
            return losses * float("nan")
        return losses

    monkeypatch.setattr(Session, "step", poisoned_step)
    events = []
    result = train(tiny(faceset_a, faceset_b, tmp_path / "m", iterations=12), listeners=[events.append])

    assert result.status == "done" and result.iteration == 12
    assert any("rewound to 5" in e.message for e in events)
    assert calls["n"] == 12 + 2  # iterations 6 and 7 were run twice
    assert weights_finite(result.model)
    model, meta = load_model(tmp_path / "m")
    assert weights_finite(model) and meta["iteration"] == 12
    rows = loss_history(tmp_path / "m")
    assert rows[-1][0] == 12 and all(np.isfinite(row[1:]).all() for row in rows)


def test_a_loss_that_blows_up_is_rewound_and_the_run_goes_on_at_half_the_rate(faceset_a, faceset_b, tmp_path,
                                                                                monkeypatch):
    """A finite blow-up (the colour net went 0.23 -> 7 -> 2e5 at lr 1e-3) is caught like a NaN: rewound to
    the last save, and the rest of the run takes half the learning rate so that it does not climb back."""
    real_step = Session.step
    rates = []

    def spiking_step(self):
        losses = real_step(self)
        rates.append(self.optimizer.param_groups[0]["lr"])
        return losses * 1000.0 if len(rates) == 23 else losses  # iteration 23, after the save at 20

    monkeypatch.setattr(Session, "step", spiking_step)
    events = []
    config = tiny(faceset_a, faceset_b, tmp_path / "m", iterations=26, id_weight=0.0, warmup=0)
    result = train(config, listeners=[events.append])

    assert result.status == "done" and result.iteration == 26
    assert any("its recent median at 23: rewound to 20" in e.message and "halved" in e.message
               for e in events), [e.message for e in events if e.message]
    assert len(rates) == 26 + 3  # iterations 21-23 ran twice
    assert rates[0] == config.lr and rates[-1] == config.lr / 2
    assert all(row[1] < 100 for row in loss_history(tmp_path / "m"))  # the spike never reached the history


def test_a_diverging_run_stops_and_keeps_its_last_good_model(faceset_a, faceset_b, tmp_path):
    result = train(tiny(faceset_a, faceset_b, tmp_path / "m", iterations=40, save_every=1, lr=1e10,
                        max_rewinds=2))
    assert result.status == "diverged"
    model, meta = load_model(tmp_path / "m")
    assert weights_finite(model)
    assert meta["iteration"] < 40


def test_cli_trains_and_resumes(faceset_a, faceset_b, tmp_path, capsys, monkeypatch):
    import engine.train.trainer as trainer_module

    warps = []  # the warp switch of every batch the trainer augments

    def recording(*args, warp, **kwargs):
        warps.append(warp)
        return warp_batch(*args, warp=warp, **kwargs)

    warp_batch = trainer_module.warp_batch
    monkeypatch.setattr(trainer_module, "warp_batch", recording)
    model_dir = tmp_path / "m"
    common = ["train", "--model", str(model_dir), "--preset", "lite", "--device", "cpu", "--batch-size", "4",
              "--save-every", "2", "--preview-every", "0"]
    assert cli_main([*common, "--faces-a", str(faceset_a), "--faces-b", str(faceset_b), "--iterations", "3"]) == 0
    assert "done at iteration 3" in capsys.readouterr().out
    # a new lite model starts from the shipped prior: the random warp is off unless asked for
    assert training_settings(model_dir)["warp"] is False and set(warps) == {False}
    # --resume finds the face sets in config.json and carries on to the new total; --warp switches the
    # random warp for the rest of the run, and a later resume without the flag keeps it
    warps.clear()
    assert cli_main([*common, "--resume", "--iterations", "5", "--warp"]) == 0
    config = json.loads((model_dir / "config.json").read_text())
    assert config["meta"]["iteration"] == 5
    assert training_settings(model_dir)["warp"] is True and warps and set(warps) == {True}
    warps.clear()
    assert cli_main([*common, "--resume", "--iterations", "6"]) == 0
    assert training_settings(model_dir)["warp"] is True and set(warps) == {True}


def test_the_random_warp_is_on_from_random_weights_and_off_from_learnt_ones():
    from engine.train.trainer import warp_for

    assert warp_for(None, {"prior": "random weights (--prior none)", "pretrained": False}) is True
    assert warp_for(None, {"prior": "prior-lite-64 ...", "pretrained": True}) is False
    assert warp_for(None, {"pretrained": True}) is False  # --init-from
    assert warp_for(None, {}) is True  # a model from before priors: trained with the warp
    assert warp_for(None, {"pretrained": True, "warp": True}) is True  # a resume keeps the model's
    assert warp_for(False, {"warp": True}) is False and warp_for(True, {"pretrained": True}) is True


def test_cli_refuses_missing_and_empty_face_sets_and_bad_resumes(faceset_a, faceset_b, tmp_path, capsys):
    base = ["train", "--device", "cpu", "--preset", "lite", "--iterations", "1"]
    assert cli_main([*base, "--faces-a", str(tmp_path / "nowhere"), "--faces-b", str(faceset_b),
                     "--model", str(tmp_path / "m1")]) == 2
    assert "nowhere does not exist" in capsys.readouterr().err

    empty = tmp_path / "empty"
    FaceSet(empty, create=True).save()
    assert cli_main([*base, "--faces-a", str(faceset_a), "--faces-b", str(empty),
                     "--model", str(tmp_path / "m2")]) == 2
    assert "holds no faces" in capsys.readouterr().err

    (tmp_path / "not_a_model").mkdir()
    assert cli_main([*base, "--faces-a", str(faceset_a), "--faces-b", str(faceset_b),
                     "--model", str(tmp_path / "not_a_model"), "--resume"]) == 2
    assert "is not a model folder" in capsys.readouterr().err


def test_an_existing_model_is_not_overwritten_without_resume(faceset_a, faceset_b, tmp_path):
    train(tiny(faceset_a, faceset_b, tmp_path / "m", iterations=1))
    with pytest.raises(UserError, match="--resume"):
        train(tiny(faceset_a, faceset_b, tmp_path / "m", iterations=1))


def test_a_time_budget_stops_and_saves_snapshots_at_its_marks_and_a_resume_continues_the_clock(
        faceset_a, faceset_b, tmp_path):
    events = []
    config = tiny(faceset_a, faceset_b, tmp_path / "m", iterations=100_000, save_every=100_000,
                  minutes=0.03, snapshot_minutes=(0.01, 5.0))
    result = train(config, listeners=[events.append])
    assert result.status == "done" and 0 < result.iteration < 100_000
    _, meta = load_model(tmp_path / "m")
    assert meta["iteration"] == result.iteration  # saved like a stop
    assert 1.8 <= meta["seconds"] < 1.8 + 5  # the budget, plus at most the step that spent it
    assert (tmp_path / "m" / "snapshots" / "0.01min" / "config.json").is_file()
    assert not (tmp_path / "m" / "snapshots" / "5min").exists()
    left = [e.time_left_s for e in events if not e.done]
    assert left[0] > left[-1] and left[-1] == 0.0 and all(e.eta_s <= e.time_left_s for e in events[:-1])
    assert "time budget" in events[-1].message

    config.resume, config.minutes = True, 0.06
    again = train(config)
    _, meta = load_model(tmp_path / "m")
    assert again.status == "done" and again.iteration > result.iteration
    assert 3.6 <= meta["seconds"] < 3.6 + 5


def test_learning_rate_warms_up_linearly_then_holds(faceset_a, faceset_b, tmp_path):
    lrs = []
    config = tiny(faceset_a, faceset_b, tmp_path / "m", iterations=12, lr=1e-3, warmup=10)
    session = Session(config, distributed.setup("cpu"))
    step = session.step

    def recording_step():
        lrs.append(session.optimizer.param_groups[0]["lr"])
        return step()

    session.step = recording_step
    run_loop(session, Reporter("train"), StopFlag())
    assert lrs == pytest.approx([1e-4 * (i + 1) for i in range(10)] + [1e-3, 1e-3])


def test_cli_minutes_budget(faceset_a, faceset_b, tmp_path, capsys):
    model_dir = tmp_path / "m"
    assert cli_main(["train", "--model", str(model_dir), "--preset", "lite", "--device", "cpu", "--batch-size", "4",
                     "--faces-a", str(faceset_a), "--faces-b", str(faceset_b), "--minutes", "0.01",
                     "--preview-every", "0"]) == 0
    assert "done at iteration" in capsys.readouterr().out
    assert cli_main(["train", "--model", str(model_dir), "--resume", "--minutes", "0"]) == 2
    assert "--minutes must be more than 0" in capsys.readouterr().err
