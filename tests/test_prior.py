"""The face prior: the shipped file and its card, loading into new models, refusals, and `pretrain`."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open

from engine.cli import main as cli_main
from engine.errors import UserError
from engine.models import build_model, load_model, prior
from engine.provenance.record import file_sha256
from engine.train import TrainConfig, train


def test_the_shipped_priors_are_float16_under_25_mb_and_their_cards_say_what_they_are():
    shipped = sorted(prior.SHIPPED.glob("prior-*.safetensors"))
    assert shipped, "the repo ships a prior for the CPU default preset (weights/prior-lite-64.safetensors)"
    for path in shipped:
        card = prior.read_card(path)
        assert path.stat().st_size <= prior.MAX_BYTES and card["bytes"] == path.stat().st_size
        assert card["sha256"] == file_sha256(path)
        assert "non-commercial" in card["licence"]
        assert card["iterations"] > 0 and card["minutes"] > 0 and card["data"]["faces"] > 1000
        assert card["machine"]["cpu"] and card["final_loss"]["a"] > 0
        model = build_model(card["model"]["preset"], resolution=card["model"]["resolution"])
        assert path.name == f"prior-{card['model']['preset']}-{card['model']['resolution']}.safetensors"
        with safe_open(str(path), framework="pt") as f:
            assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.float16}  # noqa: SIM118
        prior.load_into(model, path)  # fits the preset it names


def test_a_written_prior_loads_back_into_a_new_model(tmp_path):
    torch.manual_seed(1)
    source = build_model("lite")
    card = prior.write(tmp_path / "prior-lite-64.safetensors", source, {"iterations": 7, "minutes": 1.5})
    assert card["sha256"] == file_sha256(tmp_path / "prior-lite-64.safetensors") and card["model"]["preset"] == "lite"
    torch.manual_seed(2)
    fresh = build_model("lite")
    prior.load_into(fresh, tmp_path / "prior-lite-64.safetensors")
    for name, tensor in source.state_dict().items():
        assert torch.equal(fresh.state_dict()[name], tensor.half().float()), name


def test_a_prior_that_does_not_fit_is_refused_with_the_fix(tmp_path):
    path = tmp_path / "prior-lite-64.safetensors"
    prior.write(path, build_model("lite", learn_mask=True), {})
    with pytest.raises(UserError, match="--prior none"):
        prior.load_into(build_model("lite"), path)  # a mask head the model lacks
    with pytest.raises(UserError, match="not for this original model"):
        prior.load_into(build_model("original"), path)
    card = json.loads(prior.card_path(path).read_text())
    card["model"]["learn_mask"] = False  # a card that lies about the tensors: the shapes still decide
    prior.card_path(path).write_text(json.dumps(card))
    with pytest.raises(UserError, match="does not fit"):
        prior.load_into(build_model("lite"), path)
    with pytest.raises(UserError, match="no such prior file"):
        prior.resolve(str(tmp_path / "missing.safetensors"), "lite", 64)
    assert prior.resolve("none", "lite", 64) is None
    assert prior.resolve("auto", "intracoder", 256) is None  # none ships for it: a random start


def test_a_new_model_starts_from_the_prior_by_default_and_says_so(faceset_a, faceset_b, tmp_path, monkeypatch):
    monkeypatch.setattr(prior, "SHIPPED", tmp_path / "weights")
    torch.manual_seed(3)
    made = build_model("lite")
    prior.write(prior.shipped_path("lite", 64), made, {"data": {"faces": 10, "identities": 3}, "minutes": 2.0})
    config = TrainConfig(faces_a=str(faceset_a), faces_b=str(faceset_b), model_dir=str(tmp_path / "m"),
                         preset="lite", device="cpu", batch_size=4, iterations=1, save_every=1, preview_every=0,
                         lr=1e-12, warmup=0)  # one step that moves nothing: the weights are the prior's
    train(config)
    model, meta = load_model(tmp_path / "m")
    assert meta["train"]["prior"].startswith("the shipped prior (lite 64 px, 10 faces of 3+ people")
    encoder = "encoder." + next(iter(dict(model.encoder.named_parameters())))
    assert torch.allclose(model.state_dict()[encoder], made.state_dict()[encoder].half().float(), atol=1e-6)
    train(TrainConfig(**{**config.__dict__, "model_dir": str(tmp_path / "r"), "prior": "none"}))
    assert load_model(tmp_path / "r")[1]["train"]["prior"] == "random weights (--prior none)"
    monkeypatch.setattr(prior, "SHIPPED", tmp_path / "empty")
    train(TrainConfig(**{**config.__dict__, "model_dir": str(tmp_path / "n")}))
    assert "no prior ships for lite at 64 px" in load_model(tmp_path / "n")[1]["train"]["prior"]


def test_pretrain_writes_a_prior_and_resumes_from_the_work_folder_or_the_committed_prior(
        faceset_a, faceset_b, tmp_path, capsys):
    out, work = tmp_path / "prior-lite-64.safetensors", tmp_path / "work"
    base = ["pretrain", "--out", str(out), "--work", str(work), "--batch-size", "4", "--save-every", "2",
            "--preview-every", "0", "--precision", "fp32"]
    assert cli_main([*base, "--faces-a", str(faceset_a), "--faces-b", str(faceset_b), "--iterations", "2"]) == 0
    card = prior.read_card(out)
    assert card["iterations"] == 2 and card["data"]["faces"] == card["data"]["face_sets"][0]["faces"] + \
        card["data"]["face_sets"][1]["faces"]
    assert card["sha256"] == file_sha256(out)
    # a second start without --resume would overwrite hours of work: refused
    assert cli_main([*base, "--faces-a", str(faceset_a), "--faces-b", str(faceset_b)]) == 2
    assert "--resume" in capsys.readouterr().err
    assert cli_main([*base, "--resume", "--iterations", "3"]) == 0  # the work folder goes on
    assert prior.read_card(out)["iterations"] == 3
    # a prior learns faces, not one person B: no identity loss (it pulled towards the second set's mean and
    # made a pretraining step 3.5x slower when the train default turned it on)
    assert load_model(work)[1]["train"]["id_weight"] == 0
    assert load_model(work)[1]["train"]["ema"] == 0  # the prior is the trained weights, as measured
    first_sha = prior.read_card(out)["sha256"]
    import shutil

    shutil.rmtree(work)  # another machine: only the committed prior is left
    assert cli_main([*base, "--resume", "--iterations", "2"]) == 0
    card = prior.read_card(out)
    assert card["iterations"] == 3 + 2 and card["started_from_prior_sha256"] == first_sha
    assert json.loads((work / "pretrain.json").read_text())["iterations"] == 3


def test_a_minute_bounded_pretrain_shows_no_iteration_total(faceset_a, faceset_b, tmp_path, monkeypatch):
    """pretrain runs until --minutes: its bar counts iterations with no total to fill (no made-up ETA);
    the time left comes from the minutes."""
    from engine.progress import TqdmListener

    events = []
    monkeypatch.setattr(TqdmListener, "__call__", lambda self, event: events.append(event))
    assert cli_main(["pretrain", "--out", str(tmp_path / "p.safetensors"), "--work", str(tmp_path / "work"),
                     "--batch-size", "2", "--preview-every", "0", "--precision", "fp32", "--minutes", "0.05",
                     "--faces-a", str(faceset_a), "--faces-b", str(faceset_b)]) == 0
    assert events and all(e.total is None and e.eta_s == e.time_left_s for e in events), events[-1]
    assert events[-1].step > 0
