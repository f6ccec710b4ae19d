"""`--precision auto` picks what is fastest here: by capability where that is certain, else by a timed,
cached probe; forced choices are obeyed; what ran is recorded and shown."""

from __future__ import annotations

import json

import pytest
import torch

from engine import precision
from engine.cli import main as cli_main
from engine.errors import UserError
from engine.models.folder import summary
from engine.train import TrainConfig, train

CPU = torch.device("cpu")


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv(precision.CACHE_ENV, str(tmp_path / "cache"))
    for name in ("ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path / "cache" / "precision.json"


def with_flags(monkeypatch, *flags: str) -> None:
    monkeypatch.setattr(precision, "_cpu_flags", lambda: {"sse2", "avx2", "fma", *flags})


class Probe:
    """A fake step timer: seconds per step in each mode, and how often it was asked."""

    def __init__(self, fp32: float, bf16: float) -> None:
        self.seconds = {False: fp32, True: bf16}
        self.calls = 0

    def __call__(self, bf16: bool) -> float:
        self.calls += 1
        return self.seconds[bf16]


def never(bf16: bool) -> float:
    raise AssertionError("the probe must not run here")


def test_a_cpu_without_bf16_units_trains_in_float32_without_probing(cache, monkeypatch):
    with_flags(monkeypatch)
    choice = precision.choose("auto", CPU, probe=never, network="lite")
    assert choice.precision == "fp32" and not choice.bf16
    assert choice.describe() == "float32: this CPU has no bf16 units (no avx512_bf16 or amx_bf16)"
    assert not cache.exists()


@pytest.mark.parametrize("name, value", [("ONEDNN_MAX_CPU_ISA", "AVX2"), ("ATEN_CPU_CAPABILITY", "avx2")])
def test_hidden_bf16_units_count_as_none(cache, monkeypatch, name, value):
    with_flags(monkeypatch, "avx512_bf16")
    monkeypatch.setenv(name, value)
    choice = precision.choose("auto", CPU, probe=never, network="lite")
    assert choice.precision == "fp32" and name in choice.reason


def test_bf16_units_measured_faster_win_and_the_answer_is_cached(cache, monkeypatch):
    with_flags(monkeypatch, "amx_bf16")
    probe = Probe(fp32=0.20, bf16=0.10)
    choice = precision.choose("auto", CPU, probe=probe, network="lite 64px batch 8")
    assert choice.precision == "bf16" and choice.describe() == "bf16: measured 2.0x faster than float32 here"
    assert probe.calls == 2 * (precision.PROBE_WARMUP + precision.PROBE_STEPS)
    assert choice.measured == {"fp32": 0.20, "bf16": 0.10}
    # a second start of the same network on this machine reads the cache: no probe
    again = precision.choose("auto", CPU, probe=never, network="lite 64px batch 8")
    assert again.precision == "bf16" and "cached" in again.reason
    # another network is probed on its own
    other = Probe(fp32=0.10, bf16=0.30)
    assert precision.choose("auto", CPU, probe=other, network="original 64px batch 8").precision == "fp32"
    assert other.calls > 0
    assert len(json.loads(cache.read_text())) == 2


def test_bf16_units_measured_slower_or_level_lose_to_float32(cache, monkeypatch):
    with_flags(monkeypatch, "avx512_bf16")
    slower = precision.choose("auto", CPU, probe=Probe(fp32=0.1, bf16=0.96), network="a")
    assert slower.describe() == "float32: bf16 measured 9.6x slower than float32 here"
    level = precision.choose("auto", CPU, probe=Probe(fp32=0.1, bf16=0.098), network="b")
    assert level.precision == "fp32" and "no faster" in level.reason  # within the 5 % margin: the exact one


def test_the_cache_key_holds_the_capability_caps_and_threads(cache, monkeypatch):
    plain = precision.machine_key("lite")
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_BF16")
    assert precision.machine_key("lite") != plain
    assert f"{torch.get_num_threads()} threads" in plain and precision.cpu_name() in plain


def test_a_damaged_cache_is_probed_again(cache, monkeypatch):
    with_flags(monkeypatch, "avx512_bf16")
    cache.parent.mkdir(parents=True)
    cache.write_text("{not json")
    probe = Probe(fp32=0.2, bf16=0.1)
    assert precision.choose("auto", CPU, probe=probe, network="lite").precision == "bf16" and probe.calls
    assert json.loads(cache.read_text())


@pytest.mark.parametrize("forced", ["bf16", "fp32"])
def test_a_forced_precision_is_obeyed_without_a_probe(cache, monkeypatch, forced):
    with_flags(monkeypatch)
    choice = precision.choose(forced, CPU, probe=never)
    assert choice.precision == forced and "asked for" in choice.reason


def test_an_unknown_precision_is_refused_with_the_allowed_values(capsys, tmp_path):
    with pytest.raises(UserError, match="auto, bf16, fp32"):
        precision.choose("fp16", CPU)
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["train", "--model", str(tmp_path / "m"), "--precision", "fp16"])
    assert exit_info.value.code == 2
    assert "unknown precision 'fp16': use one of auto, bf16, fp32" in capsys.readouterr().err


def test_the_cli_flag_and_its_alias_reach_the_config():
    from engine.cli import build_parser
    from engine.train.command import config_from_args

    parser = build_parser()
    base = ["train", "--model", "m", "--faces-a", "a", "--faces-b", "b"]
    assert config_from_args(parser.parse_args(base)).precision == "auto"
    assert config_from_args(parser.parse_args([*base, "--precision", "bf16"])).precision == "bf16"
    assert config_from_args(parser.parse_args([*base, "--no-bf16"])).precision == "fp32"
    color = parser.parse_args(["train-color", "--model", "m", "--precision", "fp32"])
    assert color.precision == "fp32"


def test_a_run_says_and_records_what_it_computed_in(faceset_a, faceset_b, tmp_path, cache, monkeypatch):
    """A real lite training on real faces: the probe times its own step, the first event says the choice,
    config.json records it, and a resume reads the cache instead of probing again."""
    with_flags(monkeypatch, "avx512_bf16")
    calls = []
    real_probe = precision.run_probe
    monkeypatch.setattr(precision, "run_probe", lambda probe: calls.append(1) or real_probe(probe))
    config = TrainConfig(faces_a=str(faceset_a), faces_b=str(faceset_b), model_dir=str(tmp_path / "m"),
                         preset="lite", device="cpu", batch_size=4, iterations=2, save_every=2, preview_every=0)
    events = []
    assert train(config, listeners=[events.append]).status == "done"
    first = events[0]
    assert first.step == 1 and first.message.startswith(("bf16: measured", "float32: bf16 measured"))
    saved = summary(tmp_path / "m")
    assert saved["precision"] in ("bf16", "fp32") and first.message.endswith(saved["precision_reason"])
    assert calls == [1]
    events.clear()
    from dataclasses import replace

    assert train(replace(config, resume=True, iterations=3), listeners=[events.append]).status == "done"
    assert calls == [1] and "cached" in events[0].message

    forced = replace(config, model_dir=str(tmp_path / "f"), precision="fp32")
    train(forced)
    assert summary(tmp_path / "f")["precision_reason"] == "asked for (--precision)"


def fake_gpu(monkeypatch, bf16_units: bool) -> torch.device:
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16_units)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a, **k: "NVIDIA H200")
    return torch.device("cuda")


def test_a_gpu_with_bf16_units_is_probed_too_and_keyed_by_its_name(cache, monkeypatch):
    # on an H200 the small presets ran bf16 5-11 % slower than float32 (docs/benchmarks.md "GPU check")
    gpu = fake_gpu(monkeypatch, bf16_units=True)
    choice = precision.choose("auto", gpu, probe=Probe(fp32=0.010, bf16=0.011), network="lite 64px batch 8")
    assert choice.precision == "fp32" and "bf16 measured" in choice.reason
    faster = precision.choose("auto", gpu, probe=Probe(fp32=0.015, bf16=0.010), network="dfl-h128 128px batch 8")
    assert faster.precision == "bf16" and "1.5x faster" in faster.reason
    keys = list(json.loads(cache.read_text()))
    assert all(key.startswith("NVIDIA H200|") for key in keys) and len(keys) == 2
    assert precision.choose("auto", gpu, probe=never, network="lite 64px batch 8").precision == "fp32"  # cached


def test_a_gpu_without_bf16_units_or_nothing_to_time_decides_by_capability(cache, monkeypatch):
    without = precision.choose("auto", fake_gpu(monkeypatch, bf16_units=False), probe=never)
    assert without.precision == "fp32" and without.reason == "NVIDIA H200 has no bf16 units"
    assert precision.choose("auto", fake_gpu(monkeypatch, bf16_units=True)).precision == "bf16"
    assert not cache.exists()
