"""Hostile inputs (issue 15, item 3): model folders, videos, archives and face sets built to exhaust the
server are refused early, with a message naming the file and the limit, and good inputs still work.

`pytest -k "hostile or quota"` runs these.
"""

from __future__ import annotations

import json
import resource
import time
from pathlib import Path

import pytest
import torch

from engine.errors import UserError
from engine.models import build_model, load_model, save_model
from engine.models import store as model_store


def _max_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _rewrite_config(folder: Path, **model_changes) -> None:
    config = json.loads((folder / "config.json").read_text())
    config["model"].update(model_changes)
    (folder / "config.json").write_text(json.dumps(config))


@pytest.fixture
def tiny_model(tmp_path) -> Path:
    folder = tmp_path / "tiny model"
    save_model(folder, build_model("lite"), {"iteration": 3})
    return folder


def test_hostile_model_config_with_2000_identities_is_refused_without_allocating(tiny_model):
    _rewrite_config(tiny_model, preset="original", identities=[f"id{i}" for i in range(2000)])
    rss, start = _max_rss_mb(), time.perf_counter()
    with pytest.raises(UserError, match=r"config\.json is refused: it asks for 2000 identities, over the "
                                        r"limit of 8") as caught:
        load_model(tiny_model)
    assert time.perf_counter() - start < 2.0
    assert _max_rss_mb() - rss < 200
    assert "tiny model" in str(caught.value)


def test_hostile_model_config_over_the_parameter_cap_is_refused_from_shapes_alone(tiny_model):
    # a handful of identities but enormous layers: only the meta-device build can tell
    _rewrite_config(tiny_model, preset="intracoder", resolution=256, width=2048, encoder_dim=4096)
    rss, start = _max_rss_mb(), time.perf_counter()
    with pytest.raises(UserError, match=r"config\.json is refused: it asks for \d+ M parameters, over the "
                                        r"limit of 600 M"):
        load_model(tiny_model)
    assert time.perf_counter() - start < 5.0
    assert _max_rss_mb() - rss < 200


def test_hostile_model_config_over_the_resolution_cap_is_refused(tiny_model):
    _rewrite_config(tiny_model, preset="intracoder", resolution=4096)
    with pytest.raises(UserError, match=r"config\.json is refused: it asks for 4096 px faces, over the limit"):
        load_model(tiny_model)


def test_hostile_model_weights_whose_shapes_differ_are_refused_from_the_header(tiny_model, monkeypatch):
    _rewrite_config(tiny_model, preset="intracoder")  # lite's weights under intracoder's architecture
    built = []
    real_build = model_store.build_model
    monkeypatch.setattr(model_store, "build_model",
                        lambda **kw: built.append(torch.empty(0).device) or real_build(**kw))
    with pytest.raises(UserError, match=r"model\.safetensors does not match the architecture in config\.json "
                                        r"\(\d+ tensors missing"):
        load_model(tiny_model)
    assert built == [torch.device("meta")]  # never built for real

    smaller = build_model("lite", learn_mask=True)  # same names, one decoder layer of another shape
    save_model(tiny_model, smaller, {})
    _rewrite_config(tiny_model, learn_mask=False)
    with pytest.raises(UserError, match=r"of other shapes, e\.g\. decoders\..*in the file"):
        load_model(tiny_model)


def test_hostile_model_checks_let_a_real_tiny_model_load(tiny_model):
    model, meta = load_model(tiny_model)
    assert meta == {"iteration": 3} and model.config["preset"] == "lite"
    assert model_store.check_model(tiny_model)["model"] == model.config


def test_hostile_model_zip_is_refused_by_the_web_import_and_the_project_model_is_kept(tmp_path):
    import zipfile

    from engine.models.folder import summary
    from webapp.projects import Workspace, import_model

    project = Workspace(tmp_path / "ws").create("ann", "p")
    save_model(project.model_dir, build_model("lite"), {"iteration": 3})
    hostile = tmp_path / "hostile"
    save_model(hostile, build_model("lite"), {"iteration": 9})
    _rewrite_config(hostile, preset="original", identities=[f"id{i}" for i in range(2000)])
    archive = tmp_path / "upload.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for name in ("config.json", "model.safetensors"):
            zf.write(hostile / name, f"model/{name}")
    rss, start = _max_rss_mb(), time.perf_counter()
    with pytest.raises(UserError, match=r"config\.json is refused: it asks for 2000 identities, over the limit"):
        import_model(project, archive)
    assert time.perf_counter() - start < 5.0 and _max_rss_mb() - rss < 200
    assert summary(project.model_dir)["iteration"] == 3
