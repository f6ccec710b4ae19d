"""The colour network: the swap model's low-resolution face in, the face at 2x or 4x in the frame's colours out.

A swap model renders faces at its own resolution (64 px for `lite`) in the source person's colours,
so the swap step used to upscale bicubically (blurry) and move the colours with Reinhard's global
mean/std transfer (blind to lighting that differs across the face). This network does both at once:
a shared U-Net trunk learns what faces look like, and one small head per identity learns that
identity's footage (its skin, lighting and camera detail). At swap time the new face goes through the
*destination's* head, so it comes out looking like the frame it is pasted into.

Every convolution runs at the input resolution and the heads end in a pixel shuffle (sub-pixel
convolution, ESPCN), so 4x costs little more than 2x; the output is a residual over the bicubic
upscale and each head's last layer starts at zero, so an untrained network is exactly the bicubic
upscale (the classical path) rather than noise.

With `condition`, the trunk is also told the LAB mean and standard deviation of the input's face
and of the destination face (feature-wise affine modulation, FiLM), so it can follow the destination
frame's lighting rather than learn one fixed colour per identity. With `prior="reinhard"` the input is
first moved to the destination's statistics by Reinhard's transfer and the network learns only what
that global transfer misses (detail, local colour); with `prior="bicubic"` it learns the colour
from scratch. Only these twelve numbers reach the network, never the destination's pixels, so it
cannot copy the destination's features into the swap.

The network lives in the swap model's own folder (`engine.models.store.save_color_net`).
"""

from __future__ import annotations

import kornia
import torch
import torch.nn.functional as F
from torch import nn

from engine.errors import UserError

from .layers import LEAK, ResidualBlock, SameConv2d, upscale

SCALES = (2, 4)
PRIORS = ("bicubic", "reinhard")  # what the network's residual is added to (see the module docstring)
STATS = 6  # LAB mean and standard deviation of a face: one statistics vector
STATS_UNIT = 100.0  # LAB's lightness range; puts every statistic roughly within [-1, 1]
# Reinhard's largest stretch of a channel's spread. Between colour faces of the shared sets the ratio
# stays under ~5 (99th percentile 4.2 / 5.6 for a / b); a near-grey photo (JPEG chroma noise of 0.4-0.7
# LAB units, hader163.jpg) would be stretched 13-20x into green and yellow blotches.
MAX_STD_RATIO = 5.0


class ColorNet(nn.Module):
    """(N, 3, R, R) face in [0, 1] + identity name (+ colour statistics) -> (N, 3, sR, sR) face."""

    def __init__(self, scale: int, width: int, blocks: int, identities: tuple[str, ...], condition: bool,
                 prior: str):
        super().__init__()
        self.scale, self.condition, self.identities, self.prior = scale, condition, identities, prior
        w = width
        self.inp = nn.Sequential(SameConv2d(3, w, 3), nn.LeakyReLU(LEAK))
        self.down1 = nn.Sequential(SameConv2d(w, 2 * w, 3, stride=2), nn.LeakyReLU(LEAK))
        self.down2 = nn.Sequential(SameConv2d(2 * w, 4 * w, 3, stride=2), nn.LeakyReLU(LEAK))
        self.middle = nn.Sequential(*(ResidualBlock(4 * w) for _ in range(blocks)))
        self.up2 = upscale(4 * w, 2 * w)
        self.merge1 = nn.Sequential(SameConv2d(4 * w, 2 * w, 3), nn.LeakyReLU(LEAK), ResidualBlock(2 * w))
        self.up1 = upscale(2 * w, w)
        self.merge0 = nn.Sequential(SameConv2d(2 * w, w, 3), nn.LeakyReLU(LEAK), ResidualBlock(w))
        # FiLM: scale and shift of the bottleneck and of the features the heads read
        self.film = nn.Linear(2 * STATS, 2 * (4 * w + w)) if condition else None
        if self.film is not None:
            nn.init.zeros_(self.film.weight)  # start as the unconditioned network
            nn.init.zeros_(self.film.bias)
        self.heads = nn.ModuleDict({side: self._head(w, scale) for side in identities})
        self.config = {"scale": scale, "width": width, "blocks": blocks, "identities": list(identities),
                       "condition": condition, "prior": prior}

    @staticmethod
    def _head(width: int, scale: int) -> nn.Module:
        out = SameConv2d(width, 3 * scale * scale, 3)
        nn.init.zeros_(out.weight)  # a new head adds nothing: the network starts as the bicubic upscale
        nn.init.zeros_(out.bias)
        return nn.Sequential(SameConv2d(width, width, 3), nn.LeakyReLU(LEAK), out, nn.PixelShuffle(scale))

    def forward(self, x: torch.Tensor, side: str, stats: torch.Tensor | None = None) -> torch.Tensor:
        """x: (N, 3, R, R) in [0, 1] with R a multiple of 4; stats: (N, 12) from `pair_stats` when
        the network is conditioned. -> (N, 3, sR, sR), not clamped (training sees the true error)."""
        x = self.prepare(x, stats)
        return self.render(x, self.trunk(x, stats), side)

    def prepare(self, x: torch.Tensor, stats: torch.Tensor | None = None) -> torch.Tensor:
        """The input the trunk and the upscale see: `x` itself, or `x` moved to the destination's
        statistics with the `reinhard` prior."""
        if self.prior != "reinhard":
            return x
        if stats is None:
            raise ValueError("this colour network starts from Reinhard's transfer: pass stats")
        return reinhard_to(x, stats[:, :STATS], stats[:, STATS:])

    def trunk(self, x: torch.Tensor, stats: torch.Tensor | None = None) -> torch.Tensor:
        """The shared part: faces of any identity -> (N, width, R, R) features for the heads."""
        if self.condition and stats is None:
            raise ValueError("this colour network is conditioned on colour statistics: pass stats")
        f0 = self.inp(x)
        f1 = self.down1(f0)
        f2 = self.down2(f1)
        films = self._films(stats, f2.shape[1]) if self.film is not None else None
        if films is not None:
            f2 = f2 * (1 + films[0]) + films[1]
        f2 = self.middle(f2)
        f1 = self.merge1(torch.cat([self.up2(f2), f1], dim=1))
        f0 = self.merge0(torch.cat([self.up1(f1), f0], dim=1))
        if films is not None:
            f0 = f0 * (1 + films[2]) + films[3]
        return f0

    def render(self, x: torch.Tensor, features: torch.Tensor, side: str) -> torch.Tensor:
        """One identity's head: the bicubic upscale of `x` plus the head's sub-pixel residual."""
        if side not in self.heads:
            raise KeyError(f"no colour head for identity {side!r}; this network has {list(self.identities)}")
        # the sum in float32 even under bf16 autocast, so the output keeps 8-bit precision
        base = F.interpolate(x.float(), scale_factor=self.scale, mode="bicubic", align_corners=False)
        return base + self.heads[side](features).float()

    def _films(self, stats: torch.Tensor, deep: int) -> list[torch.Tensor]:
        params = self.film(stats.to(self.film.weight.dtype))
        shallow = (params.shape[1] - 2 * deep) // 2
        parts = params.split([deep, deep, shallow, shallow], dim=1)
        return [p[:, :, None, None] for p in parts]


def build_color_net(scale: int = 2, *, width: int = 32, blocks: int = 2, identities=("a", "b"),
                    condition: bool = True, prior: str = "reinhard") -> ColorNet:
    """A fresh colour network; `build_color_net(**net.config)` rebuilds the same architecture."""
    if prior not in PRIORS:
        raise UserError(f"colour network prior {prior!r}: use {' or '.join(PRIORS)}")
    if prior == "reinhard" and not condition:
        raise UserError("the reinhard prior needs the destination's statistics: build it with condition=True")
    if scale not in SCALES:
        raise UserError(f"colour network scale {scale}: use {' or '.join(map(str, SCALES))}")
    if width < 4 or blocks < 0:
        raise UserError(f"colour network width {width} / blocks {blocks}: use a width of 4 or more, blocks 0 or more")
    identities = tuple(str(side) for side in identities)
    if not identities or len(set(identities)) != len(identities):
        raise UserError(f"colour network identities must be distinct names, got {list(identities)}")
    return ColorNet(int(scale), int(width), int(blocks), identities, bool(condition), prior)


def face_stats(rgb: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) RGB in [0, 1], (H, W) mask weights -> (N, 6): LAB mean and std of the face, / 100.

    The same statistics Reinhard's transfer uses, taken under the same face mask.
    """
    lab = kornia.color.rgb_to_lab(rgb.float().clamp(0, 1))
    w = weights.to(lab)[None, None]
    total = w.sum()
    mean = (lab * w).sum(dim=(2, 3)) / total
    var = ((lab - mean[:, :, None, None]).square() * w).sum(dim=(2, 3)) / total
    return torch.cat([mean, var.clamp_min(0).sqrt()], dim=1) / STATS_UNIT


def pair_stats(face: torch.Tensor, destination: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """The conditioning vector: the input face's statistics, then the destination face's (N, 12)."""
    return torch.cat([face_stats(face, weights), face_stats(destination, weights)], dim=1)


def reinhard_to(faces: torch.Tensor, own: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Reinhard's transfer: each face's LAB moved from its `own` statistics to `target`'s ((N, 6) as
    `face_stats` gives them). The one implementation: the network's prior, the classical `reinhard`
    colour mode (`engine.swap.color`) and the swap's strength mix between the two all use it."""
    own, target = own.float() * STATS_UNIT, target.float() * STATS_UNIT
    mean, std = own[:, :3, None, None], own[:, 3:, None, None]
    t_mean, t_std = target[:, :3, None, None], target[:, 3:, None, None]
    lab = kornia.color.rgb_to_lab(faces.float().clamp(0, 1))
    scale = torch.where(std > 1e-6, t_std / std.clamp_min(1e-6), torch.ones_like(std)).clamp(max=MAX_STD_RATIO)
    lab = (lab - mean) * scale + t_mean
    lab = torch.cat([lab[:, :1].clamp(0, 100), lab[:, 1:]], dim=1)
    return kornia.color.lab_to_rgb(lab, clip=True)
