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

With `gan` > 0 a patch critic learns to tell the real large crops from the net's, and the net's loss
gains `gan` times the critic's verdict: detail that looks real instead of the blur a pixel loss settles
on (docs/benchmarks.md, "A critic for the colour/SR net").

`train_color(config, listeners, stop)` is the one entry point: `python -m engine train --color-net`
runs it after the swap model (in the same processes, on the face sets already loaded), `python -m
engine train-color` alone on a trained model folder, bench/color.py on its held-out split. Its
`ColorSession` is a `loop.LoopSession`, driven by the same `loop.run_loop` as the swap model's
phase. Its checkpoint lives in the model folder (engine.models.folder names the files):

    color.safetensors, config.json["color_net"]   weights, architecture and colour training state
    color_optimizer.pt                            Adam's moments, for the resume (with `gan`, the patch
                                                  critic's weights and moments too: engine.models.critic)
    color_loss.csv                                the colour loss history (columns: A's head, B's head)
    previews/color-latest.png, color-NNNNNNNN.png  bicubic input | network | real face, for A then B
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from torch import nn

from engine.errors import UserError
from engine.faces.crops import center_crop_batch
from engine.faces.mask import face_region_mask
from engine.models import build_color_net, has_color_net, is_model_dir, load_model
from engine.models.colornet import face_stats, pair_stats, reinhard_to
from engine.models.critic import PatchCritic, critic_loss, generator_loss
from engine.models.folder import (
    COLOR_FILES,
    COLOR_WEIGHTS,
    CONFIG,
    WEIGHTS,
    TrainingState,
    recorded_face_sets,
)
from engine.progress import Listener, StopFlag

from . import checkpoint, data, distributed
from .augment import warp_batch
from .config import ColorConfig, recorded
from .loop import SIDES, LoopSession, TrainResult, drive, held_folder, joined, require_sides
from .losses import WeightedLoss, make_loss
from .preview import write_preview

__all__ = ["ColorConfig", "ColorSession", "train_color"]

log = logging.getLogger(__name__)

OUTSIDE_WEIGHT = 0.1  # loss weight outside the face region (1 inside): keeps the rim sane, little more
CRITIC_KEY = "critic"  # the critic's weights and Adam's moments, beside the colour net's in its optimizer file
CRITIC_LR, CRITIC_BETAS = 2e-4, (0.5, 0.999)  # pix2pix's


def train_color(config: ColorConfig, listeners: list[Listener] | tuple = (), stop: StopFlag | None = None, *,
                cluster: distributed.Cluster | None = None, swap_model: nn.Module | None = None,
                pools: dict[str, data.FacePool] | None = None) -> TrainResult:
    """Train the colour net of `config.model_dir` until `config.iterations`, a stop request or divergence.

    The swap model's phase hands in its `cluster`, `swap_model` and face-set `pools` so that nothing
    is set up or loaded twice; alone, the run joins its processes and opens both from the folder.
    """
    stop = stop if stop is not None else StopFlag()
    with joined(config.device, cluster) as cluster, held_folder(config.model_dir, cluster):
        session = ColorSession(config, cluster, swap_model=swap_model, pools=pools)
        return drive(session, "train-color", listeners, stop)


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


class ColorSession(LoopSession):
    """One colour-training run: the frozen swap model, the colour net, and its step and preview."""

    METRICS = ("loss_color_a", "loss_color_b")
    FILES = COLOR_FILES  # its checkpoint is the folder's colour net
    SEED_SALT = (1,)  # not the batches the swap model's phase of the same run drew
    # snapshot_every stays 0: a colour net is a few MB and retrains in minutes, no numbered snapshots

    def __init__(self, config: ColorConfig, cluster: distributed.Cluster, *, swap_model: nn.Module | None = None,
                 pools: dict[str, data.FacePool] | None = None) -> None:
        super().__init__(config, cluster)
        if swap_model is None:
            swap_model = _open_swap_model(self.folder, self.device)
        require_sides(swap_model, self.folder,
                      "the colour net needs 'a' and 'b': use a model trained by `python -m engine train`")
        self.swap_model = swap_model
        self.low = int(swap_model.resolution)
        self.coverage = swap_model.coverage
        if pools is None:
            self.load_pools(_face_set_paths(config, self.folder))
        else:
            self.pools = pools
        torch.manual_seed(config.seed)
        net, state, optimizer_state = open_color_net(config, self.folder, self.device)
        # `model`: the network this loop trains, which its result hands back
        self.start(net.to(self.device).train(), state, optimizer_state, recorded(config))
        self.high = self.low * net.scale
        # the face region weighs most: the swap pastes only it (and a feathered rim), and backgrounds,
        # which no face-set statistics predict, would otherwise take the network's capacity
        weight = torch.from_numpy(face_region_mask(self.high, self.coverage)).clamp_min(OUTSIDE_WEIGHT)
        self.loss_fn = WeightedLoss(make_loss(config.loss, self.high, self.coverage).pixel_error, weight)
        self.pair = cluster.wrap(ColorPair(self.model))
        self.stats_mask = torch.from_numpy(face_region_mask(self.low, self.coverage)).to(self.device)
        self.donor_stats = torch.cat([self._all_stats(pool) for pool in self.pools.values()])
        self.preview_faces = {side: data.preview_faces(pool, config.preview_rows) for side, pool in self.pools.items()}
        self.critic = None
        if config.gan > 0:
            self.critic = PatchCritic().to(self.device)
            self.critic_optimizer = torch.optim.Adam(self.critic.parameters(), lr=CRITIC_LR, betas=CRITIC_BETAS)
            self.judge = cluster.wrap(self.critic)  # its gradients averaged over the processes, like the net's
            self.load_critic()

    def beside(self) -> dict | None:
        if self.critic is None:
            return None
        return {CRITIC_KEY: {"weights": self.critic.state_dict(), "optimizer": self.critic_optimizer.state_dict()}}

    def load_critic(self) -> None:
        """The critic saved with the colour net's iteration (a resume, a rewind), else a fresh one goes on."""
        if not self.state.iteration:
            return
        saved = checkpoint.load_beside(self.folder, self.state.iteration, self.device, self.FILES, CRITIC_KEY)
        why = "none kept" if saved is None else None
        if saved is not None:
            try:
                self.critic.load_state_dict(saved["weights"])
                self.critic_optimizer.load_state_dict(saved["optimizer"])
            except (TypeError, KeyError, ValueError, RuntimeError) as err:
                why = str(err)
        if why is not None:
            log.warning("%s: no critic saved with the colour net's iteration %d (%s): a fresh one starts",
                        self.folder, self.state.iteration, why)

    def rewind(self) -> bool:
        rewound = super().rewind()
        if rewound and self.critic is not None:
            self.load_critic()
        return rewound

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

    def probe_loss(self) -> torch.Tensor:
        n, r = self.config.batch_size, self.low
        x = torch.rand(2 * n, 3, r, r, device=self.device)
        stats = self.stats(x, x)
        halves = (None, None) if stats is None else stats.split([n, n])
        out_a, out_b = ColorPair(self.model)(x[:n], x[n:], *halves)
        return out_a.float().mean() + out_b.float().mean()

    def probe_key(self) -> str:
        net = self.model
        return (f"colour net x{net.scale} from {self.low}px width {net.config['width']} blocks {net.config['blocks']} "
                f"condition={net.condition} batch {self.config.batch_size}")

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
        if self.critic is None:
            return self.descend(losses)
        fake = torch.cat([out.float() for out in outputs])
        self.critic.requires_grad_(False)  # the net's step moves the net only
        adversarial = generator_loss(self.critic, fake)
        self.critic.requires_grad_(True)
        reported = self.descend(losses, self.config.gan * adversarial)
        self.critic_optimizer.zero_grad(set_to_none=True)
        critic_loss(self.judge, torch.cat([targets[side] for side in SIDES]), fake).backward()
        self.critic_optimizer.step()
        return reported

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
        write_preview(self.folder, self.state.iteration, grid, COLOR_FILES)
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
                            f"or delete {folder / COLOR_WEIGHTS} to start a new one")
        net, state, optimizer_state = checkpoint.load(folder, device, COLOR_FILES)
        if net.scale != config.scale:
            log.warning("--scale %s ignored: resuming the colour net in %s, which is %sx", config.scale, folder,
                        net.scale)
        return net, state, optimizer_state
    net = build_color_net(config.scale, width=config.width, blocks=config.blocks, identities=SIDES,
                          condition=config.condition, prior=config.prior)
    return net, TrainingState(), None


def _open_swap_model(folder: Path, device: torch.device) -> nn.Module:
    if not is_model_dir(folder):
        raise UserError(f"{folder} is not a model folder (no {CONFIG} + {WEIGHTS}): train a swap model "
                        "there first with `python -m engine train`, then its colour net")
    model, _ = load_model(folder, device)
    return model


def _face_set_paths(config: ColorConfig, folder: Path) -> tuple[str, str]:
    """--faces-a/--faces-b, else the face sets the swap model's training recorded."""
    paths = recorded_face_sets(folder, config.faces_a, config.faces_b)
    if not all(paths):
        raise UserError(f"{folder} does not record its face sets: pass --faces-a and --faces-b")
    return paths
