"""The GPU check: training speed per preset in bf16, the GPU default's likeness after 2 and 5 minutes on
the shared pair, and swap fps at 1080p. Driven by bench/gpu_check.sh (read it first); one JSON line.

The GPU machine has no dlib judges (their face models are larger than what travels there), so the
run there trains and keeps the snapshots (fp16 safetensors, split to fit the way back), and
`score` measures them here with the project's own `evaluate`, exactly as bench/likeness.py does.

    python bench/gpu_check.py prepare              # here: face sets of the pair + the clip into .gpu/
    python bench/gpu_check.py device --out $OUT    # there: <= 8 minutes; JSON + snapshot parts in OUT
    python bench/gpu_check.py score DIR            # here: DIR = the returned files; likeness figures
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
STAGE = ROOT / ".gpu"  # git-ignored
TRAVELS = STAGE / "train"  # what the GPU run reads (the device tool's carry: .gpu/wheels, .gpu/train)
LOCAL = STAGE / "local"  # the pair's face sets here (extracted once; evaluate's references and hold-outs)
PAIR = "talk2-carell"
BUDGETS = (2.0, 5.0)
PART_BYTES = 15 * 2**20  # files come back from the device machine at 16 MiB at most


def prepare() -> dict:
    """The shared pair's clip and photos, copied into .gpu/train/data (what travels; ../shared does not):
    the GPU run extracts them with the product's own `extract`, like a user would."""
    from likeness import DATA, PAIRS

    spec = PAIRS[PAIR]
    for part in (spec["video"], spec["people"]):
        target = TRAVELS / "data" / part
        target.parent.mkdir(parents=True, exist_ok=True)
        if (DATA / part).is_dir():
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(DATA / part, target)
        else:
            shutil.copy2(DATA / part, target)
    return {"staged": str(TRAVELS), "wheels_bytes": repack_wheels(STAGE / "wheels"), "travels_mib": travel_mib()}


def repack_wheels(folder: Path) -> int:
    """Recompress the wheels with LZMA (pip's zipfile reads it): PyAV's ffmpeg libraries shrink from 36 MB to
    27 MB, which keeps the tree + carry under the device tool's 64 MiB. -> their bytes after."""
    import zipfile

    for wheel in sorted(folder.glob("*.whl")):
        with zipfile.ZipFile(wheel) as zin:
            if all(info.compress_type == zipfile.ZIP_LZMA for info in zin.infolist()):
                continue
            tmp = wheel.with_suffix(".tmp")
            with zipfile.ZipFile(tmp, "w", zipfile.ZIP_LZMA) as zout:
                for info in zin.infolist():
                    zout.writestr(info, zin.read(info.filename), compress_type=zipfile.ZIP_LZMA)
        tmp.replace(wheel)
    return sum(w.stat().st_size for w in folder.glob("*.whl"))


def travel_mib() -> float:
    """What the device tool sends: the tracked tree plus the carried .gpu folders (limit 64 MiB). Over it,
    move the shipped lite prior aside for the call: the GPU default (intracoder) has no shipped prior."""
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    files = [ROOT / name for name in tracked.decode().split("\0") if name]
    files += [f for carried in (STAGE / "wheels", TRAVELS) for f in carried.rglob("*")]
    mib = round(sum(f.stat().st_size for f in files if f.is_file()) / 2**20, 1)
    if mib > 64:
        print(f"{mib} MiB would travel (limit 64): `mv weights/prior-lite-64.safetensors /tmp/` for the call, "
              "`git checkout weights/` after", file=sys.stderr)
    return mib


def pair_faces() -> tuple[Path, Path, Path]:
    """On the GPU machine: the pair's training splits (extracted there once) and its clip."""
    import likeness

    likeness.DATA = TRAVELS / "data"
    _, _, train_a, train_b = likeness.prepare(Path("/tmp/gpu_check_work"), PAIR)
    return train_a, train_b, likeness.DATA / likeness.PAIRS[PAIR]["video"]


def training_speed(device: str, presets: str) -> dict:
    """bench/train.py's figures per preset (bf16 + channels_last against fp32), batch 16."""
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "train.py"), "--presets",
                          presets, "--batch-size", "16", "--rounds", "3",
                          "--device", device], capture_output=True, text=True, cwd=ROOT, timeout=240)
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    return json.loads(lines[-1]) if lines else {"error": out.stderr[-500:]}


def train_default(device: str, out: Path, budgets: tuple[float, ...]) -> dict:
    """The default recipe for `device` on the pair for max(budgets) minutes; snapshots in fp16 parts."""
    from safetensors.torch import save_file

    from engine.models import load_model
    from engine.train import TrainConfig, train

    folder = Path("/tmp/gpu_check_model")
    shutil.rmtree(folder, ignore_errors=True)
    train_a, train_b, _ = pair_faces()
    config = TrainConfig(faces_a=str(train_a), faces_b=str(train_b), model_dir=str(folder),
                         device=device, iterations=10_000_000, minutes=max(budgets), snapshot_minutes=budgets,
                         save_every=5000, preview_every=0)
    t0 = time.perf_counter()
    result = train(config)
    figures = {"preset": result.model.config["preset"], "iterations": result.iteration,
               "seconds": round(time.perf_counter() - t0, 1), "snapshots": {}}
    for budget in budgets:
        name = f"{budget:g}min"
        model, meta = load_model(folder / "snapshots" / name)
        tensors = {k: v.half().contiguous() for k, v in model.state_dict().items()}
        parts, part, size = [], {}, 0
        for key, tensor in tensors.items():  # split by tensor so that no file passes PART_BYTES
            nbytes = tensor.numel() * 2
            if part and size + nbytes > PART_BYTES:
                parts.append(part)
                part, size = {}, 0
            part[key], size = tensor, size + nbytes
        parts.append(part)
        for i, chunk in enumerate(parts):
            save_file(chunk, str(out / f"{name}-{i}.safetensors"))
        (out / f"{name}.json").write_text(json.dumps({"config": model.config, "meta": meta, "parts": len(parts)}))
        figures["snapshots"][name] = {"iteration": meta["iteration"], "parts": len(parts)}
    return figures


def swap_fps_1080p(device: str, model_dir: Path, frames: int = 60) -> dict:
    """Swapper.swap_image on talk2's frames placed in a 1920x1080 canvas (detection, model, colour, blend)."""
    import cv2
    import numpy as np

    from engine.swap.pipeline import Swapper
    from engine.video_reader import read_frames

    canvas = []
    for _, rgb in read_frames(pair_faces()[2]):
        frame = np.zeros((1080, 1920, 3), np.uint8)
        h, w = rgb.shape[:2]
        scale = min(1080 / h, 1.0)
        small = cv2.resize(rgb, (int(w * scale), int(h * scale)), interpolation=cv2.INTER_AREA)
        y, x = (1080 - small.shape[0]) // 2, (1920 - small.shape[1]) // 2
        frame[y:y + small.shape[0], x:x + small.shape[1]] = small
        canvas.append(frame)
        if len(canvas) == frames:
            break
    swapper = Swapper(model_dir, device=device, detector="mtcnn")
    swapper.swap_image(canvas[0])  # warm-up: kernels, allocator
    t0 = time.perf_counter()
    for frame in canvas[1:]:
        swapper.swap_image(frame)
    seconds = time.perf_counter() - t0
    return {"frames": len(canvas) - 1, "seconds": round(seconds, 2), "fps": round((len(canvas) - 1) / seconds, 1)}


def device_run(out: Path, device: str, budgets: tuple[float, ...], presets: str) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    import torch

    facts = {"device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
             "torch": torch.__version__}
    t0 = time.perf_counter()
    figures = {"bench": "gpu_check", **facts, "train_speed": training_speed(device, presets)}
    figures["likeness_training"] = train_default(device, out, budgets)
    figures["swap_1080p"] = swap_fps_1080p(device, Path("/tmp/gpu_check_model"))
    figures["seconds"] = round(time.perf_counter() - t0, 1)
    (out / "gpu_check.json").write_text(json.dumps(figures))
    return figures


def score(returned: Path) -> dict:
    """Rebuild the returned snapshots as model folders and measure them like bench/likeness.py."""
    from likeness import evaluate_snapshot
    from safetensors.torch import load_file

    from engine.models import build_model, save_model

    figures = json.loads((returned / "gpu_check.json").read_text())
    for name in figures["likeness_training"]["snapshots"]:
        saved = json.loads((returned / f"{name}.json").read_text())
        model = build_model(**saved["config"])
        state = {}
        for i in range(saved["parts"]):
            state.update({k: v.float() for k, v in load_file(str(returned / f"{name}-{i}.safetensors")).items()})
        model.load_state_dict(state)
        folder = LOCAL / "gpu_snapshots" / name
        save_model(folder, model, saved["meta"])
        figures.setdefault("likeness", {})[name] = evaluate_snapshot(LOCAL, PAIR, folder, frames=None)
    return figures


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("mode", choices=("prepare", "device", "score"))
    p.add_argument("dir", nargs="?", type=Path, help="score: the folder of the returned files")
    p.add_argument("--out", type=Path, help="device: where the JSON and snapshot parts go ($OUT)")
    p.add_argument("--device", default="cuda", help="device: cuda, or cpu for a dry run of the script")
    p.add_argument("--budgets", default=",".join(f"{b:g}" for b in BUDGETS),
                   help="device: snapshot marks in minutes (the last one ends the training)")
    p.add_argument("--presets", default="lite,original,dfl-h128,intracoder", help="device: presets to time")
    args = p.parse_args()
    if args.mode == "prepare":
        result = prepare()
    elif args.mode == "device":
        budgets = tuple(float(b) for b in args.budgets.split(","))
        result = device_run(args.out or Path("gpu_check_out"), args.device, budgets, args.presets)
    else:
        result = score(args.dir)
    print(json.dumps(result, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
