"""Model presets and model folders: the architecture facts the trainer and swap code rely on."""

from __future__ import annotations

import json

import pytest
import torch

from engine.errors import UserError
from engine.models import PRESETS, build_model, is_model_dir, load_model, save_model


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_original_matches_reference_parameter_counts():
    model = build_model("original", learn_mask=False)
    assert n_params(model.encoder) == 69_662_976
    assert n_params(model.shared_decoder) == 0
    for side in ("a", "b"):
        assert n_params(model.decoders[side]) == 6_199_747


@pytest.mark.parametrize("preset", sorted(PRESETS))
@pytest.mark.parametrize("learn_mask", [False, True])
def test_every_preset_maps_faces_to_faces(preset, learn_mask):
    model = build_model(preset, learn_mask=learn_mask)
    r = PRESETS[preset].resolution
    assert model.resolution == r
    with torch.no_grad():
        rgb, mask = model(torch.rand(1, 3, r, r), "b")
    assert rgb.shape == (1, 3, r, r)
    assert 0 <= rgb.min() and rgb.max() <= 1
    if learn_mask:
        assert mask.shape == (1, 1, r, r) and 0 <= mask.min() and mask.max() <= 1
    else:
        assert mask is None


def test_intracoder_resolution_is_configurable_and_its_shared_part_is_the_deeper_one():
    model = build_model("intracoder", resolution=128, width=16, encoder_dim=64)
    with torch.no_grad():
        rgb, _ = model(torch.rand(1, 3, 128, 128), "a")
    assert rgb.shape == (1, 3, 128, 128)

    def convs(module):
        return sum(isinstance(m, torch.nn.Conv2d) for m in module.modules())

    assert convs(model.encoder) + convs(model.shared_decoder) > 2 * convs(model.decoders["a"])
    assert n_params(model.shared_decoder) > n_params(model.decoders["a"])


def test_config_rebuilds_the_same_architecture_through_json():
    model = build_model("intracoder", resolution=80, learn_mask=True, identities=("x", "y", "z"), coverage=0.75,
                        width=8)
    again = build_model(**json.loads(json.dumps(model.config)))
    assert again.identities == ("x", "y", "z") and again.coverage == 0.75 and again.config == model.config
    assert {k: v.shape for k, v in again.state_dict().items()} == {k: v.shape for k, v in model.state_dict().items()}


@pytest.mark.parametrize("preset", ["lite", "intracoder"])
def test_channels_last_and_bf16_autocast(preset):
    model = build_model(preset, learn_mask=True).to(memory_format=torch.channels_last)
    x = torch.rand(2, 3, 64, 64).contiguous(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        rgb, mask = model(x, "a")
    assert rgb.dtype == torch.bfloat16 and rgb.shape == (2, 3, 64, 64) and mask.shape == (2, 1, 64, 64)
    (rgb.float().mean() + mask.float().mean()).backward()
    assert all(p.grad is not None for p in model.encoder.parameters())


def test_bad_options_are_user_errors():
    with pytest.raises(UserError, match="unknown model preset"):
        build_model("nope")
    with pytest.raises(UserError, match="encoder_dim"):
        build_model("lite", encoder_dim=3)
    with pytest.raises(UserError, match="64"):
        build_model("original", resolution=128)
    with pytest.raises(UserError, match="multiple of 16"):
        build_model("intracoder", resolution=100)
    with pytest.raises(UserError, match="coverage"):
        build_model("lite", coverage=3.0)


def test_save_load_round_trip_is_exact(tmp_path):
    torch.manual_seed(0)
    model = build_model("lite", learn_mask=True).to(memory_format=torch.channels_last)
    meta = {"iteration": 12, "coverage": 0.85, "loss": {"a": [0.5, 0.4]}}
    save_model(tmp_path / "m", model, meta)
    assert is_model_dir(tmp_path / "m")
    loaded, loaded_meta = load_model(tmp_path / "m")
    assert loaded_meta == meta and loaded.config == model.config
    want_state, got_state = model.state_dict(), loaded.state_dict()
    assert want_state.keys() == got_state.keys()
    assert all(torch.equal(want_state[k], got_state[k]) for k in want_state)
    loaded = loaded.to(memory_format=torch.channels_last)  # same layout, same kernels, same bits
    x = torch.rand(2, 3, 64, 64).contiguous(memory_format=torch.channels_last)
    model.eval()
    with torch.no_grad():
        for side in ("a", "b"):
            want, got = model(x, side), loaded(x, side)
            assert torch.equal(want[0], got[0]) and torch.equal(want[1], got[1])


def test_non_model_folders_are_user_errors_naming_the_folder(tmp_path):
    empty = tmp_path / "holiday photos"
    empty.mkdir()
    assert not is_model_dir(empty)
    with pytest.raises(UserError, match="holiday photos"):
        load_model(empty)

    folder = tmp_path / "m"
    save_model(folder, build_model("lite"), {})
    config = json.loads((folder / "config.json").read_text())
    config["model"]["preset"] = "original"  # weights of lite, architecture of original
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(UserError, match="model.safetensors"):
        load_model(folder)

    config["model"]["preset"] = "made-up"
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(UserError, match="config.json"):
        load_model(folder)


def test_stride_two_convs_pad_like_keras_same():
    """Keras 'same' pads one pixel before and two after a 5x5 stride-2 conv: a centre-tap kernel
    then picks the odd pixels (symmetric padding would pick the even ones)."""
    from engine.models.layers import SameConv2d

    conv = SameConv2d(1, 1, 5, stride=2)
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[0, 0, 2, 2] = 1
        conv.bias.zero_()
        x = torch.arange(64.0).view(1, 1, 8, 8)
        torch.testing.assert_close(conv(x), x[..., 1::2, 1::2])


def test_save_model_unwraps_ddp_style_wrappers(tmp_path):
    class Wrapper(torch.nn.Module):  # what DistributedDataParallel looks like from outside
        def __init__(self, module):
            super().__init__()
            self.module = module

    model = build_model("lite")
    save_model(tmp_path / "m", Wrapper(model), {"iteration": 1})
    loaded, _ = load_model(tmp_path / "m")
    assert loaded.state_dict().keys() == model.state_dict().keys()
