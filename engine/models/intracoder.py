"""The intracoder: almost everything shared, only a shallow decoder per identity.

Why this split: in the classic autoencoder each identity owns a full decoder, so each decoder sees
only half the training data and must learn on its own how pose, expression and lighting turn into
pixels. Those rules are the same for every face; only skin, texture and the finer shape of features
belong to an identity. The intracoder therefore shares a shallow encoder (edges, colour), a deep
encoder (the pose/expression code) *and* a deep decoder (rendering that code into face structure),
all trained by both identities' images, and keeps per identity only the last two upscales that
paint the structure in that person's likeness. The effect: the shared part gets twice the data,
the swap keeps the source expression more faithfully, and each extra identity costs few parameters.

Layout at resolution R with width w (R a multiple of 16):
    encoder.shallow   3 -> w -> 2w            R -> R/4     (two stride-2 convs)
    encoder.deep      2w -> 4w -> 8w, Dense(encoder_dim), Dense, upscale -> 4w at R/8 (the latent)
    shared_decoder    residual 4w, upscale -> 2w at R/4, two residual blocks
    decoders[side]    upscale -> w at R/2, upscale -> w/2 at R, 5x5 conv to RGB (+ mask)
"""

from __future__ import annotations

from collections import OrderedDict

from torch import nn

from .layers import Bottleneck, ResidualBlock, ToImage, downscale, upscale
from .parts import Parts


def intracoder(resolution: int, learn_mask: bool, width: int = 64, encoder_dim: int = 512) -> Parts:
    w, side = width, resolution // 16
    shallow = nn.Sequential(downscale(3, w), downscale(w, 2 * w))
    deep = nn.Sequential(
        downscale(2 * w, 4 * w),
        downscale(4 * w, 8 * w),
        Bottleneck(side * side * 8 * w, encoder_dim, side, 8 * w),
        upscale(8 * w, 4 * w),
    )
    encoder = nn.Sequential(OrderedDict(shallow=shallow, deep=deep))
    shared_decoder = nn.Sequential(
        ResidualBlock(4 * w),
        upscale(4 * w, 2 * w),
        ResidualBlock(2 * w),
        ResidualBlock(2 * w),
    )

    def make_decoder() -> nn.Module:
        return nn.Sequential(upscale(2 * w, w), upscale(w, w // 2), ToImage(w // 2, learn_mask))

    return Parts(encoder=encoder, shared_decoder=shared_decoder, make_decoder=make_decoder)
