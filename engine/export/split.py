"""Which person goes to train, val or test, and which fakes are made: every identity stays in one split.

A real clip shows one person (`Clip.person`; by default each clip is a person of its own). A fake made
from clip X with model M shows two identities: X's person (scene, body, hair, the face's pose and
expression) and M's target identity (the face put in, the model's side B). A detector that met either
in training could recognise the person instead of the manipulation, so:

`by="identity"` (the default): persons and target identities are the units, one unit per name (equal
names are one person: a model trained to put in the person of a clip is named after that person,
`models/AB=anna`). Each unit goes to one split, and a fake is only made from a clip and a model of the
same split, so no identity, real or swapped in, crosses splits. Units are dealt in a seeded shuffle:
first those holding a model, one to each requested split in the order train, test, val while they
last, further ones where the split is furthest below its share; then the clips' people, first one to
each split that has a model and no clip yet, then each to the split furthest below its share of frames.
A split without a model gets no clip (its originals would have no fakes to pair with): with one model
only one split can hold fakes. The plan says so in its notes rather than break the rule.

`by="source"`: only the clips' people are units and every model serves every split, so a target
identity's synthetic face appears in several splits (named in the notes). For a single model, when the
detector is to meet unseen people and scenes but not an unseen swapped-in face.

Balance (default): in each split each clip is swapped once, by the split's models in turn (a model
that puts in the clip's own person only when there is no other), so a split holds one fake per
original, of the same frames: equal real and fake frame counts. Without balance every clip is swapped
by every model of its split, and fakes outnumber originals by that many.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from engine.export.options import SPLITS

FILL_ORDER = ("train", "test", "val")  # who gets an identity first when there are fewer than splits


@dataclass(frozen=True)
class Clip:
    id: str  # the video's id in the dataset (file-safe, unique)
    person: str
    frames: int  # frames that will be exported


@dataclass(frozen=True)
class Target:
    id: str  # the model's key (file-safe, unique)
    identity: str


@dataclass
class Plan:
    split_of: dict[str, str]  # clip id -> its split
    models_of: dict[str, list[str]]  # split -> target ids that may swap its clips
    fakes: list[tuple[str, str]]  # (clip id, target id), split by split
    notes: list[str] = field(default_factory=list)

    def clips(self, split: str) -> list[str]:
        return sorted(c for c, s in self.split_of.items() if s == split)


def plan_split(clips: list[Clip], targets: list[Target], shares: tuple[float, ...], *, by: str = "identity",
               balance: bool = True, seed: int = 0) -> Plan:
    """Assign `clips` and `targets` to splits (shares of train, val, test) and list the fakes to make."""
    rng = random.Random(seed)
    share = dict(zip(SPLITS, shares, strict=True))
    active = [s for s in FILL_ORDER if share[s] > 0]
    identity_of = {t.id: t.identity for t in targets}
    person_of = {c.id: c.person for c in clips}
    names = sorted({c.person for c in clips} | ({t.identity for t in targets} if by == "identity" else set()))
    rng.shuffle(names)
    frames = {name: sum(c.frames for c in clips if c.person == name) for name in names}
    split_of_name: dict[str, str] = {}
    notes: list[str] = []

    if by == "identity":
        with_model = [n for n in names if n in identity_of.values()]
        _deal(with_model, active, split_of_name, lambda s, placed: share[s] * len(with_model) - placed[s])
        eligible = [s for s in active if s in split_of_name.values()]
        for s in active:
            if s not in eligible:
                notes.append(f"{s}: empty, no target identity left for it ({len(with_model)} target "
                             f"identit{'y' if len(with_model) == 1 else 'ies'} for {len(active)} splits) and a clip "
                             "there would have no fake; add models of other identities, or split by source")
    else:
        eligible = active
    clip_only = [n for n in names if n not in split_of_name]
    placed_frames = {s: sum(frames[n] for n, t in split_of_name.items() if t == s) for s in eligible}
    total = sum(frames.values())
    norm = sum(share[s] for s in eligible)
    have_clip = {s for n, s in split_of_name.items() if frames[n]}
    for name in clip_only:
        empty = [s for s in eligible if s not in have_clip]
        split = empty[0] if empty else max(eligible, key=lambda s: share[s] / norm * total - placed_frames[s])
        split_of_name[name] = split
        placed_frames[split] += frames[name]
        have_clip.add(split)
    for s in eligible:
        if s not in have_clip:
            notes.append(f"{s}: empty, no person left for it ({len({c.person for c in clips})} people "
                         f"for {len(active)} splits)")

    split_of = {c.id: split_of_name[c.person] for c in clips}
    if by == "identity":
        models_of = {s: sorted(t.id for t in targets if split_of_name.get(t.identity) == s) for s in SPLITS}
    else:
        models_of = {s: sorted(t.id for t in targets) if s in eligible else [] for s in SPLITS}
    fakes: list[tuple[str, str]] = []
    for s in SPLITS:
        models = list(models_of[s])
        rng.shuffle(models)
        for k, clip in enumerate(sorted(c for c, t in split_of.items() if t == s)):
            others = [m for m in models if identity_of[m] != person_of[clip]] or models
            chosen = [others[k % len(others)]] if balance else others
            fakes += [(clip, m) for m in chosen]
    if by == "source":
        used = {}
        for clip, m in fakes:
            used.setdefault(identity_of[m], set()).add(split_of[clip])
        shared = sorted(i for i, splits in used.items() if len(splits) > 1)
        if shared:
            notes.append(f"split by source: the swapped-in faces of {', '.join(shared)} appear in several splits")
    return Plan(split_of, models_of, fakes, notes)


def _deal(names: list[str], active: list[str], out: dict[str, str], deficit) -> None:
    """One name to each active split in order while they last, the rest where `deficit(split, placed)` is largest."""
    placed = dict.fromkeys(active, 0)
    for k, name in enumerate(names):
        split = active[k] if k < len(active) else max(active, key=lambda s: deficit(s, placed))
        out[name] = split
        placed[split] += 1
