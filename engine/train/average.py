"""An exponential moving average of the weights a run trains: the network it saves for swapping.

Adam at a constant rate leaves the weights jittering around where the loss is low; one checkpoint
is one draw of that jitter, so the same run read as B at one save and did not at the next (Hader's
verified 0.1 / 0.8 / 0.0 at 10 / 20 / 30 minutes, docs/benchmarks.md). The average of the recent
weights sits nearer the middle. The trained weights go on unchanged: Adam steps them, and the
checkpoint keeps them beside Adam's moments so that a resume continues that optimisation
(engine.train.checkpoint), while the weights file, snapshots, backups and previews hold the average.

The decay warms up as TensorFlow's ExponentialMovingAverage does with its step count: at update n it
is min(decay, (1 + n) / (10 + n)), an average over roughly the last tenth of the run, until that
reaches the decay's own span (1 / (1 - decay) steps). A 30-minute run on a quarter of a small CPU
(~1,400 steps) and one on a GPU (~50,000) then both average over a span that fits them.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel


class WeightAverage:
    """The running average of `model`'s weights (`module`), updated after each optimizer step."""

    def __init__(self, model: nn.Module, decay: float, count: int = 0) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"weight average decay {decay}: want a number between 0 and 1 (e.g. 0.999)")
        self.decay, self.count = decay, count
        self.net = AveragedModel(model, multi_avg_fn=self._lerp, use_buffers=True)
        self.net.n_averaged += 1  # it starts as the weights handed in, not as a copy still to be made

    @property
    def module(self) -> nn.Module:
        """The averaged network: the model's own class, ready to save, preview or swap with."""
        return self.net.module

    def current_decay(self) -> float:
        return min(self.decay, (1.0 + self.count) / (10.0 + self.count))

    def update(self, model: nn.Module) -> None:
        """Fold the model's weights after a step into the average."""
        self.net.update_parameters(model)
        self.count += 1

    def _lerp(self, averaged: list[torch.Tensor], current: list[torch.Tensor], _n: torch.Tensor) -> None:
        # the step count lives on the host: reading the device's counter would sync every step
        torch._foreach_lerp_(averaged, current, 1.0 - self.current_decay())
