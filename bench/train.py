"""Training throughput as users get it: the default (`--precision auto`) against plain float32 and
forced bf16, per preset and batch size, with the layout and compile options beside them.

Prints one JSON line. One iteration is one optimiser step on a batch of A and a batch of B (the
trainer's joint step), so examples/s counts both sides, like faceswap's EGs/sec. Inputs are random:
data loading and augmentation are not measured, only the model's forward, backward and Adam step.
Modes (`--modes`):

- `fp32`: float32, NCHW (plain eager);
- `fp32_cl`: float32, channels_last;
- `bf16_cl`: bf16 autocast, channels_last (what `--precision bf16` trains);
- `auto`: what `train` runs by default: engine.precision's choice (made here with the trainer's own
  probe, from an empty cache unless `--use-cache`) in the trainer's layout (engine.train.trainer.LAYOUT).

Each step is timed on its own and the modes alternate every few steps; a mode's figure is its
fastest step (median beside it), so on a shared machine a neighbour's burst of CPU use costs a
mode some slow steps but not its figure, and every mode gets the same chances at a quiet moment.
`--compile` also times `torch.compile` of the `auto` mode: its start (the first steps) and its
steady step, and after how many seconds of training the start has paid for itself.

    python bench/train.py --presets lite,original --batch-size 8 --threads 2
    ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 python bench/train.py   # bf16 units hidden
"""

from __future__ import annotations

import argparse
import copy
import ctypes
import ctypes.util
import gc
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine import precision  # noqa: E402
from engine.device import pick_device  # noqa: E402
from engine.models import build_model  # noqa: E402
from engine.train.config import TrainConfig  # noqa: E402
from engine.train.loop import adam  # noqa: E402
from engine.train.trainer import LAYOUT, PairForward, pair_probe_key, pair_probe_loss  # noqa: E402


def _libc():
    name = ctypes.util.find_library("c")
    libc = ctypes.CDLL(name) if name else None
    return libc if libc is not None and hasattr(libc, "mallopt") else None


LIBC = _libc()
M_MMAP_THRESHOLD = -3


def set_mmap_threshold(nbytes: int) -> None:
    """glibc allocates blocks above this with mmap and unmaps them on free (fixing it also stops glibc
    from raising it by itself). Memory phases use a small one, so RSS falls when tensors die and
    the next measurement starts from the real level instead of silently reusing freed blocks; timed
    phases use the largest allowed (32 MiB), so steps are not slowed by fresh page faults."""
    if LIBC is not None:
        LIBC.mallopt(M_MMAP_THRESHOLD, nbytes)


def release_free_memory() -> None:
    """Hand blocks that are already free back to the OS, so they do not hide new allocations."""
    gc.collect()
    if LIBC is not None and hasattr(LIBC, "malloc_trim"):
        LIBC.malloc_trim(0)


class PeakMemory:
    """Peak memory above the level at entry: CUDA's allocator counter, or resident set size sampled
    every few milliseconds from /proc on the CPU (Linux)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.peak_bytes = 0

    def __enter__(self) -> PeakMemory:
        set_mmap_threshold(128 * 1024)
        release_free_memory()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base = torch.cuda.memory_allocated(self.device)
        else:
            self.base = self.peak = _rss_bytes()
            self.done = threading.Event()
            self.sampler = threading.Thread(target=self._sample, daemon=True)
            self.sampler.start()
        return self

    def _sample(self) -> None:
        while not self.done.wait(0.005):
            self.peak = max(self.peak, _rss_bytes())

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak_bytes = torch.cuda.max_memory_allocated(self.device) - self.base
        else:
            self.done.set()
            self.sampler.join()
            self.peak_bytes = max(self.peak, _rss_bytes()) - self.base
        set_mmap_threshold(32 * 2**20)


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


MODES = ("fp32", "fp32_cl", "bf16_cl", "auto")


class Run:
    """One mode of one preset: its own model copy, Adam and fixed random batches."""

    def __init__(self, template: torch.nn.Module, batch_size: int, device: torch.device, bf16: bool,
                 layout: torch.memory_format, compiled: bool = False):
        self.device = device
        self.model = copy.deepcopy(template).to(device, memory_format=layout).train()
        pair = PairForward(self.model)  # the trainer's forward: one encoder pass over A and B
        self.pair = torch.compile(pair) if compiled else pair
        self.optimizer = adam(self.model.parameters(), TrainConfig.lr, TrainConfig.beta1)
        self.autocast = precision.Choice("bf16" if bf16 else "fp32", "bench").autocast(device)
        r = template.resolution
        g = torch.Generator().manual_seed(0)
        self.inputs = [torch.rand(batch_size, 3, r, r, generator=g).to(device, memory_format=layout)
                       for _ in range(2)]
        self.targets = [torch.rand(batch_size, 3, r, r, generator=g).to(device) for _ in range(2)]

    def step(self) -> None:
        with self.autocast:
            outputs = [rgb for rgb, _ in self.pair(*self.inputs)]
        loss = sum(F.l1_loss(out.float(), target) for out, target in zip(outputs, self.targets, strict=True))
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()

    def step_times(self, iterations: int) -> list[float]:
        """Seconds of each of `iterations` steps (the device is synchronised around every one)."""
        return [precision.timed(self.step, self.device) for _ in range(iterations)]


def prime(device: torch.device) -> None:
    """One step in each mode on a tiny model, so one-time costs (oneDNN kernel setup, thread pools,
    CUDA context) are not charged to the first preset measured."""
    template = build_model("lite")
    for bf16 in (False, True):
        Run(template, 1, device, bf16, torch.channels_last).step_times(1)


def auto_choice(template: torch.nn.Module, batch_size: int, device: torch.device) -> tuple[precision.Choice, float]:
    """What `train` would pick for this network here, with the trainer's own probe; and its seconds."""
    model = copy.deepcopy(template).to(device, memory_format=LAYOUT).train()
    probe = precision.forward_backward_probe(lambda: pair_probe_loss(model, batch_size, device), model, device)
    start = time.perf_counter()
    choice = precision.choose("auto", device, probe=probe, network=pair_probe_key(model, batch_size))
    return choice, time.perf_counter() - start


def settings(mode: str, choice: precision.Choice) -> tuple[bool, torch.memory_format]:
    """(bf16, layout) of a mode."""
    return {"fp32": (False, torch.contiguous_format), "fp32_cl": (False, torch.channels_last),
            "bf16_cl": (True, torch.channels_last), "auto": (choice.bf16, LAYOUT)}[mode]


def measure(preset: str, batch_size: int, device: torch.device, warmup: int, iters: int, rounds: int,
            modes: tuple[str, ...], compiled: bool) -> dict:
    torch.manual_seed(0)
    template = build_model(preset)
    choice, probe_s = auto_choice(template, batch_size, device)
    result: dict = {"preset": preset, "batch_size": batch_size, "auto_precision": choice.precision,
                    "auto_reason": choice.reason, "probe_s": round(probe_s, 1)}
    runs = {}
    for mode in modes:
        with PeakMemory(device) as memory:
            runs[mode] = Run(template, batch_size, device, *settings(mode, choice))
            runs[mode].step_times(warmup)
        result[f"{mode}_peak_mb"] = round(memory.peak_bytes / 2**20)
    if compiled:
        start = time.perf_counter()
        runs["auto_compiled"] = Run(template, batch_size, device, *settings("auto", choice), compiled=True)
        runs["auto_compiled"].step_times(max(warmup, 2))  # the first calls compile (forward, then backward)
        result["compile_start_s"] = round(time.perf_counter() - start, 1)
    times: dict[str, list[float]] = {mode: [] for mode in runs}
    for _ in range(rounds):
        for mode, run in runs.items():
            times[mode] += run.step_times(iters)
    examples = 2 * batch_size  # one batch of A and one of B per step
    for mode, seconds in times.items():
        result[f"{mode}_eg_s"] = round(examples / min(seconds), 2)
        result[f"{mode}_median_eg_s"] = round(examples / statistics.median(seconds), 2)
    if "auto" in times and "fp32" in times:
        best = min(min(times[m]) for m in ("fp32", "fp32_cl", "bf16_cl") if m in times)
        result["auto_vs_fp32"] = round(min(times["fp32"]) / min(times["auto"]), 2)
        result["auto_vs_fastest"] = round(best / min(times["auto"]), 2)
    if compiled:
        saved = min(times["auto"]) - min(times["auto_compiled"])  # seconds a compiled step saves
        result["compiled_vs_auto"] = round(min(times["auto"]) / min(times["auto_compiled"]), 2)
        result["compile_pays_back_s"] = round(result["compile_start_s"] / saved) if saved > 0 else None
    return result


def machine(device: torch.device) -> dict:
    info = {"device": str(device), "torch": torch.__version__, "threads": torch.get_num_threads()}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    else:
        info["cpu"] = precision.cpu_name()
        info["cores"] = os.cpu_count()
        info["bf16_units"], why = precision.cpu_bf16_units()
        info["bf16_units_note"] = why
        info["caps"] = {k: os.environ.get(k) for k in ("ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY") if os.environ.get(k)}
    return info


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--presets", default="lite,original", help="comma-separated preset names")
    p.add_argument("--batch-size", default="8", help="faces per side per step; comma-separated for several")
    p.add_argument("--iters", type=int, default=2, help="timed steps per mode per round")
    p.add_argument("--warmup", type=int, default=3, help="untimed iterations first (kernel choice, allocator)")
    p.add_argument("--rounds", type=int, default=8, help="rounds of alternating modes")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--modes", default=",".join(MODES), help=f"comma-separated, of {', '.join(MODES)}")
    p.add_argument("--threads", type=int, help="torch threads (default: torch's own choice)")
    p.add_argument("--compile", action="store_true", help="also time torch.compile of the auto mode")
    p.add_argument("--use-cache", action="store_true",
                   help="let `auto` read this machine's cached probe (default: probe afresh, like a first run)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if not args.use_cache:
        os.environ[precision.CACHE_ENV] = tempfile.mkdtemp(prefix="bench-train-cache-")
    device = pick_device(args.device)
    modes = tuple(args.modes.split(","))
    prime(device)
    load = os.getloadavg()[0]
    results = [measure(preset, int(bs), device, args.warmup, args.iters, args.rounds, modes, args.compile)
               for preset in args.presets.split(",") for bs in args.batch_size.split(",")]
    print(json.dumps({"bench": "train", **machine(device), "warmup": args.warmup, "iters": args.iters,
                      "rounds": args.rounds, "load_start": round(load, 2), "load_end": round(os.getloadavg()[0], 2),
                      "results": results}))


if __name__ == "__main__":
    main()
