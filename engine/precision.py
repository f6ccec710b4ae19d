"""Which number format a run computes in: bf16 autocast where it is faster here, float32 elsewhere.

bf16 pays only on hardware with bf16 units (Ampere+ GPUs; CPUs with AVX512-BF16 or AMX). On other
CPUs PyTorch emulates it and a `lite` training step is about 10x slower than in float32 (measured on
a 2-core AVX2 EPYC, docs/benchmarks.md "Precision"). So `auto` decides by evidence:

- CUDA: float32 without bf16 units; with them, the same timed probe as below (on an H200 the small
  presets are launch-bound and bf16 ran 5-11 % slower than float32, dfl-h128 1.5x faster:
  docs/benchmarks.md "GPU check"), bf16 when there is nothing to time;
- a CPU without bf16 units (no avx512_bf16/amx_bf16 in /proc/cpuinfo, or oneDNN/ATen capped below
  them by ONEDNN_MAX_CPU_ISA/ATEN_CPU_CAPABILITY): float32, certain, no probe;
- a CPU with them: a timed probe of the run's own training step in both modes (seconds), cached per
  machine, torch version, thread count and network (`cache_file()`), so it runs once.

`Choice` says what was picked and why, in a sentence the CLI and the page show.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

import torch

from engine.atomic import write_json
from engine.errors import UserError

log = logging.getLogger(__name__)

PRECISIONS = ("auto", "bf16", "fp32")
NAMES = {"bf16": "bf16", "fp32": "float32"}
BF16_FLAGS = ("avx512_bf16", "amx_bf16")
MARGIN = 1.05  # bf16 must beat float32 by this factor in the probe: a tie goes to float32 (exact, portable)
PROBE_WARMUP = 1  # untimed steps per mode first (oneDNN picks and builds its kernels)
PROBE_STEPS = 3  # timed steps per mode, alternating; each mode's figure is its fastest step
CACHE_ENV = "FACESWAP_STUDIO_CACHE"
# oneDNN ISA caps that stop below AVX512_CORE_BF16 (its own names, any case)
_ONEDNN_NO_BF16 = ("sse41", "avx", "avx2", "avx2_vnni", "avx2_vnni_2", "avx512_core", "avx512_core_vnni")


@dataclass(frozen=True)
class Choice:
    """The precision a run computes in (`bf16` or `fp32`) and why, in words."""

    precision: str
    reason: str
    measured: dict[str, float] | None = None  # probe seconds per step by mode, when a probe decided

    @property
    def bf16(self) -> bool:
        return self.precision == "bf16"

    def autocast(self, device: torch.device) -> AbstractContextManager:
        return torch.autocast(device.type, dtype=torch.bfloat16, enabled=self.bf16)

    def describe(self) -> str:
        """"float32: this CPU has no bf16 units": the line the CLI prints and the page shows."""
        return f"{NAMES[self.precision]}: {self.reason}"


def check(name: str) -> str:
    """`name` when it is one of PRECISIONS; UserError listing them otherwise."""
    if name not in PRECISIONS:
        raise UserError(f"unknown precision {name!r}: use one of {', '.join(PRECISIONS)}")
    return name


def cpu_bf16_units() -> tuple[bool, str]:
    """(whether this process can use the CPU's bf16 units, why not in words when it cannot)."""
    flags = _cpu_flags()
    if flags is not None and not any(f in flags for f in BF16_FLAGS):
        return False, "this CPU has no bf16 units (no avx512_bf16 or amx_bf16)"
    isa = os.environ.get("ONEDNN_MAX_CPU_ISA", "").strip().lower()
    if isa in _ONEDNN_NO_BF16:
        return False, f"ONEDNN_MAX_CPU_ISA={isa} hides this CPU's bf16 units"
    aten = os.environ.get("ATEN_CPU_CAPABILITY", "").strip().lower()
    if aten in ("default", "avx2", "avx", "sse"):
        return False, f"ATEN_CPU_CAPABILITY={aten} hides this CPU's bf16 units"
    if flags is None:
        return True, "unknown CPU flags"
    return True, ""


def choose(requested: str, device: torch.device, *, probe: Callable[[bool], float] | None = None,
           network: str = "") -> Choice:
    """The precision to run in. `requested`: auto, bf16 or fp32. `probe(bf16)` times one training step
    in that mode (seconds); it runs only for `auto` on a CPU with bf16 units and no cached answer for
    `network` (a key naming the architecture, its size and the batch); on a GPU with bf16 units too."""
    check(requested)
    if requested != "auto":
        return Choice(requested, "asked for (--precision)")
    if device.type == "cuda":
        gpu = torch.cuda.get_device_name(device)
        if not torch.cuda.is_bf16_supported():
            return Choice("fp32", f"{gpu} has no bf16 units")
        if probe is None:
            return Choice("bf16", f"{gpu} has bf16 units")
        return _probed(probe, machine_key(network, device))
    if device.type != "cpu":
        return Choice("fp32", f"no bf16 probe for {device.type} devices")
    units, why = cpu_bf16_units()
    if not units:
        return Choice("fp32", why)
    if probe is None:
        return Choice("fp32", "this CPU has bf16 units, but nothing to time them on")
    return _probed(probe, machine_key(network))


def _probed(probe: Callable[[bool], float], key: str) -> Choice:
    """The cached answer for `key`, else the probe's (then cached)."""
    cached = _read_cache().get(key)
    if cached:
        return _decide(cached, cached_note=True)
    measured = run_probe(probe)
    _write_cache(key, measured)
    return _decide(measured, cached_note=False)


def run_probe(probe: Callable[[bool], float]) -> dict[str, float]:
    """{mode: fastest seconds per step}: warm-up steps in each mode, then alternating timed steps, so
    a neighbour's burst of CPU use costs both modes alike."""
    for _ in range(PROBE_WARMUP):
        for bf16 in (False, True):
            probe(bf16)
    times: dict[str, list[float]] = {"fp32": [], "bf16": []}
    for _ in range(PROBE_STEPS):
        for bf16 in (False, True):
            times["bf16" if bf16 else "fp32"].append(probe(bf16))
    return {mode: min(seconds) for mode, seconds in times.items()}


def _decide(measured: dict[str, float], cached_note: bool) -> Choice:
    ratio = measured["fp32"] / measured["bf16"]  # > 1: bf16 faster
    when = " (measured once on this machine, cached)" if cached_note else ""
    if ratio >= MARGIN:
        return Choice("bf16", f"measured {ratio:.1f}x faster than float32 here{when}", measured)
    slower = 1 / ratio
    text = f"{slower:.1f}x slower" if slower >= MARGIN else "no faster"
    return Choice("fp32", f"bf16 measured {text} than float32 here{when}", measured)


def machine_key(network: str, device: torch.device | None = None) -> str:
    """What a probe's answer depends on: CPU, torch, threads, the capability caps and the network; on
    a GPU, its name, torch and the network."""
    if device is not None and device.type == "cuda":
        return "|".join((torch.cuda.get_device_name(device), f"torch {torch.__version__}", network))
    caps = ",".join(f"{k}={os.environ.get(k, '')}" for k in ("ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY"))
    return "|".join((cpu_name(), f"torch {torch.__version__}", f"{torch.get_num_threads()} threads", caps, network))


def cache_dir() -> Path:
    """The per-machine cache folder: $FACESWAP_STUDIO_CACHE, else $XDG_CACHE_HOME/faceswap-studio, else
    ~/.cache/faceswap-studio (this probe's answers, the converted identity network)."""
    root = os.environ.get(CACHE_ENV)
    if not root:
        root = os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "faceswap-studio")
    return Path(root)


def cache_file() -> Path:
    """precision.json in `cache_dir()`."""
    return cache_dir() / "precision.json"


def _read_cache() -> dict:
    try:
        data = json.loads(cache_file().read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_cache(key: str, measured: dict[str, float]) -> None:
    """Best effort: a cache that cannot be written means the probe runs again next time, nothing worse."""
    data = _read_cache()
    data[key] = {k: round(v, 6) for k, v in measured.items()}
    try:
        write_json(cache_file(), data)
    except OSError as err:
        log.warning("could not cache the precision probe in %s (%s): it will run again", cache_file(), err)


def cpu_name() -> str:
    """The CPU's model name (Linux /proc/cpuinfo), else what platform says."""
    for line in _cpuinfo_lines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _cpu_flags() -> set[str] | None:
    for line in _cpuinfo_lines():
        if line.startswith(("flags", "Features")):
            return set(line.split(":", 1)[1].split())
    return None


def _cpuinfo_lines() -> list[str]:
    try:
        return Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return []


def forward_backward_probe(forward: Callable[[], torch.Tensor], module: torch.nn.Module,
                           device: torch.device) -> Callable[[bool], float]:
    """A probe for `choose`: seconds of `forward()` (a scalar) and its backward in the mode asked, with
    `module`'s gradients dropped after, so the run it precedes starts untouched."""

    def probe(bf16: bool) -> float:
        autocast = Choice("bf16" if bf16 else "fp32", "probe").autocast(device)

        def step() -> None:
            with autocast:
                loss = forward()
            loss.float().backward()

        try:
            return timed(step, device)
        finally:
            module.zero_grad(set_to_none=True)

    return probe


def timed(step: Callable[[], object], device: torch.device) -> float:
    """Seconds one call of `step` takes, with the device synchronised around it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start
