"""The few building blocks every preset is made of.

The classic deepfakes autoencoder was written in Keras, so the blocks reproduce Keras semantics
where they matter: 'same' padding (asymmetric for stride 2), LeakyReLU(0.1) and the
conv-then-pixel-shuffle upscale. With these, parameter counts match the reference exactly.
"""

from __future__ import annotations

import torch
from torch import nn

LEAK = 0.1  # the slope the reference uses everywhere


class SameConv2d(nn.Conv2d):
    """Conv2d with Keras 'same' padding: output side = ceil(input side / stride).

    Keras pads stride-2 convolutions asymmetrically (one pixel less before than after), which
    torch's symmetric `padding` cannot express, so those get an explicit pad; symmetric cases use
    the convolution's own padding (no extra copy). Assumes the input side is a multiple of the
    stride, which every layout here guarantees, so the padding is fixed at construction.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1):
        total = max(kernel_size - stride, 0)
        before, after = total // 2, total - total // 2
        symmetric = before == after
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=before if symmetric else 0)
        self.pad = nn.Identity() if symmetric else nn.ZeroPad2d((before, after, before, after))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(self.pad(x))


def downscale(in_channels: int, out_channels: int) -> nn.Sequential:
    """Halve the side: 5x5 stride-2 conv + LeakyReLU."""
    return nn.Sequential(SameConv2d(in_channels, out_channels, 5, stride=2), nn.LeakyReLU(LEAK))


def upscale(in_channels: int, out_channels: int) -> nn.Sequential:
    """Double the side: 3x3 conv to 4x the channels, LeakyReLU, pixel shuffle (no checkerboard)."""
    return nn.Sequential(SameConv2d(in_channels, out_channels * 4, 3), nn.LeakyReLU(LEAK),
                         nn.PixelShuffle(2))


class ResidualBlock(nn.Module):
    """Two 3x3 convs with a skip: adds depth at one resolution without hurting gradient flow."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = SameConv2d(channels, channels, 3)
        self.conv2 = SameConv2d(channels, channels, 3)
        self.act = nn.LeakyReLU(LEAK)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(x + self.conv2(self.act(self.conv1(x))))


class Bottleneck(nn.Module):
    """Flatten, Dense(dim), Dense(side*side*channels), reshape: the classic no-activation bottleneck.

    The narrow dense layer is what forces both identities through one shared code of pose,
    expression and lighting.
    """

    def __init__(self, in_features: int, dim: int, side: int, channels: int):
        super().__init__()
        self.side, self.channels = side, channels
        self.squeeze = nn.Linear(in_features, dim)
        self.expand = nn.Linear(dim, side * side * channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # flatten(1) reads in logical NCHW order whatever the memory format, so weights stay portable
        z = self.expand(self.squeeze(x.flatten(1)))
        z = z.view(-1, self.channels, self.side, self.side)
        return z.contiguous(memory_format=torch.channels_last) if _is_channels_last(x) else z


class ToImage(nn.Module):
    """Final 5x5 conv to RGB (+ mask channel when learned), squashed to [0, 1] by a sigmoid."""

    def __init__(self, in_channels: int, learn_mask: bool):
        super().__init__()
        self.conv = SameConv2d(in_channels, 4 if learn_mask else 3, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.conv(x))


def _is_channels_last(x: torch.Tensor) -> bool:
    return x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
