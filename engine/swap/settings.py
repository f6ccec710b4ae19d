"""What a user sets for a swap, each setting's default and its check: one home for the library, the CLI
and the web app.

Nothing heavy is imported at module level (the checks import the registries they consult), so
`python -m engine --help` shows these defaults without loading torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from engine.errors import UserError

NET_MODE = "net"  # the learned colour mode (the model folder's colour network)
# --direction: (identity the frames show, decoder that renders the new face)
DIRECTIONS = {"a2b": ("a", "b"), "b2a": ("b", "a")}
BLEND_SIZE = 256  # px of the aligned crop that is pasted (at least the model's resolution)
# px, long side frames are shrunk to for detection. MTCNN finds faces of 20 px and more at that size
# (so 29 px in a 700 px frame, 80 px in 1080p); its landmarks are as accurate at 320-640 as at full
# size on the talk videos (2.2-2.6 % of the face width from full-size detection), and 480 costs
# about half of 640.
DETECT_SIZE = 480


def value_range(settings, name: str) -> tuple:
    """(lowest, highest) a field allows, from its metadata: the one statement of a limit, which the checks
    below and the web app's sliders both read."""
    return next(f.metadata["range"] for f in fields(settings) if f.name == name)


def extraction_min_score() -> float:
    """The detector score extraction keeps faces at: swapped faces pass the same bar as trained ones."""
    from engine.faces.extract import ExtractOptions

    return ExtractOptions.min_score


@dataclass(frozen=True)
class SwapSettings:
    """Everything a user can change between two swaps without reloading the model."""

    direction: str = "a2b"
    color: str = "auto"
    color_strength: float = field(default=1.0, metadata={"range": (0.0, 1.0)})
    # share of the destination's fine detail, above what the new face's pixels carry (engine.swap.detail)
    detail: float = field(default=0.0, metadata={"range": (0.0, 1.0)})
    # share of the destination's finest detail (above twice the model's pixels) on the eyes with their brows,
    # the nose and the mouth, where the face's edges are. 1 by default: on both shared pairs it took the 30-minute
    # models' sharpness from 0.076 / 0.083 to 0.315 / 0.503 with verified as B 1.00 and distance moved level
    # (0.871 -> 0.874, 1.008 -> 1.004), the same at 10 and 20 minutes; flicker +0.07 / +0.08, less than a face that
    # cannot shimmer pays in that figure for that much sharpness (docs/benchmarks.md, "Finer detail on the features")
    feature_detail: float = field(default=1.0, metadata={"range": (0.0, 1.0)})
    blend: str = "poisson"
    # px of the BLEND_SIZE crop; negative grows the mask. Grown 8 px by default: the template mask stops
    # short of the brows and jaw, and pasting that much more of the new face moved the judged identity
    # +0.11..+0.16 toward B on talk1 -> Hader (verified 0-0.5 -> 1.0) and +0.01 on Carell; shrinking cost
    # as much (docs/benchmarks.md, "The swap's own settings")
    erode: int = field(default=-8, metadata={"range": (-BLEND_SIZE // 4, BLEND_SIZE // 4)})
    # px of the BLEND_SIZE crop the mask edge is feathered over
    blur: int = field(default=6, metadata={"range": (0, BLEND_SIZE // 4)})
    faces: str = "largest"  # largest | all | like:IMAGE
    watermark: bool = True  # the invisible provenance mark in each swapped face (engine.provenance.watermark)
    min_score: float = field(default_factory=extraction_min_score)

    def check(self) -> None:
        from engine.swap.blend import BLEND_MODES
        from engine.swap.color import COLOR_MODES
        from engine.swap.selection import check_rule

        if self.direction not in DIRECTIONS:
            raise UserError(f"--direction {self.direction!r}: use {' or '.join(DIRECTIONS)}")
        if self.color not in ("auto", NET_MODE) and self.color not in COLOR_MODES:
            raise UserError(f"--color {self.color!r}: use auto, {NET_MODE} or one of {', '.join(sorted(COLOR_MODES))}")
        low, high = value_range(self, "color_strength")
        if not low <= self.color_strength <= high:
            raise UserError(f"--color-strength {self.color_strength}: use a value from {low:g} to {high:g}")
        low, high = value_range(self, "detail")
        if not low <= self.detail <= high:
            raise UserError(f"--detail {self.detail}: use a value from {low:g} (off) to {high:g} (all of it)")
        low, high = value_range(self, "feature_detail")
        if not low <= self.feature_detail <= high:
            raise UserError(f"--feature-detail {self.feature_detail}: use a value from {low:g} (off) to {high:g}")
        if self.blend not in BLEND_MODES:
            raise UserError(f"--blend {self.blend!r}: use one of {', '.join(BLEND_MODES)}")
        low, high = value_range(self, "erode")
        if not low <= self.erode <= high:
            raise UserError(f"--erode {self.erode}: keep it within {low} to {high} px (of a {BLEND_SIZE} px face)")
        low, high = value_range(self, "blur")
        if not low <= self.blur <= high:
            raise UserError(f"--blur {self.blur}: use {low} to {high} px (of a {BLEND_SIZE} px face)")
        check_rule(self.faces)


@dataclass(frozen=True)
class VideoSettings:
    """What a user sets for a video beyond `SwapSettings`: smoothing along each face's track and how often to
    detect."""

    # 0 (off) to 1 (heaviest): landmarks, the Poisson membrane and the face where it shimmers (engine.swap.steady).
    # 0.85 against 0.5 cut flicker 0.02-0.04 on both talk pairs, landmark error level (mask as drawn; rows
    # "t-s85" in docs/likeness/swap-settings/membrane_smooth.jsonl against "m1" in membrane_cutoff.jsonl)
    smooth: float = 0.85
    detect_every: int = 1  # detect on every Nth frame, track by optical flow between

    def check(self) -> None:
        if self.detect_every < 1:
            raise UserError(f"--detect-every {self.detect_every}: use 1 (every frame) or more")
        if not 0.0 <= self.smooth <= 1.0:
            raise UserError(f"--smooth {self.smooth}: use 0 (off) to 1 (heaviest)")
