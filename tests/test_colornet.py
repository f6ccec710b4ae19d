"""The colour network: its shapes, its folder, its training phase on real faces, and `--color net` swaps."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from engine.cli import main as cli_main
from engine.errors import UserError
from engine.models import (
    build_color_net,
    has_color_net,
    load_color_net,
    load_model,
    save_color_net,
    save_model,
)
from engine.models.colornet import face_stats, pair_stats, reinhard_to
from engine.models.folder import COLOR_FILES
from engine.progress import StopFlag
from engine.train import ColorConfig, TrainConfig, train, train_color
from engine.train.checkpoint import load as load_checkpoint


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """On a shared 2-core machine one thread is several times faster than two fighting for cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def swap_model(faceset_a, faceset_b, tmp_path_factory):
    """A lite model trained for 30 iterations, its colour net for 12 more in the same call."""
    folder = tmp_path_factory.mktemp("colornet") / "lite"
    events = []
    result = train(TrainConfig(faces_a=str(faceset_a), faces_b=str(faceset_b), model_dir=str(folder),
                               preset="lite", device="cpu", batch_size=4, iterations=30, save_every=30,
                               preview_every=0, color_net=True, color_iterations=12,
                               prior="none"),  # independent of the shipped prior, which is retrained over time
                   listeners=[events.append])
    assert result.status == "done" and result.color is not None and result.color.status == "done"
    return folder, result, events


@pytest.mark.parametrize("scale", [2, 4])
@pytest.mark.parametrize("condition, prior", [(False, "bicubic"), (True, "bicubic"), (True, "reinhard")])
def test_output_is_the_input_at_two_or_four_times_its_side(scale, condition, prior):
    torch.manual_seed(0)
    net = build_color_net(scale, width=8, blocks=1, condition=condition, prior=prior).eval()
    x = torch.rand(2, 3, 64, 64)
    stats = pair_stats(x, torch.rand(2, 3, 64, 64), torch.ones(64, 64)) if condition else None
    with torch.no_grad():
        fresh = net(x, "a", stats)
        start = torch.nn.functional.interpolate(net.prepare(x, stats), scale_factor=scale, mode="bicubic")
        assert torch.allclose(fresh, start, atol=1e-6)  # untrained: exactly its prior, upscaled
        for head in net.heads.values():
            head[2].weight.normal_(std=0.1)
        out = net(x, "a", stats)
        other = net(x, "b", stats)
    assert out.shape == (2, 3, 64 * scale, 64 * scale)
    assert not torch.equal(out, other)  # one head per identity
    with pytest.raises(KeyError, match="'c'"):
        net(x, "c", stats)
    if condition:
        with pytest.raises(ValueError, match="stats"):
            net(x, "a")


def test_bad_architectures_are_user_errors():
    with pytest.raises(UserError, match="scale 3"):
        build_color_net(3)
    with pytest.raises(UserError, match="condition"):
        build_color_net(2, condition=False, prior="reinhard")
    with pytest.raises(UserError, match="prior"):
        build_color_net(2, prior="sepia")


def test_face_stats_are_lab_moments_and_reinhard_moves_faces_to_target_stats():
    torch.manual_seed(0)
    faces, donors = torch.rand(3, 3, 32, 32) * 0.5, torch.rand(3, 3, 32, 32) * 0.5 + 0.4
    weights = torch.zeros(32, 32)
    weights[8:24, 8:24] = 1
    grey = torch.full((1, 3, 32, 32), 0.5)
    stats = face_stats(grey, weights)[0] * 100
    assert abs(stats[0] - 53.39) < 0.1 and stats[1:].abs().max() < 0.01  # sRGB 0.5 is L 53.4, a = b = 0, flat
    target = face_stats(donors, weights)
    moved = reinhard_to(faces, face_stats(faces, weights), target)
    assert torch.allclose(face_stats(moved, weights)[:, :3], target[:, :3], atol=0.02)  # means within 2 LAB units


def test_reinhard_tints_a_near_grey_photo_instead_of_blowing_its_noise_into_colour(data_dir):
    """A black-and-white photo (JPEG chroma noise of ~0.5 LAB units) recoloured like a colour face takes
    the face's mean colour, its chroma spread stretched at most MAX_STD_RATIO times (not 13-20x)."""
    import cv2

    from engine.models.colornet import MAX_STD_RATIO

    def photo(name: str) -> torch.Tensor:
        image = cv2.cvtColor(cv2.imread(str(data_dir / "people" / name)), cv2.COLOR_BGR2RGB)
        h, w = image.shape[:2]
        side = min(h, w)
        square = image[(h - side) // 2:(h + side) // 2, (w - side) // 2:(w + side) // 2]
        small = cv2.resize(square, (64, 64), interpolation=cv2.INTER_AREA)
        return torch.from_numpy(small).permute(2, 0, 1)[None].float() / 255

    grey, colour = photo("hader/hader163.jpg"), photo("carell/carell1.jpg")
    weights = torch.ones(64, 64)
    own, target = face_stats(grey, weights), face_stats(colour, weights)
    assert (own[0, 4:] * 100 < 1).all() and (target[0, 4:] * 100 > 5).all()  # grey with noise; a colour face
    moved = face_stats(reinhard_to(grey, own, target), weights)
    assert torch.allclose(moved[0, :3], target[0, :3], atol=0.01)  # the colour face's mean colour
    assert (moved[0, 4:] <= own[0, 4:] * MAX_STD_RATIO * 1.05).all(), moved * 100


def test_a_saved_colour_net_round_trips_exactly_beside_its_model(tmp_path):
    from engine.models import build_model

    torch.manual_seed(0)
    save_model(tmp_path, build_model("lite"), {"iteration": 3})
    assert not has_color_net(tmp_path)
    net = build_color_net(4, width=8, blocks=1)
    with torch.no_grad():
        net.film.weight.normal_()  # the zero-initialised layer must round-trip too
    meta = {"iteration": 7, "loss_history": [[7, 0.1, 0.2]]}
    save_color_net(tmp_path, net, meta)
    save_model(tmp_path, build_model("lite"), {"iteration": 4})  # a later model save keeps the colour net
    assert has_color_net(tmp_path)
    loaded, loaded_meta = load_color_net(tmp_path)
    assert loaded_meta == meta and loaded.config == net.config
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in net.state_dict().items())
    x = torch.rand(1, 3, 64, 64)
    stats = pair_stats(x, x, torch.ones(64, 64))
    with torch.no_grad():
        assert torch.equal(net.eval()(x, "b", stats), loaded(x, "b", stats))
    assert load_model(tmp_path)[1] == {"iteration": 4}

    config = json.loads((tmp_path / "config.json").read_text())
    config["color_net"]["net"]["width"] = 16  # weights of width 8, architecture of width 16
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(UserError, match="color.safetensors"):
        load_color_net(tmp_path)
    (tmp_path / "color.safetensors").unlink()
    assert not has_color_net(tmp_path)
    with pytest.raises(UserError, match="train-color"):
        load_color_net(tmp_path)


def test_train_with_color_net_runs_the_colour_phase_after_the_model_and_reports_it(swap_model):
    folder, result, events = swap_model
    assert result.iteration == 30 and result.color.iteration == 12
    jobs = [e.job for e in events]
    assert jobs.index("train-color") > max(i for i, job in enumerate(jobs) if job == "train")  # after, not between
    color_steps = [e for e in events if e.job == "train-color" and not e.done]
    assert [e.step for e in color_steps] == list(range(1, 13))
    assert all({"loss_color_a", "loss_color_b", "examples_per_s"} <= set(e.metrics) for e in color_steps)
    assert has_color_net(folder)
    net, meta = load_color_net(folder)
    assert net.scale == 2 and meta["iteration"] == 12
    assert (folder / "color_loss.csv").read_text().splitlines()[-1].startswith("12,")


def test_a_short_colour_training_lowers_its_loss_on_real_faces(swap_model, tmp_path):
    import shutil

    folder = tmp_path / "m"
    shutil.copytree(swap_model[0], folder)
    (folder / "color.safetensors").unlink()  # a fresh net on the trained swap model
    events = []
    # a narrow net at a high rate, to learn something within a minute on a loaded 2-core CPU
    config = ColorConfig(model_dir=str(folder), iterations=60, batch_size=4, width=16, lr=1e-3, device="cpu",
                         save_every=60, preview_every=30)
    result = train_color(config, [events.append], StopFlag())
    assert result.status == "done"
    losses = np.array([e.metrics["loss_color_a"] + e.metrics["loss_color_b"] for e in events if not e.done])
    # the untrained net is its prior upscaled (its heads start at zero): lower means it learned
    assert losses[-10:].mean() < 0.95 * losses[:10].mean(), losses
    grid = [e.preview for e in events if e.preview is not None][-1]
    assert grid.shape == (2 * 3 * 128, 3 * 128, 3)  # rows: 3 faces of A, 3 of B; input | net | real
    assert (folder / "previews" / "color-latest.png").is_file()


def test_train_color_cli_resumes_and_refuses_to_overwrite(swap_model, tmp_path, capsys):
    import shutil

    folder = tmp_path / "m"
    shutil.copytree(swap_model[0], folder)
    args = ["train-color", "--model", str(folder), "--device", "cpu", "--batch-size", "2", "--save-every", "2",
            "--preview-every", "0"]
    assert cli_main(args + ["--iterations", "4"]) == 2  # the folder has a colour net already
    assert "--resume" in capsys.readouterr().err
    before = load_checkpoint(folder, torch.device("cpu"), COLOR_FILES)[1].history.rows
    assert cli_main(args + ["--iterations", "16", "--resume"]) == 0
    _, state, _ = load_checkpoint(folder, torch.device("cpu"), COLOR_FILES)
    assert state.iteration == 16 and state.history.rows[: len(before)] == before and state.history.rows[-1][0] == 16
    assert torch.load(folder / "color_optimizer.pt", weights_only=True)["iteration"] == 16
    assert "done at iteration 16" in capsys.readouterr().out
    assert cli_main(["train-color", "--model", str(tmp_path / "nothing"), "--device", "cpu"]) == 2


def test_color_net_swaps_a_photo_at_the_networks_size(swap_model, data_dir):
    from engine.media import read_image
    from engine.swap.pipeline import Swapper
    from engine.swap.settings import SwapSettings

    folder = swap_model[0]
    photo = read_image(data_dir / "photos" / "obama-480p.jpg")
    swapper = Swapper(folder, SwapSettings(blend="alpha"), device="cpu", detector="mtcnn")
    assert swapper.color_mode == "net"  # auto picks the network when the folder has one
    assert swapper.face_size == 128 and swapper.blend_size == 256
    faces = [[f.landmarks for f in swapper.find_faces([photo])[0]]]
    assert faces[0], "no face found in the photo"
    rendered = []
    net_faces = swapper._net_faces
    swapper._net_faces = lambda *a: (rendered.append(net_faces(*a)), rendered[-1])[1]
    out, placed = swapper.swap_at_landmarks([photo], faces)
    assert rendered and rendered[0].shape == (1, 128, 128, 3)  # the network's face is what gets pasted
    assert out[0].shape == photo.shape
    region = placed[0][0].region(photo.shape)
    assert np.abs(out[0].astype(int) - photo.astype(int)).sum(axis=2)[region].mean() > 10  # the face changed
    assert np.array_equal(out[0][~region], photo[~region])

    swapper.update(color="reinhard")
    reinhard = swapper.swap_at_landmarks([photo], faces)[0][0]
    swapper.update(color="net", color_strength=0.0)
    assert np.array_equal(swapper.swap_at_landmarks([photo], faces)[0][0], reinhard)  # strength 0: all Reinhard
    swapper.update(color_strength=1.0)
    assert not np.array_equal(out[0], reinhard)


def test_net_mode_on_a_model_without_a_colour_net_is_a_user_error(swap_model, data_dir, tmp_path):
    import shutil

    from engine.swap.pipeline import Swapper
    from engine.swap.settings import SwapSettings

    folder = tmp_path / "m"
    shutil.copytree(swap_model[0], folder)
    (folder / "color.safetensors").unlink()
    swapper = Swapper(folder, SwapSettings(), device="cpu", detector="mtcnn")
    assert swapper.color_mode == "reinhard" and swapper.face_size == 64
    with pytest.raises(UserError, match="train-color"):
        swapper.update(color="net")
    out = tmp_path / "out.jpg"
    code = cli_main(["swap", str(data_dir / "photos" / "obama-480p.jpg"), "-m", str(swap_model[0]), "--out", str(out),
                     "--color", "net", "--detector", "mtcnn", "--device", "cpu", "--threads", "1"])
    assert code == 0 and out.is_file()


def test_the_critics_losses_have_their_known_answers():
    from engine.models.critic import PatchCritic, critic_loss, generator_loss

    faces = torch.rand(2, 3, 64, 64)
    assert PatchCritic()(faces).shape == (2, 1, 8, 8)  # one logit per patch

    def sure(value):  # a critic that says `value` of every patch
        return lambda x: torch.full((len(x), 1, 8, 8), float(value))

    assert generator_loss(sure(10), faces) < 1e-4  # taken for real: nothing to gain
    assert generator_loss(sure(-10), faces) == pytest.approx(10, abs=1e-3)
    assert generator_loss(sure(0), faces) == pytest.approx(np.log(2), abs=1e-6)

    def right(x):  # real faces (the first half) called real, the net's called fake
        return torch.cat([torch.full((len(x) // 2, 1, 8, 8), 10.0), torch.full((len(x) // 2, 1, 8, 8), -10.0)])

    assert critic_loss(right, faces, faces) < 1e-4
    assert critic_loss(lambda x: -right(x), faces, faces) == pytest.approx(20, abs=1e-3)


def test_a_colour_training_with_a_critic_keeps_it_beside_its_optimizer_and_resumes_with_it(swap_model, tmp_path):
    import shutil

    from engine.train.color import CRITIC_KEY, ColorSession
    from engine.train.loop import joined

    folder = tmp_path / "m"
    shutil.copytree(swap_model[0], folder)
    (folder / "color.safetensors").unlink()
    settings = dict(model_dir=str(folder), batch_size=2, width=8, device="cpu", save_every=4, preview_every=0,
                    gan=0.1)
    assert train_color(ColorConfig(iterations=4, **settings)).status == "done"
    saved = torch.load(folder / "color_optimizer.pt", weights_only=True)
    assert saved["iteration"] == 4 and set(saved[CRITIC_KEY]) == {"weights", "optimizer"}
    assert json.loads((folder / "config.json").read_text())["color_net"]["meta"]["train"]["gan"] == 0.1
    with joined("cpu") as cluster:
        session = ColorSession(ColorConfig(iterations=8, resume=True, **settings), cluster)
        for name, value in session.critic.state_dict().items():
            assert torch.equal(value, saved[CRITIC_KEY]["weights"][name]), name
        assert session.critic_optimizer.state_dict()["state"]  # Adam's moments came back too
    result = train_color(ColorConfig(iterations=8, resume=True, **settings))
    assert result.status == "done" and result.iteration == 8
    after = torch.load(folder / "color_optimizer.pt", weights_only=True)[CRITIC_KEY]["weights"]
    assert any(not torch.equal(after[k], saved[CRITIC_KEY]["weights"][k]) for k in after)  # it trained on
    net, _ = load_color_net(folder)  # the swap's load ignores it
    assert not any("critic" in k for k in net.state_dict())


def test_a_critic_weight_below_zero_is_refused(swap_model, faceset_a, faceset_b, tmp_path, capsys):
    args = ["train-color", "--model", str(swap_model[0]), "--device", "cpu", "--gan", "-1"]
    assert cli_main(args) == 2
    assert "--gan -1" in capsys.readouterr().err
    args = ["train", "--faces-a", str(faceset_a), "--faces-b", str(faceset_b), "--model", str(tmp_path / "m"),
            "--device", "cpu", "--color-net", "--color-gan", "nan"]
    assert cli_main(args) == 2
    assert "--color-gan nan" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()  # refused before anything was written


def test_the_colour_phase_of_train_stops_at_its_own_time_budget(faceset_a, faceset_b, tmp_path, capsys):
    folder = tmp_path / "m"
    result = train(TrainConfig(faces_a=str(faceset_a), faces_b=str(faceset_b), model_dir=str(folder), preset="lite",
                               device="cpu", batch_size=2, iterations=2, save_every=2, preview_every=0, prior="none",
                               color_net=True, color_iterations=10**6, color_minutes=0.01))
    assert result.iteration == 2 and result.color.status == "done"
    assert 0 < result.color.iteration < 10**6  # stopped by the 0.6 s, not by the iteration target
    _, state, _ = load_checkpoint(folder, torch.device("cpu"), COLOR_FILES)
    assert state.iteration == result.color.iteration and state.seconds >= 0.6
    args = ["train", "--faces-a", str(faceset_a), "--faces-b", str(faceset_b), "--model", str(tmp_path / "n"),
            "--device", "cpu", "--color-net", "--color-minutes", "0"]
    assert cli_main(args) == 2
    assert "--color-minutes must be more than 0" in capsys.readouterr().err
