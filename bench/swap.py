"""End-to-end video swap speed with a `lite` model, split by stage; prints one JSON line.

    python bench/swap.py [--videos talk1,talk2,talk3] [--threads 1] [--device cpu]

Each configuration swaps whole talk videos (decode, detect or track, model, colour, blend, encode,
audio copy) into a temporary folder. The model is a randomly initialised `lite`: its speed is that
of a trained one. `stages` are seconds of the main thread per stage (decode: time spent waiting on
the decoding thread, PyAV in-process; encode: libx264 and the muxer, in-process through PyAV);
`ffmpeg_cpu_s` is the CPU time of child processes, which was the ffmpeg decoder's before decoding
moved in-process and is 0 since; `cpu_s` is the process's own CPU time, decoding thread included.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.models import build_model, save_model  # noqa: E402
from engine.swap.pipeline import Swapper  # noqa: E402
from engine.swap.settings import DETECT_SIZE, SwapSettings  # noqa: E402
from engine.swap.video import swap_video  # noqa: E402
from engine.video_reader import probe_video  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

# (name, detect_every, detect_size, blend): the default, then the levers one at a time
CONFIGS = [
    ("default", 1, DETECT_SIZE, "poisson"),
    ("detect-size-320", 1, 320, "poisson"),
    ("detect-every-5", 5, DETECT_SIZE, "poisson"),
    ("fast", 5, 320, "poisson"),
    ("fast-alpha", 5, 320, "alpha"),
]


def cpu(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def run(model_dir: Path, video: Path, device: str, every: int, detect_size: int, blend: str) -> dict:
    swapper = Swapper(model_dir, SwapSettings(blend=blend), device=device, detector="mtcnn",
                      detect_size=detect_size)
    info = probe_video(video)
    with tempfile.TemporaryDirectory() as tmp:
        child0, self0 = cpu(resource.RUSAGE_CHILDREN), cpu(resource.RUSAGE_SELF)
        t0 = time.perf_counter()
        report = swap_video(swapper, video, Path(tmp) / "out.mp4", detect_every=every)  # probes as the CLI does
        seconds = time.perf_counter() - t0
        ffmpeg_cpu, own_cpu = cpu(resource.RUSAGE_CHILDREN) - child0, cpu(resource.RUSAGE_SELF) - self0
    return {"video": video.name, "size": f"{info.width}x{info.height}", "frames": report.frames,
            "faces": report.frames_with_faces, "detections": report.detections, "seconds": round(seconds, 2),
            "fps": round(report.frames / seconds, 2),
            "stages": {k: round(v, 2) for k, v in report.stages.items()},
            "ms_per_frame": {k: round(1000 * v / report.frames, 1) for k, v in report.stages.items()},
            "ffmpeg_cpu_s": round(ffmpeg_cpu, 2), "cpu_s": round(own_cpu, 2)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--videos", default="talk1,talk2,talk3")
    p.add_argument("--configs", default=",".join(c[0] for c in CONFIGS))
    p.add_argument("--threads", type=int, default=1, help="torch threads (default: 1; see docs/benchmarks.md)")
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    wanted = args.configs.split(",")
    result = {"bench": "swap", "model": "lite (random init)", "device": args.device, "torch": torch.__version__,
              "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
              "threads": torch.get_num_threads(), "load_avg_before": round(os.getloadavg()[0], 2), "runs": []}
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(tmp) / "lite"
        torch.manual_seed(0)
        save_model(model_dir, build_model("lite"), {"iteration": 0})
        for name, every, detect_size, blend in CONFIGS:
            if name not in wanted:
                continue
            for video in args.videos.split(","):
                figures = run(model_dir, DATA / "video" / f"{video}.mp4", args.device, every, detect_size, blend)
                result["runs"].append({"config": name, "detect_every": every, "detect_size": detect_size,
                                       "blend": blend, **figures})
    result["load_avg_after"] = round(os.getloadavg()[0], 2)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
