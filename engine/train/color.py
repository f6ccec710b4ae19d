"""The colour network's training phase: the swap model frozen, its reconstructions in, real faces out.

Each step draws a batch of A faces and one of B faces, crops each face twice with one random
similarity (`augment.warp_batch` without the warp: rotation, zoom, shift, flip) at the swap model's
resolution and at `scale` times it, lets the frozen model reconstruct the small crop with the
face's own decoder (A->A, B->B: blurry, in that identity's colours), and teaches the colour network
to turn that reconstruction into the large crop with the identity's head.

At swap time the head receives a face from the *other* decoder, in the other person's colours, and
must still produce the destination's. So a share of the inputs (`recolor`) is first recoloured
(Reinhard's LAB mean/std transfer) to the statistics of a random face of either face set: the
head cannot rely on the input's colours and learns to take them from its identity and, when
conditioned, from the destination face's statistics.

`ColorSession` has the same face as `trainer.Session`, so the trainer's one loop (`trainer.run_loop`)
drives it: `python -m engine train --color-net` runs it after the swap model, and `python -m engine
train-color` runs it alone on a trained model folder. Its checkpoint lives in the model folder:

    color.safetensors, config.json["color_net"]   weights, architecture and colour training state
    color_optimizer.pt                            Adam's moments, for the resume
    color_loss.csv                                the colour loss history (columns: A's head, B's head)
    previews/color-latest.png, color-NNNNNNNN.png  bicubic input | network | real face, for A then B
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from engine.atomic import write_image, write_text, write_with
from engine.errors import UserError
from engine.faces.mask import face_region_mask
from engine.models import (
    build_color_net,
    has_color_net,
    is_model_dir,
    load_color_net,
    load_model,
    save_color_net,
)
from engine.models.colornet import face_stats, pair_stats, reinhard_to
from engine.progress import StopFlag

from . import data, distributed
from .augment import center_crop_batch, warp_batch
from .checkpoint import BrokenModelError, TrainingState, load_optimizer_state, weights_finite
from .losses import WeightedLoss, make_loss
from .preview import PREVIEWS

log = logging.getLogger(__name__)

SIDES = ("a", "b")
COLOR_OPTIMIZER = "color_optimizer.pt"
COLOR_LOSS_CSV = "color_loss.csv"
OUTSIDE_WEIGHT = 0.1  # loss weight outside the face region (1 inside): keeps the rim sane, little more


@dataclass
class ColorConfig:
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
    resume: bool = False  # continue the folder's colour net (a fresh one starts if it has none)
    device: str = "auto"
    save_every: int = 500
    preview_every: int = 100  # 0: no previews
    preview_rows: int = 3
    report_every: int | None = None  # None: 1 on CPU, 10 on CUDA
    bf16: bool = True
    seed: int = 0
    max_rewinds: int = 3


class ColorPair(nn.Module):
    """A's and B's inputs through the shared trunk in one pass, then each through its own head: one
    forward per step, as DistributedDataParallel expects, like `trainer.PairForward`."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x_a: torch.Tensor, x_b: torch.Tensor, stats_a: torch.Tensor | None,
                stats_b: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        stats = None if stats_a is None else torch.cat([stats_a, stats_b])
        x = self.net.prepare(torch.cat([x_a, x_b]), stats)
        f_a, f_b = self.net.trunk(x, stats).split([len(x_a), len(x_b)])
        x_a, x_b = x.split([len(x_a), len(x_b)])
        return self.net.render(x_a, f_a, "a"), self.net.render(x_b, f_b, "b")


class ColorSession:
    """One colour-training run; the methods `trainer.run_loop` calls are those of `trainer.Session`."""

    METRICS = ("loss_color_a", "loss_color_b")
    snapshot_every = 0  # a colour net is a few MB and retrains in minutes: no numbered snapshots

    def __init__(self, config: ColorConfig, cluster: distributed.Cluster, *, swap_model: nn.Module | None = None,
                 pools: dict[str, data.FacePool] | None = None) -> None:
        from .trainer import autocast_for, model_coverage

        self.config, self.cluster, self.device = config, cluster, cluster.device
        self.folder = Path(config.model_dir)
        if swap_model is None:
            swap_model = _open_swap_model(self.folder, self.device)
        missing = set(SIDES) - set(swap_model.identities)
        if missing:
            raise UserError(f"{self.folder} has decoders {list(swap_model.identities)}, the colour net needs "
                            "'a' and 'b': use a model trained by `python -m engine train`")
        self.swap_model = swap_model
        self.low = int(swap_model.resolution)
        self.coverage = model_coverage(swap_model)
        if pools is None:
            paths = _face_set_paths(config, self.folder)
            pools = {side: data.load_pool(path, self.device, cluster.rank, cluster.world_size)
                     for side, path in zip(SIDES, paths, strict=True)}
        self.pools = pools
        torch.manual_seed(config.seed)
        net, self.state, optimizer_state = open_color_net(config, self.folder, self.device)
        self.model = net.to(self.device).train()  # `model`: what the loop's result hands back
        self.high = self.low * net.scale
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=config.lr, betas=(0.5, 0.999))
        if optimizer_state is not None:
            self.optimizer.load_state_dict(optimizer_state)
            for group in self.optimizer.param_groups:
                group["lr"] = config.lr
        self.state.settings = _settings_of(config)
        # the face region weighs most: the swap pastes only it (and a feathered rim), and backgrounds,
        # which no face-set statistics predict, would otherwise take the network's capacity
        weight = torch.from_numpy(face_region_mask(self.high, self.coverage)).clamp_min(OUTSIDE_WEIGHT)
        self.loss_fn = WeightedLoss(make_loss(config.loss, self.high, self.coverage).pixel_error, weight)
        self.pair = cluster.wrap(ColorPair(self.model))
        self.autocast = autocast_for(self.device, config.bf16)
        self.stats_mask = torch.from_numpy(face_region_mask(self.low, self.coverage)).to(self.device)
        self.donor_stats = torch.cat([self._all_stats(pool) for pool in self.pools.values()])
        self.preview_faces = {side: data.preview_faces(pool, config.preview_rows) for side, pool in self.pools.items()}
        self.rewinds = 0
        self.reseed(self.state.iteration)

    def reseed(self, iteration: int) -> None:
        """Fresh random streams per rank and start point (a resume does not replay old batches)."""
        seed = int(np.random.SeedSequence([self.config.seed, self.cluster.rank, iteration, 1]).generate_state(1)[0])
        sample_gen = torch.Generator().manual_seed(seed)
        self.samplers = {side: data.BatchSampler(pool, self.config.batch_size, sample_gen)
                         for side, pool in self.pools.items()}
        self.augment_gen = torch.Generator(device=self.device).manual_seed(seed)

    def crops(self, faces_u8: torch.Tensor, pool: data.FacePool, generator: torch.Generator | None
              ) -> tuple[torch.Tensor, torch.Tensor]:
        """The same randomly moved face at the swap model's side and at `scale` times it.

        Both calls draw the same random similarity from identical generator states (without the warp
        nothing else is drawn), and augment's geometry is resolution-independent, so the two crops
        show the same face region. Without a generator: the plain centre crops.
        """
        if generator is None:
            return tuple(center_crop_batch(faces_u8, resolution=side, src_coverage=pool.coverage,
                                           model_coverage=self.coverage) for side in (self.low, self.high))
        twin = torch.Generator(device=generator.device)
        twin.set_state(generator.get_state())
        out = []
        for side, gen in ((self.low, generator), (self.high, twin)):
            crop, _, _ = warp_batch(faces_u8, resolution=side, src_coverage=pool.coverage,
                                    model_coverage=self.coverage, generator=gen, warp=False, mask=False)
            out.append(crop)
        return out[0], out[1]

    @torch.no_grad()
    def reconstruct(self, small: torch.Tensor, side: str) -> torch.Tensor:
        """The swap model's own-identity reconstruction: the kind of face the colour net is fed."""
        was_training = self.swap_model.training
        self.swap_model.eval()
        try:
            with self.autocast:
                rgb, _ = self.swap_model(small, side)
        finally:
            self.swap_model.train(was_training)
        return rgb.float().clamp(0, 1)

    def recolor(self, faces: torch.Tensor) -> torch.Tensor:
        """Move a random `recolor` share of the faces to the LAB statistics of random donor faces."""
        n, gen = len(faces), self.augment_gen
        pick = torch.rand(n, generator=gen, device=gen.device).to(faces.device) < self.config.recolor
        if not bool(pick.any()):
            return faces
        donors = self.donor_stats[torch.randint(len(self.donor_stats), (n,), generator=gen,
                                                device=gen.device).to(self.donor_stats.device)]
        moved = reinhard_to(faces, face_stats(faces, self.stats_mask), donors)
        return torch.where(pick[:, None, None, None], moved, faces)

    def stats(self, faces: torch.Tensor, destination: torch.Tensor) -> torch.Tensor | None:
        return pair_stats(faces, destination, self.stats_mask) if self.model.condition else None

    def step(self) -> torch.Tensor:
        """One optimisation step of the colour net; -> tensor [loss_a, loss_b] left on the device."""
        inputs, targets, stats = {}, {}, {}
        for side, pool in self.pools.items():
            small, targets[side] = self.crops(self.samplers[side].next(), pool, self.augment_gen)
            inputs[side] = self.recolor(self.reconstruct(small, side))
            stats[side] = self.stats(inputs[side], small)
        with self.autocast:
            outputs = self.pair(inputs["a"], inputs["b"], stats["a"], stats["b"])
        losses = [self.loss_fn(out.float(), targets[side]) for out, side in zip(outputs, SIDES, strict=True)]
        self.optimizer.zero_grad(set_to_none=True)
        (losses[0] + losses[1]).backward()
        self.optimizer.step()
        return torch.stack(losses).detach()

    def gather(self, pending: list[torch.Tensor], stop: StopFlag) -> tuple[float, float, bool]:
        from .trainer import gather_losses

        return gather_losses(self.cluster, pending, stop)

    def rewind(self) -> bool:
        """After a NaN/Inf loss, reload the last colour checkpoint; False: give up."""
        self.rewinds += 1
        if self.rewinds > self.config.max_rewinds:
            return False
        self.cluster.barrier()
        settings = self.state.settings
        saved, self.state, optimizer_state = load_checkpoint(self.folder, self.device)
        self.model.load_state_dict(saved.state_dict())
        if optimizer_state is not None:
            self.optimizer.load_state_dict(optimizer_state)
        else:
            self.optimizer.state.clear()
        for group in self.optimizer.param_groups:
            group["lr"] = self.config.lr
        self.state.settings = settings
        self.reseed(self.state.iteration + 7919 * self.rewinds)
        return True

    def save(self) -> None:
        if self.cluster.is_main:
            self.state.history.close(self.state.iteration)
            save_checkpoint(self.folder, self.model, self.optimizer, self.state)

    @torch.no_grad()
    def preview(self) -> np.ndarray | None:
        """Rows of A's then B's preview faces: bicubic input | network | real face, at the output size."""
        if not self.cluster.is_main:
            return None
        was_training = self.model.training
        self.model.eval()
        rows = []
        try:
            for side, faces in self.preview_faces.items():
                small, real = self.crops(faces, self.pools[side], None)
                recon = self.reconstruct(small, side)
                with self.autocast:
                    out = self.model(recon, side, self.stats(recon, small)).float()
                rows.append(torch.stack([bicubic(recon, self.model.scale), out, real], dim=1))
        finally:
            self.model.train(was_training)
        tiles = torch.cat(rows).clamp(0, 1)  # (N, 3 columns, 3, S, S)
        n, cols, ch, s, _ = tiles.shape
        grid = (tiles.permute(0, 3, 1, 4, 2).reshape(n * s, cols * s, ch) * 255 + 0.5).to(torch.uint8).cpu().numpy()
        folder = self.folder / PREVIEWS
        write_image(folder / f"color-{self.state.iteration:08d}.png", grid)
        write_image(folder / "color-latest.png", grid)
        return grid

    def _all_stats(self, pool: data.FacePool, chunk: int = 64) -> torch.Tensor:
        """Face statistics of every face of a pool at the swap model's crop: the recolouring donors."""
        return torch.cat([face_stats(center_crop_batch(pool.faces[i:i + chunk], resolution=self.low,
                                                       src_coverage=pool.coverage, model_coverage=self.coverage),
                                     self.stats_mask)
                          for i in range(0, len(pool), chunk)])


def bicubic(faces: torch.Tensor, scale: int) -> torch.Tensor:
    """The classical upscale the network's output is a residual over."""
    return torch.nn.functional.interpolate(faces, scale_factor=scale, mode="bicubic", align_corners=False)


def open_color_net(config: ColorConfig, folder: Path, device: torch.device):
    """-> (colour net, training state, optimizer state or None): the folder's to resume, else a fresh one."""
    if has_color_net(folder):
        if not config.resume:
            raise UserError(f"{folder} already has a colour network: add --resume to continue training it, "
                            f"or delete {folder / 'color.safetensors'} to start a new one")
        net, state, optimizer_state = load_checkpoint(folder, device)
        if net.scale != config.scale:
            log.warning("--scale %s ignored: resuming the colour net in %s, which is %sx", config.scale, folder,
                        net.scale)
        return net, state, optimizer_state
    net = build_color_net(config.scale, width=config.width, blocks=config.blocks, identities=SIDES,
                          condition=config.condition, prior=config.prior)
    return net, TrainingState(), None


def save_checkpoint(folder: Path, net: nn.Module, optimizer: torch.optim.Optimizer, state: TrainingState) -> None:
    """Optimizer, then weights + config entry, then the loss CSV; never weights with NaN or Inf."""
    if not weights_finite(net):
        raise BrokenModelError(f"refusing to save the colour net in {folder}: its weights hold NaN or Inf")
    optimizer_state = {"iteration": state.iteration, "optimizer": optimizer.state_dict()}
    write_with(folder / COLOR_OPTIMIZER, lambda tmp: torch.save(optimizer_state, tmp))
    save_color_net(folder, net, state.to_meta())
    write_text(folder / COLOR_LOSS_CSV, state.history.csv())


def load_checkpoint(folder: Path, device: torch.device) -> tuple[nn.Module, TrainingState, dict | None]:
    """-> (colour net, state, optimizer state or None when missing or from another iteration)."""
    net, meta = load_color_net(folder, device)
    state = TrainingState.from_meta(meta)
    return net, state, load_optimizer_state(folder / COLOR_OPTIMIZER, state.iteration, device)


def _open_swap_model(folder: Path, device: torch.device) -> nn.Module:
    if not is_model_dir(folder):
        raise UserError(f"{folder} is not a model folder (no config.json + model.safetensors): train a swap model "
                        "there first with `python -m engine train`, then its colour net")
    model, _ = load_model(folder, device)
    return model


def _face_set_paths(config: ColorConfig, folder: Path) -> tuple[str, str]:
    """--faces-a/--faces-b, else the face sets the swap model's training recorded."""
    from .command import saved_settings

    saved = saved_settings(folder) if not (config.faces_a and config.faces_b) else {}
    paths = (config.faces_a or saved.get("faces_a"), config.faces_b or saved.get("faces_b"))
    if not all(paths):
        raise UserError(f"{folder} does not record its face sets: pass --faces-a and --faces-b")
    return paths


def _settings_of(config: ColorConfig) -> dict:
    keep = ("faces_a", "faces_b", "batch_size", "lr", "loss", "recolor", "seed")
    return {k: v for k, v in asdict(config).items() if k in keep}
