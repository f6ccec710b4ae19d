"""Does an adversarial loss make the colour/SR net sharp where L1/SSIM cannot? (issue 21 item 5)

The colour/SR net (engine/models/colornet.py) learns to turn the swap model's blurry reconstruction into
the real face at 2x; with a pixel loss it can only paint the average of the detail that could be there,
so it stays below what a perfect 64 px face scores (docs/benchmarks.md, "What sharpness a model's
resolution allows"). DeepFaceLab's "GAN power" adds a patch discriminator to paint detail that is
plausible instead. This tries that at equal wall time: a likeness run's snapshot at `--from` minutes plus
`--minutes` of the colour net with its patch critic (engine/models/critic.py, `train-color --gan`, weight
per `--gan`, 0 = the plain net), judged by the project's `evaluate` against the run's own snapshot at
from + minutes without a net.

    python bench/color_gan.py --work /work/lk43 --recipe default --pair talk1-hader --gan 0 --gan 0.05

One JSON line per weight on stdout (likeness's figures).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

import likeness  # bench/likeness.py, beside this file; it puts the repo on the path
import torch  # noqa: E402

from engine.train.color import train_color  # noqa: E402
from engine.train.config import ColorConfig  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("--recipe", default="default")
    p.add_argument("--pair", required=True)
    p.add_argument("--from", dest="start", type=float, default=20.0, help="snapshot the net starts on (minutes)")
    p.add_argument("--minutes", type=float, default=10.0, help="the colour net's training time")
    p.add_argument("--gan", type=float, action="append", required=True, help="adversarial weight (0: plain net)")
    p.add_argument("--scale", type=int, default=2, choices=(2, 4), help="the net's output over the model's side")
    p.add_argument("--frames", type=int, default=20)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    _, _, train_a, train_b = likeness.prepare(args.work, args.pair)
    snapshot = args.work / "runs" / args.recipe / args.pair / "snapshots" / f"{args.start:g}min"
    for gan in args.gan:
        folder = args.work / "color-gan" / args.pair / f"from{args.start:g}-gan{gan:g}-x{args.scale}"
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        for name in ("config.json", "model.safetensors"):
            shutil.copy2(snapshot / name, folder / name)
        config = ColorConfig(model_dir=str(folder), faces_a=str(train_a), faces_b=str(train_b), iterations=10**9,
                             minutes=args.minutes, save_every=200, preview_every=200, gan=gan,
                             scale=args.scale)
        load = [os.getloadavg()[0]]
        began = time.time()
        result = train_color(config)
        trained = time.time() - began
        load.append(os.getloadavg()[0])
        figures = likeness.evaluate_snapshot(args.work, args.pair, folder, args.frames)
        load.append(os.getloadavg()[0])
        print(json.dumps({"pair": args.pair, "work": str(args.work), "from_min": args.start, "net_min": args.minutes,
                          "gan": gan, "scale": args.scale, "net_iterations": result.iteration, "status": result.status,
                          "train_s": round(trained), "load": load, **figures}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
