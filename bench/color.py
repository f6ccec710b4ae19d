"""Does the colour network beat the classical path? Held-out faces, PSNR/SSIM, LAB colour gaps, a grid.

Every 5th face of each face set (A = talk2.mp4 frames, B = Carell photos) is held out; a `lite` swap
model and then its colour network train on the rest. On the held-out faces three ways of turning the
model's 64 px face into a 128 px face in the destination's colours are compared:

    reinhard  bicubic upscale + Reinhard LAB mean/std transfer (`--color reinhard`, the old default)
    hist      bicubic upscale + RGB histogram matching (`--color hist`)
    net       the colour network (`--color net`)

Reconstruction: input = the model's own-identity reconstruction (A->A, B->B) of a held-out face, the
destination = that face; PSNR and SSIM (skimage) against the real face at 128 px, over the face region
(`face_region_mask` > 0.5: what the swap pastes). Swap: A's held-out faces rendered by B's decoder
(a2b: the destination is a talk2 frame, the colour net uses head A), and B's by A's (b2a); the figure is
the distance between the LAB means of the result and of the destination face under the face mask
(Reinhard matches these means by construction, so it is the bar, not a rival). The grid
(destination | raw swap | reinhard | hist | net, a2b rows then b2a rows) goes to --grid.

The swap model is trained once per --work folder and reused; each --name trains its own colour net
in WORK/color-NAME, so tries of colour-net settings compare on the same swap model. One JSON line.

    python -m engine extract --detector mtcnn --out WORK/talk2 ../shared/data/video/talk2.mp4
    python -m engine extract --detector mtcnn --out WORK/carell ../shared/data/people/carell
    nice -n 10 python bench/color.py --work WORK --name base
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from skimage import color as skcolor
from skimage.metrics import structural_similarity

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.atomic import write_image  # noqa: E402
from engine.faces.crops import center_crop_batch  # noqa: E402
from engine.faces.faceset import FaceSet, face_count  # noqa: E402
from engine.faces.mask import face_region_mask  # noqa: E402
from engine.models import is_model_dir, load_color_net, load_model, save_model  # noqa: E402
from engine.models.colornet import pair_stats  # noqa: E402
from engine.swap.color import correct_color  # noqa: E402
from engine.train import ColorConfig, TrainConfig, train, train_color  # noqa: E402

METHODS = ("reinhard", "hist", "net")
GRID_ROWS = 3  # faces per direction in the grid


def split(source: Path, out: Path, every: int) -> tuple[int, np.ndarray]:
    """Write `source` without every `every`-th face as a new face set; -> (faces kept, held-out indices)."""
    src = FaceSet(source)
    held = np.arange(every - 1, len(src), every)
    if face_count(out) == 0:
        dst = FaceSet(out, size=src.size, coverage=src.coverage, create=True)
        images = src.load_images()
        for i, entry in enumerate(src.entries):
            if i % every != every - 1:
                dst.add(dict(entry), images[i])
        dst.detector = src.detector
        dst.save()
    return len(FaceSet(out)), held


def train_color_net(swap_dir: Path, folder: Path, config: dict, faces: tuple[Path, Path]) -> tuple[float, dict]:
    """A fresh colour net for a copy of the swap model in `folder`; -> (seconds, final losses)."""
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    save_model(folder, *load_model(swap_dir))  # the swap model alone: weights, architecture, meta
    cfg = ColorConfig(model_dir=str(folder), faces_a=str(faces[0]), faces_b=str(faces[1]), device="cpu",
                      preview_every=0, save_every=config["iterations"], report_every=10, **config)
    t0 = time.perf_counter()
    result = train_color(cfg)
    return time.perf_counter() - t0, {"loss_a": result.loss_a, "loss_b": result.loss_b}


def crops(faceset: Path, indices: np.ndarray, size: int, coverage: float) -> torch.Tensor:
    fs = FaceSet(faceset)
    faces = torch.from_numpy(fs.load_images()[indices]).permute(0, 3, 1, 2).contiguous()
    return center_crop_batch(faces, resolution=size, src_coverage=fs.coverage, model_coverage=coverage)


def to_u8(x: torch.Tensor) -> np.ndarray:
    return (x.clamp(0, 1) * 255 + 0.5).to(torch.uint8).permute(0, 2, 3, 1).numpy()


def upscale(face: np.ndarray, size: int) -> np.ndarray:
    return cv2.resize(face, (size, size), interpolation=cv2.INTER_CUBIC)


class Judge:
    """The figures: PSNR/SSIM over the face region, LAB-mean distance under the face mask."""

    def __init__(self, size: int, coverage: float) -> None:
        self.mask = face_region_mask(size, coverage)
        self.inside = self.mask > 0.5

    def psnr(self, out: np.ndarray, real: np.ndarray) -> float:
        mse = np.mean((out[self.inside].astype(np.float64) - real[self.inside]) ** 2)
        return float(10 * np.log10(255.0**2 / max(mse, 1e-10)))

    def ssim(self, out: np.ndarray, real: np.ndarray) -> float:
        _, full = structural_similarity(out, real, channel_axis=-1, data_range=255, full=True)
        return float(full.mean(axis=-1)[self.inside].mean())

    def lab_gap(self, out: np.ndarray, destination: np.ndarray) -> float:
        w = self.mask[..., None]
        means = [(skcolor.rgb2lab(img) * w).sum(axis=(0, 1)) / w.sum() for img in (out, destination)]
        return float(np.linalg.norm(means[0] - means[1]))


def render(model, net, small: torch.Tensor, side: str, head: str, low_mask: np.ndarray, size: int) -> dict:
    """The model's `side` faces for destinations `small` -> {method: uint8 faces at `size`} + raw."""
    with torch.inference_mode():
        generated = model(small, side)[0].float().clamp(0, 1)
        stats = pair_stats(generated, small, torch.from_numpy(low_mask)) if net.condition else None
        net_out = net(generated, head, stats)
    gen_u8, dst_u8 = to_u8(generated), to_u8(small)
    out = {"raw": np.stack([upscale(g, size) for g in gen_u8]), "net": to_u8(net_out)}
    for mode in ("reinhard", "hist"):
        out[mode] = np.stack([upscale(correct_color(g, d, low_mask, mode), size) for g, d in zip(gen_u8, dst_u8,
                                                                                                 strict=True)])
    return out


def evaluate(work: Path, folder: Path, held: dict[str, np.ndarray], grid_path: Path | None) -> dict:
    model, _ = load_model(folder)
    net, _ = load_color_net(folder)
    coverage, low = model.coverage, model.resolution
    high = low * net.scale
    judge, low_mask = Judge(high, coverage), face_region_mask(low, coverage)
    sets = {"a": work / "talk2", "b": work / "carell"}
    figures: dict = {"reconstruction": {}, "swap_lab_mean_gap": {}}
    grid_rows = []
    for side, other in (("a", "b"), ("b", "a")):
        small = crops(sets[side], held[side], low, coverage)
        real = to_u8(crops(sets[side], held[side], high, coverage))
        recon = render(model, net, small, side, side, low_mask, high)
        figures["reconstruction"][side] = {
            m: {"psnr": round(float(np.mean([judge.psnr(o, r) for o, r in zip(recon[m], real, strict=True)])), 2),
                "ssim": round(float(np.mean([judge.ssim(o, r) for o, r in zip(recon[m], real, strict=True)])), 4)}
            for m in METHODS}
        swap = render(model, net, small, other, side, low_mask, high)
        figures["swap_lab_mean_gap"][f"{side}2{other}"] = {
            m: round(float(np.mean([judge.lab_gap(o, r) for o, r in zip(swap[m], real, strict=True)])), 2)
            for m in ("raw", *METHODS)}
        picks = np.linspace(0, len(real) - 1, GRID_ROWS).round().astype(int)
        grid_rows += [np.concatenate([real[i], *(swap[m][i] for m in ("raw", *METHODS))], axis=1) for i in picks]
    if grid_path is not None:
        write_image(grid_path, np.concatenate(grid_rows, axis=0))
    return figures


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", type=Path, required=True, help="folder with the talk2/ and carell/ face sets")
    p.add_argument("--name", default="base", help="this colour-net try's name (its folder: WORK/color-NAME)")
    p.add_argument("--swap-iterations", type=int, default=5000)
    p.add_argument("--iterations", type=int, default=1000, help="colour-net iterations")
    p.add_argument("--scale", type=int, default=2, choices=(2, 4))
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--blocks", type=int, default=2)
    p.add_argument("--no-condition", dest="condition", action="store_false")
    p.add_argument("--prior", default="reinhard", choices=("reinhard", "bicubic"))
    p.add_argument("--loss", default="ssim_mse", choices=("mae", "ssim_mse"))
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--recolor", type=float, default=0.5)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--hold-out", type=int, default=5, help="every Nth face of each set is held out")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads; 1 on a shared machine, where two spin against other work")
    p.add_argument("--grid", type=Path, help="write the side-by-side grid PNG here")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    load_start = os.getloadavg()[0]
    t_start = time.perf_counter()

    kept_a, held_a = split(args.work / "talk2", args.work / "train_a", args.hold_out)
    kept_b, held_b = split(args.work / "carell", args.work / "train_b", args.hold_out)
    faces = (args.work / "train_a", args.work / "train_b")
    swap_dir = args.work / "swap"
    t0 = time.perf_counter()
    swap = train(TrainConfig(faces_a=str(faces[0]), faces_b=str(faces[1]), model_dir=str(swap_dir), preset="lite",
                             device="cpu", batch_size=8, iterations=args.swap_iterations,
                             resume=is_model_dir(swap_dir), save_every=500, preview_every=0, report_every=10))
    swap_seconds = time.perf_counter() - t0

    color_config = {"iterations": args.iterations, "scale": args.scale, "width": args.width, "blocks": args.blocks,
                    "condition": args.condition, "prior": args.prior, "loss": args.loss, "lr": args.lr,
                    "recolor": args.recolor, "batch_size": args.batch_size}
    folder = args.work / f"color-{args.name}"
    color_seconds, color_losses = train_color_net(swap_dir, folder, color_config, faces)
    t0 = time.perf_counter()
    figures = evaluate(args.work, folder, {"a": held_a, "b": held_b}, args.grid)
    print(json.dumps({
        "name": args.name, "machine": f"{platform.machine()} {os.cpu_count()} cores, torch {torch.__version__}, "
                                      f"{args.threads} threads, load {load_start:.1f} -> {os.getloadavg()[0]:.1f}",
        "faces": {"train_a": kept_a, "held_a": len(held_a), "train_b": kept_b, "held_b": len(held_b)},
        "swap_model": {"preset": "lite", "iterations": swap.iteration, "loss_a": swap.loss_a, "loss_b": swap.loss_b,
                       "seconds_this_run": round(swap_seconds, 1)},
        "color_net": {**color_config, "seconds": round(color_seconds, 1), **color_losses},
        **figures, "evaluation_seconds": round(time.perf_counter() - t0, 1),
        "total_seconds": round(time.perf_counter() - t_start, 1)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
