"""The patch critic: the colour/SR net's adversary, so it paints detail that looks real instead of an average.

Trained with a pixel loss alone, the colour/SR net can only paint the mean of every detail that could
be under a blurry face, which is softer than the real one. A critic that tells real face crops from the
net's output, patch by patch (pix2pix's PatchGAN, DeepFaceLab's "GAN power"), makes a sharp, plausible
eye or brow cheaper for the net than a soft one. Spectral normalisation keeps the critic smooth enough
to train beside the net without a schedule of its own. Measured at equal time (docs/benchmarks.md, "A
critic for the colour/SR net"): at weight 0.05 for ten CPU-minutes, sharpness +0.004 to +0.02 on one
shared pair, level on the other, so it is a choice (`train-color --gan`), off by default.

It lives only in training: its weights and Adam's moments are kept beside the colour net's optimizer
(a resume goes on with the same adversary); the swap never loads it.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

CRITIC_LEAK = 0.2  # pix2pix's slope


class PatchCritic(nn.Module):
    """(N, 3, S, S) faces in [0, 1] -> (N, 1, S/8, S/8) logits, one per ~40 px patch (real > 0)."""

    def __init__(self, width: int = 32) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = 3
        for cout in (width, 2 * width, 4 * width):  # three stride-2 convs: S/8 patches
            layers += [spectral_norm(nn.Conv2d(cin, cout, 4, 2, 1)), nn.LeakyReLU(CRITIC_LEAK)]
            cin = cout
        layers.append(spectral_norm(nn.Conv2d(cin, 1, 3, 1, 1)))
        self.net = nn.Sequential(*layers)

    def forward(self, faces: torch.Tensor) -> torch.Tensor:
        return self.net(faces.float().clamp(0, 1) * 2 - 1)


def generator_loss(critic: nn.Module, fake: torch.Tensor) -> torch.Tensor:
    """Non-saturating loss of the net: low when the critic takes its faces for real."""
    return nn.functional.softplus(-critic(fake)).mean()


def critic_loss(critic: nn.Module, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """The critic's logistic loss on real faces and the net's (detached) output, in one forward pass."""
    logits = critic(torch.cat([real, fake.detach()]))
    real_logits, fake_logits = logits.split([len(real), len(fake)])
    return nn.functional.softplus(-real_logits).mean() + nn.functional.softplus(fake_logits).mean()
