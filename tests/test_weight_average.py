"""The running average of the weights (`train --ema`): its arithmetic, what the folder keeps, and resumes
and rewinds that go on from the trained weights while swaps get the average."""

from __future__ import annotations

import pytest
import torch
from test_train import tiny
from torch import nn

from engine.cli import main as cli_main
from engine.models import build_model, load_model
from engine.models.folder import TrainingState
from engine.train import distributed, train
from engine.train.average import WeightAverage
from engine.train.checkpoint import load_trained, restore, save
from engine.train.trainer import Session


def _equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_the_average_follows_its_warmed_up_decay_and_leaves_the_model_alone():
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    average = WeightAverage(model, decay=0.9, count=0)
    expected = [p.detach().clone() for p in model.parameters()]
    for n in range(100):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        decay = min(0.9, (1 + n) / (10 + n))  # 0.1, 0.18, ... then capped at 0.9 from n = 80 on
        expected = [e + (1 - decay) * (p.detach() - e) for e, p in zip(expected, model.parameters(), strict=True)]
        average.update(model)
    assert average.count == 100 and average.current_decay() == 0.9
    for e, p in zip(expected, average.module.parameters(), strict=True):
        assert torch.allclose(e, p, atol=1e-6)
    last = [p.detach().clone() for p in model.parameters()]
    assert not all(torch.allclose(a, b) for a, b in zip(last, average.module.parameters(), strict=True))
    with pytest.raises(ValueError, match="between 0 and 1"):
        WeightAverage(model, decay=1.0)


def test_a_rewind_puts_the_trained_weights_back_into_training_and_the_saved_average_into_the_average(tmp_path):
    torch.manual_seed(0)
    trained, averaged = build_model("lite"), build_model("lite")
    optimizer = torch.optim.Adam(trained.parameters())
    save(tmp_path, averaged, optimizer, TrainingState(iteration=7), trained=trained)
    assert _equal(load_model(tmp_path)[0].state_dict(), averaged.state_dict())  # what swaps load
    assert _equal(load_trained(tmp_path, 7, torch.device("cpu")), trained.state_dict())
    assert load_trained(tmp_path, 8, torch.device("cpu")) is None  # another iteration's weights: not these

    live, live_average = build_model("lite"), build_model("lite")
    state = restore(tmp_path, live, torch.optim.Adam(live.parameters()), average=live_average)
    assert state.iteration == 7
    assert _equal(live.state_dict(), trained.state_dict()) and _equal(live_average.state_dict(), averaged.state_dict())


def test_a_run_with_an_average_saves_it_for_swapping_and_resumes_from_the_trained_weights(
        faceset_a, faceset_b, tmp_path):
    folder = tmp_path / "m"
    result = train(tiny(faceset_a, faceset_b, folder, iterations=6, save_every=3, ema=0.999, snapshot_every=6))
    assert result.status == "done" and result.iteration == 6
    saved = load_model(folder)[0].state_dict()
    trained = load_trained(folder, 6, torch.device("cpu"))
    assert trained is not None and not _equal(saved, trained)  # the file holds the average, not the last step
    assert _equal(result.model.state_dict(), saved)  # the run hands on what it saved (the colour phase takes it)
    assert _equal(load_model(folder / "snapshots" / "00000006")[0].state_dict(), saved)
    # the average stays near the trained weights at this point of its warm-up (decay 0.1-0.5 over 6 steps)
    gap = max((saved[k] - trained[k]).abs().max().item() for k in saved if saved[k].is_floating_point())
    assert 0 < gap < 0.05, gap

    config = tiny(faceset_a, faceset_b, folder, iterations=9, save_every=3, ema=0.999, resume=True)
    session = Session(config, distributed.setup("cpu"))
    assert _equal(session.model.state_dict(), trained) and _equal(session.shown.state_dict(), saved)
    assert session.average.count == 6  # the decay's warm-up goes on where it stopped
    assert train(config).iteration == 9

    # a resume without the average trains on from the trained weights and saves them as they are
    plain = tiny(faceset_a, faceset_b, folder, iterations=9, save_every=3, ema=0.0, resume=True)
    trained = load_trained(folder, 9, torch.device("cpu"))
    session = Session(plain, distributed.setup("cpu"))
    assert session.average is None and _equal(session.model.state_dict(), trained)


def test_the_cli_refuses_a_decay_outside_0_to_1(faceset_a, faceset_b, tmp_path, capsys):
    code = cli_main(["train", "--faces-a", str(faceset_a), "--faces-b", str(faceset_b), "--model",
                     str(tmp_path / "m"), "--ema", "1.5", "--iterations", "1"])
    assert code != 0
    assert "--ema 1.5" in capsys.readouterr().err


def test_the_cli_and_a_new_run_keep_the_average_the_curve_chose_and_zero_turns_it_off(tmp_path):
    from engine.cli import build_parser
    from engine.train.command import config_from_args
    from engine.train.config import TrainConfig

    base = ["train", "--faces-a", "a", "--faces-b", "b", "--model", str(tmp_path / "m"), "--device", "cpu"]
    assert config_from_args(build_parser().parse_args(base)).ema == TrainConfig.ema == 0.999
    assert config_from_args(build_parser().parse_args([*base, "--ema", "0"])).ema == 0.0
