"""The classic one-encoder, two-decoder autoencoders: `original`, `lite` and `dfl-h128`.

All three share one layout (four stride-2 convs, a dense bottleneck, an upscale; then per identity
three upscales and an output conv) and differ only in widths, so one builder serves them and the
presets stay a table of numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from .layers import Bottleneck, ToImage, downscale, upscale
from .parts import Parts


@dataclass(frozen=True)
class ClassicLayout:
    conv_widths: tuple[int, int, int, int]  # the four stride-2 convs of the encoder
    dense_dim: int  # width of the bottleneck Dense layer
    bottleneck_channels: int  # channels of the reshaped second Dense output
    upscale_channels: int  # channels after the encoder's final upscale (= the latent)
    decoder_widths: tuple[int, int, int]  # the three upscales of each decoder


def build_classic(layout: ClassicLayout, resolution: int, learn_mask: bool) -> Parts:
    side = resolution // 16  # four stride-2 convs
    widths = (3, *layout.conv_widths)
    encoder = nn.Sequential(
        *(downscale(cin, cout) for cin, cout in zip(widths, widths[1:], strict=False)),
        Bottleneck(side * side * widths[-1], layout.dense_dim, side, layout.bottleneck_channels),
        upscale(layout.bottleneck_channels, layout.upscale_channels),
    )
    dec = (layout.upscale_channels, *layout.decoder_widths)

    def make_decoder() -> nn.Module:
        return nn.Sequential(
            *(upscale(cin, cout) for cin, cout in zip(dec, dec[1:], strict=False)),
            ToImage(dec[-1], learn_mask),
        )

    return Parts(encoder=encoder, shared_decoder=nn.Identity(), make_decoder=make_decoder)


ORIGINAL = ClassicLayout((128, 256, 512, 1024), 1024, 1024, 512, (256, 128, 64))
LITE = ClassicLayout((32, 64, 128, 256), 256, 256, 128, (64, 32, 16))


def original(resolution: int, learn_mask: bool) -> Parts:
    """The deepfakes reference: 64 px, 69.7 M encoder and 6.2 M per decoder parameters."""
    return build_classic(ORIGINAL, resolution, learn_mask)


def lite(resolution: int, learn_mask: bool) -> Parts:
    """`original` at a quarter of the channels: trains at a few iterations a second on a laptop CPU."""
    return build_classic(LITE, resolution, learn_mask)


def dfl_h128(resolution: int, learn_mask: bool, encoder_dim: int = 512) -> Parts:
    """DeepFaceLab's H128: the same layout at 128 px with an 8x8 bottleneck of `encoder_dim`."""
    layout = ClassicLayout((128, 256, 512, 1024), encoder_dim, encoder_dim, encoder_dim,
                           (encoder_dim, encoder_dim // 2, encoder_dim // 4))
    return build_classic(layout, resolution, learn_mask)
