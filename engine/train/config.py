"""The settings of a training run and of a colour-net run, and every default they have.

The CLI (engine.train.command, engine.train.color_command) and the web app's Train tab take their
defaults from these fields (`defaults`) instead of repeating the numbers. No torch here, so that
`python -m engine --help` stays fast.
"""

from __future__ import annotations

from dataclasses import MISSING, dataclass, fields
from typing import ClassVar

UNLIMITED = 10**9  # iterations that stand for "no iteration limit": a run that --minutes ends (pretrain)


@dataclass(kw_only=True)
class LoopConfig:
    """What the one loop (engine.train.loop) reads besides iterations and batch size: the same for both runs."""

    resume: bool = False  # continue the folder's checkpoint
    device: str = "auto"
    save_every: int = 500
    preview_every: int = 100  # 0: no previews
    report_every: int | None = None  # None: 1 on CPU, 10 on CUDA (each report syncs the GPU)
    precision: str = "auto"  # auto (the fastest here, engine.precision), bf16 or fp32
    seed: int = 0
    max_rewinds: int = 3  # NaN/Inf (or loss-spike) rewinds allowed before the run gives up
    # a reported loss this many times its recent median is a blow-up: rewound like a NaN, the learning
    # rate halved for the rest of the run (0: off). The colour net at lr 1e-3 went 0.23 -> 7 -> 2e5 in
    # three steps on a real model (docs/benchmarks.md, "A colour net that blew up")
    spike: float = 10.0

    RECORDED: ClassVar[tuple[str, ...]] = ()  # the settings `recorded` stores in the model folder


@dataclass
class ColorConfig(LoopConfig):
    """The colour network's run on a trained swap model (engine.train.color)."""

    RECORDED: ClassVar[tuple[str, ...]] = ("faces_a", "faces_b", "batch_size", "lr", "loss", "recolor", "gan", "seed")

    model_dir: str
    faces_a: str | None = None  # None: the face sets the swap model was trained on (its config.json)
    faces_b: str | None = None
    iterations: int = 1000  # the total to reach (a resume continues); bench/color.py: 1000 beat 600 everywhere
    scale: int = 2  # output side / swap-model side: 2 or 4
    width: int = 32  # trunk channels at full resolution
    blocks: int = 2  # residual blocks at the quarter-resolution bottleneck
    condition: bool = True  # FiLM on the input's and the destination's LAB statistics
    prior: str = "reinhard"  # the residual's base: "reinhard" (toward the destination) or "bicubic"
    batch_size: int = 8  # faces per side and process
    lr: float = 1e-3  # bench/color.py: at 2e-4 the net stayed below the classical path, at 1e-3 it beat it
    loss: str = "ssim_mse"  # bench/color.py: higher held-out PSNR and SSIM than "mae"
    recolor: float = 0.5  # share of inputs recoloured like a random face of either set
    gan: float = 0.0  # weight of the patch critic's loss (engine.models.critic); 0: the pixel loss alone
    preview_rows: int = 3
    beta1: float = 0.5  # Adam's first-moment decay, as bench/color.py tuned it
    warmup: int = 0  # iterations of linear learning-rate warm-up
    minutes: float | None = None  # a time budget beside `iterations` (whichever comes first)


@dataclass
class TrainConfig(LoopConfig):
    """A swap model's run on two face sets (engine.train.trainer), optionally followed by its colour net's."""

    RECORDED: ClassVar[tuple[str, ...]] = ("faces_a", "faces_b", "batch_size", "lr", "beta1", "warmup", "loss",
                                           "eye_mouth_weight", "background_weight", "init_from", "seed", "warp",
                                           "color_jitter", "id_weight", "id_robust", "id_ceiling", "ema")

    faces_a: str
    faces_b: str
    model_dir: str
    preset: str | None = None  # None: engine.models.default_preset for the device
    resolution: int | None = None  # None: the preset's
    learn_mask: bool = False
    iterations: int = 100_000  # the total to reach; a resume continues towards it
    batch_size: int = 8  # faces per side and process
    # The recipe below won bench/likeness.py on both shared pairs at equal wall time (docs/benchmarks.md,
    # "Likeness per training minute"); the Keras-era 5e-5 with beta1 0.5 and a plain L1 was the old one.
    # lr 6e-4 (3e-4 before): from the prior without the warp it led on both pairs at every budget in two
    # runs (Carell verified 1.00 / 1.00 against 0.80 / 0.95 at 30 min, Hader +0.015 / +0.023 distance
    # moved; "Twice the learning rate without the warp"); from random weights the 5-minute screen had
    # 1e-3 level with 3e-4 ("Screen 2")
    lr: float = 6e-4
    beta1: float = 0.9  # Adam's first-moment decay
    warmup: int = 100  # iterations of linear learning-rate warm-up (Adam's first steps are the wildest)
    loss: str = "mae_dssim"  # L1 + structural dissimilarity, as faceswap's default
    eye_mouth_weight: float = 2.0  # extra loss weight on eyes and mouth (0: off)
    background_weight: float = 0.1  # loss weight outside the face mask (1: the whole crop counts alike)
    # weight of the identity loss (engine.identity: 1 - cos(SFace(A->B swap), B's mean embedding)) in
    # B's side of each step; 0: off. 0.5 with the prior won bench/likeness.py at equal wall time (verified
    # as B 0.80 / 0.00 at 20 min on the two shared pairs, against 0.00 / 0.00 without it; docs/benchmarks.md)
    id_weight: float = 0.5
    # the identity loss jitters each swap before SFace and stops pulling a face once it is as like B as
    # B's own photos (engine.identity.loss: the plain loss learns SFace's blind spots, not B's face). At 30
    # minutes on the two shared pairs: verified as B 0.40 / 0.40 against the plain loss's 1.00 / 0.00,
    # distance moved 0.84 / 0.74 against 0.91 / 0.59 (docs/benchmarks.md, "The robust identity loss")
    id_robust: bool = True
    # with id_robust: the stop at B's own photos' likeness. Without it (jitter alone) both shared pairs scored
    # better at 30 minutes but their faces carried orange and dark blotches (docs/benchmarks.md, "without its ceiling")
    id_ceiling: bool = True
    minutes: float | None = None  # a time budget of training (all runs of the folder together) beside `iterations`
    snapshot_minutes: tuple[float, ...] = ()  # numbered snapshots when the training time passes these marks
    init_from: str | None = None  # another model folder to start encoder and decoders from
    prior: str = "auto"  # a new model's start: auto (the shipped prior of its preset and size), none, or a file
    snapshot_every: int = 0  # 0: no numbered snapshots
    preview_rows: int = 4
    compile: bool = False
    # the random warp of the inputs; None (auto): off for a model that starts from a prior or --init-from,
    # on from random weights. From the prior, without the warp, won bench/likeness.py in two runs at equal
    # wall time: verified as B 0.85 / 0.95 against 0.15 / 0.75 (Carell, 30 min), Hader level, SSIM B->B
    # better in every row (docs/benchmarks.md, "The random warp off, again and to 60 minutes"); the prior
    # itself, and DeepFaceLab's early phase, learn with it
    warp: bool | None = None
    color_jitter: float = 0.0
    # decay of the weight average the run saves for swapping (engine.train.average); 0: save the trained
    # weights themselves. 0.999 (warmed up) against 0 in two runs on both shared pairs at equal wall time:
    # SSIM B->B better in 12 of 12 rows, flicker in 9 of 12 (Hader's in all 6), verified never lower;
    # likeness level (distance moved +0.007 on average, -0.007 against the same run's trained weights);
    # sharpness 0.002 lower (docs/benchmarks.md, "A running average of the weights")
    ema: float = 0.999
    color_net: bool = False  # then train the colour network (engine.train.color) on the finished model
    color_scale: int = ColorConfig.scale  # its output side / the model's: 2 or 4
    color_iterations: int = ColorConfig.iterations  # colour-net iterations to reach (its own count, resumable)
    color_gan: float = ColorConfig.gan  # its patch critic's weight
    # its own time budget beside color_iterations (whichever comes first): `--minutes 20 --color-net
    # --color-minutes 10` is the 20 + 10 split of docs/benchmarks.md, "A critic for the colour/SR net"
    color_minutes: float | None = None


def defaults(config_class: type) -> dict:
    """{field name: default} of a config dataclass, for the fields that have one."""
    return {f.name: f.default for f in fields(config_class) if f.default is not MISSING}


def recorded(config: LoopConfig) -> dict:
    """The run's settings as its model folder keeps them (the face sets, so a resume finds them again)."""
    return {name: getattr(config, name) for name in config.RECORDED}


def loop_settings(config: LoopConfig) -> dict:
    """The `LoopConfig` fields of a config: what a run hands on to the phase after it."""
    return {f.name: getattr(config, f.name) for f in fields(LoopConfig)}
