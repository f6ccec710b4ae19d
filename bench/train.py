"""Training throughput: bf16 autocast + channels_last against plain fp32, per preset and batch size.

Prints one JSON line. One iteration is one optimiser step on a batch of A and a batch of B (the
trainer's joint step), so examples/s counts both sides, like faceswap's EGs/sec. Inputs are random:
data loading and augmentation are not measured, only the model's forward, backward and Adam step.
Each step is timed on its own and the modes alternate every few steps; a mode's figure is its
fastest step (median beside it), so on a shared machine a neighbour's burst of CPU use costs a
mode some slow steps but not its figure, and both modes get the same chances at a quiet moment.

    python bench/train.py --presets lite,original --batch-size 8,16 --iters 2 --rounds 8
"""

from __future__ import annotations

import argparse
import copy
import ctypes
import ctypes.util
import gc
import json
import os
import platform
import statistics
import sys
import threading
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.device import autocast_for, pick_device  # noqa: E402
from engine.models import build_model  # noqa: E402
from engine.train.config import TrainConfig  # noqa: E402
from engine.train.loop import adam  # noqa: E402
from engine.train.trainer import PairForward  # noqa: E402


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


class Run:
    """One mode of one preset: its own model copy, Adam and fixed random batches."""

    def __init__(self, template: torch.nn.Module, batch_size: int, device: torch.device, fast: bool):
        self.fast, self.device = fast, device
        layout = torch.channels_last if fast else torch.contiguous_format
        self.model = copy.deepcopy(template).to(device, memory_format=layout).train()
        self.pair = PairForward(self.model)  # the trainer's forward: one encoder pass over A and B
        self.optimizer = adam(self.model.parameters(), TrainConfig.lr, TrainConfig.beta1)
        self.autocast = autocast_for(device, fast)
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
        times = []
        for _ in range(iterations):
            _sync(self.device)
            start = time.perf_counter()
            self.step()
            _sync(self.device)
            times.append(time.perf_counter() - start)
        return times


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def prime(device: torch.device) -> None:
    """One step in each mode on a tiny model, so one-time costs (oneDNN kernel setup, thread pools,
    CUDA context) are not charged to the first preset measured."""
    template = build_model("lite")
    for fast in (False, True):
        Run(template, 1, device, fast).step_times(1)


def measure(preset: str, batch_size: int, device: torch.device, warmup: int, iters: int, rounds: int) -> dict:
    torch.manual_seed(0)
    template = build_model(preset)
    result: dict = {"preset": preset, "batch_size": batch_size}
    runs = {}
    for mode, fast in (("fp32", False), ("bf16_channels_last", True)):
        with PeakMemory(device) as memory:
            runs[mode] = Run(template, batch_size, device, fast)
            runs[mode].step_times(warmup)
        result[f"{mode}_peak_mb"] = round(memory.peak_bytes / 2**20)
    times: dict[str, list[float]] = {mode: [] for mode in runs}
    for _ in range(rounds):
        for mode, run in runs.items():
            times[mode] += run.step_times(iters)
    examples = 2 * batch_size  # one batch of A and one of B per step
    for mode, seconds in times.items():
        result[f"{mode}_eg_s"] = round(examples / min(seconds), 2)
        result[f"{mode}_median_eg_s"] = round(examples / statistics.median(seconds), 2)
    result["speedup"] = round(min(times["fp32"]) / min(times["bf16_channels_last"]), 2)
    result["median_speedup"] = round(statistics.median(times["fp32"]) / statistics.median(times["bf16_channels_last"]), 2)
    return result


def machine(device: torch.device) -> dict:
    info = {"device": str(device), "torch": torch.__version__, "threads": torch.get_num_threads()}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    else:
        info["cpu"] = _cpu_name() or platform.processor()
        info["cores"] = os.cpu_count()
    return info


def _cpu_name() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--presets", default="lite,original", help="comma-separated preset names")
    p.add_argument("--batch-size", default="8", help="faces per side per step; comma-separated for several")
    p.add_argument("--iters", type=int, default=2, help="timed steps per mode per round")
    p.add_argument("--warmup", type=int, default=3, help="untimed iterations first (kernel choice, allocator)")
    p.add_argument("--rounds", type=int, default=8, help="rounds of alternating modes")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    args = p.parse_args(argv)
    device = pick_device(args.device)
    prime(device)
    results = [measure(preset, int(bs), device, args.warmup, args.iters, args.rounds)
               for preset in args.presets.split(",") for bs in args.batch_size.split(",")]
    print(json.dumps({"bench": "train", **machine(device), "warmup": args.warmup, "iters": args.iters,
                      "rounds": args.rounds, "results": results}))


if __name__ == "__main__":
    main()
