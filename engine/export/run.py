"""Export a detector-training dataset: swap the clips with the models, write real and fake videos at each
compression level, a binary mask per fake frame, optional face crops, and the manifest.

Swapping is the engine's own loop (`engine.swap.video.swap_frames`): a fake here is exactly what
`python -m engine swap` would write, with the same tracking, smoothing, watermark and provenance tags.
That loop hands out each source frame beside its swap, so one pass writes the fake at every
compression, the original at every compression (re-encoded the same way, so real and fake differ only
by the manipulation) and the mask (`SwappedFace.region`: the pixels the paste may have changed).

Everything is written into a temporary folder beside the output and renamed into place at the end: a
stop, an error or a full disk leaves nothing half-written. A clip without a face is skipped with a
message and the rest goes on.
"""

from __future__ import annotations

import contextlib
import errno
import shutil
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from engine.errors import UserError
from engine.export import layout
from engine.export.crops import Box, cut_crops, face_box, write_png
from engine.export.options import COMPRESSIONS, SPLITS, ExportOptions
from engine.export.split import Clip, Plan, Target, plan_split
from engine.progress import Listener, Reporter, StopFlag, Stopped
from engine.swap.pipeline import Swapper
from engine.swap.video import swap_frames
from engine.video_reader import VideoInfo, probe_video, read_frames

FACE_CHECK_FRAMES = 5  # frames spread over a clip that are searched for a face before it is planned in

RULES = {
    "identity": "No identity is in two splits. A real clip belongs to its person; a fake to its clip's person "
                "and to the identity its model puts in, and it is made only where both lie in one split. With "
                "few identities they are dealt in a seeded order (train, then test, then val), so each split "
                "gets one while they last.",
    "source": "No real person is in two splits; each fake goes with its clip's person. The identities the "
              "models put in appear in every split that has fakes (see the notes).",
}


@dataclass
class ExportReport:
    status: str  # "done" or "stopped" (then nothing is left at `out`)
    out: Path | None
    rows: list[dict] = field(default_factory=list)  # the manifest
    crops: int = 0
    skipped: list[str] = field(default_factory=list)  # "video: why", one per clip left out
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0


@dataclass
class _Model:
    target: Target
    path: Path
    swapper: Swapper
    preset: str

    @property
    def method(self) -> str:
        return layout.method_name(self.preset)


@dataclass
class _Clip:
    clip: Clip
    path: Path
    info: VideoInfo


def export_dataset(options: ExportOptions, listeners: Iterable[Listener] = (), stop: StopFlag | None = None,
                   detector=None) -> ExportReport:
    """Write the dataset `options` asks for to `options.out`; UserError (nothing written) when it cannot.

    `detector`: a face detector object to share (else `options.detector` is built once for all models).
    """
    options.check()
    out = Path(options.out)
    _check_out(out)
    started = time.perf_counter()
    models = _load_models(options, detector)
    skipped: list[str] = []
    clips = _probe_clips(options, models[0].swapper, skipped)
    if not clips:
        raise UserError("no video left to export: " + "; ".join(skipped))
    plan = plan_split([c.clip for c in clips], [m.target for m in models], options.split, by=options.split_by,
                      balance=options.balance, seed=options.seed)
    tmp = out.parent / f".{out.name}.partial"
    shutil.rmtree(tmp, ignore_errors=True)  # an earlier export's leftovers (a killed process)
    job = _Export(options, tmp, plan, {c.clip.id: c for c in clips}, {m.target.id: m for m in models},
                  listeners, stop if stop is not None else StopFlag(), skipped)
    try:
        tmp.mkdir(parents=True)
        job.run()
        _check_out(out)
        if out.is_dir():
            out.rmdir()  # empty (checked): the finished export takes its place
        tmp.rename(out)
    except Stopped:
        shutil.rmtree(tmp, ignore_errors=True)
        return ExportReport("stopped", None, skipped=skipped, notes=plan.notes,
                            seconds=time.perf_counter() - started)
    except BaseException as err:
        shutil.rmtree(tmp, ignore_errors=True)
        if _disk_full(err):
            raise UserError(f"{out}: the disk is full ({err}); the partial export was removed. Free space there, "
                            "or export fewer videos, frames (--max-frames) or compression levels") from err
        raise
    return ExportReport("done", out, job.rows, len(job.crop_rows), skipped, plan.notes,
                        time.perf_counter() - started)


class _Export:
    """One export's work in its temporary folder: fakes, originals, masks, crops, then the description."""

    def __init__(self, options: ExportOptions, root: Path, plan: Plan, clips: dict[str, _Clip],
                 models: dict[str, _Model], listeners: Iterable[Listener], stop: StopFlag,
                 skipped: list[str]) -> None:
        self.options, self.root, self.plan, self.clips, self.models = options, root, plan, clips, models
        self.stop, self.skipped = stop, skipped
        self.rows: list[dict] = []
        self.crop_rows: list[dict] = []
        self.boxes: dict[str, dict[int, list[Box]]] = {}  # manifest file -> frame -> crop boxes
        swap_frames_total = sum(clips[c].clip.frames for c, _ in plan.fakes)
        crop_frames = (sum(clips[c].clip.frames for c in {c for c, _ in plan.fakes}) + swap_frames_total) \
            * len(options.compressions) if options.crops else 0
        self.reporter = Reporter("export", total=swap_frames_total + crop_frames, unit="frame",
                                 listeners=listeners)
        self.step = 0

    def run(self) -> None:
        for clip_id in dict.fromkeys(c for c, _ in self.plan.fakes):  # clips in plan order
            first = True
            for target_id in [m for c, m in self.plan.fakes if c == clip_id]:
                if not self._fake(self.clips[clip_id], self.models[target_id], with_original=first):
                    self._drop(clip_id)
                    break
                first = False
        if not self.rows:
            raise UserError("no face found in any video: nothing to export (" + "; ".join(self.skipped) + ")")
        if self.options.crops:
            self._crops()
        self.reporter(self.step, message="done", done=True)
        self.rows = layout.sort_rows(self.rows)
        layout.write_description(self.root, self.rows, self.crop_rows if self.options.crops else None,
                                 self._info())

    def _fake(self, source: _Clip, model: _Model, with_original: bool) -> bool:
        """Swap one clip with one model into every compression (and the original too); False without a face."""
        from engine.provenance.metadata import video_tags
        from engine.video_writer import TimedVideoWriter

        info, clip, o = source.info, source.clip, self.options
        whole = clip.frames == info.frames
        name = layout.fake_name(clip.id, model.target.identity)
        tags = video_tags(model.swapper.provenance(source.path))
        audio = source.path if info.has_audio and whole else None  # a cut clip would outlast its sound
        files: dict[tuple[str, str], str] = {}
        for comp in o.compressions:
            files["fake", comp] = layout.fake_video(model.method, comp, name)
            if with_original:
                files["real", comp] = layout.original_video(comp, clip.id)
        writers = {key: TimedVideoWriter(self.root / rel, info.width, info.height, audio_from=audio,
                                         time_base=info.times.time_base, crf=COMPRESSIONS[key[1]],
                                         metadata=tags if key[0] == "fake" else None)
                   for key, rel in files.items()}
        boxes: dict[int, list[Box]] = {}
        written = with_faces = 0
        try:
            batches = swap_frames(model.swapper, info, runs=None if whole else [list(range(clip.frames))],
                                  stop=self.stop)
            with contextlib.closing(batches):
                for batch in batches:
                    for frame in batch:
                        at = info.times.time_of(frame.index)
                        for (kind, _), writer in writers.items():
                            writer.write(frame.swapped if kind == "fake" else frame.source, at)
                        mask = np.zeros(frame.source.shape[:2], dtype=bool)
                        for face in frame.faces:
                            mask |= face.region(frame.source.shape)
                        write_png(self.root / layout.mask_file(model.method, name, frame.index),
                                  mask.astype(np.uint8) * 255)
                        with_faces += bool(frame.faces)
                        if o.crops and frame.index % o.crop_every == 0:
                            found = (face_box(f, model.swapper.coverage, o.crop_scale, frame.source.shape)
                                     for f in frame.faces)
                            boxes[frame.index] = [b for b in found if b is not None]
                    written += len(batch)
                    self.step += len(batch)
                    self.reporter(self.step, message=f"swapping {source.path.name} with {model.target.identity}",
                                  preview=batch[-1].swapped, metrics={"videos": len(self.rows)})
            for writer in writers.values():
                writer.close(info.times.duration_of(written - 1))
        except BaseException:
            for writer in writers.values():
                writer.abort()
            raise
        if with_faces == 0:
            self.skipped.append(f"{source.path}: no face found in any of its {written} frames "
                                "(use a clip where the face is clearly visible, or raise --detect-size)")
            for rel in files.values():
                (self.root / rel).unlink(missing_ok=True)
            shutil.rmtree(self.root / layout.mask_dir(model.method, name), ignore_errors=True)
            return False
        split = self.plan.split_of[clip.id]
        common = {"split": split, "frames": written, "source_video": source.path.name, "video_id": clip.id,
                  "person": clip.person}
        for (kind, comp), rel in files.items():
            row = {**common, "file": rel, "label": kind, "compression": comp, "crf": COMPRESSIONS[comp]}
            if kind == "fake":
                row.update(target_identity=model.target.identity, model_id=model.swapper.model_id,
                           preset=model.preset, method=model.method, mask_dir=layout.mask_dir(model.method, name),
                           original=layout.original_video(comp, clip.id))
            self.rows.append(row)
            self.boxes[rel] = boxes  # the original's crops too: the same faces, found in the same frames
        return True

    def _drop(self, clip_id: str) -> None:
        """Take a clip out (no face): its original and any fakes written already."""
        gone = [r for r in self.rows if r["video_id"] == clip_id]
        for row in gone:
            (self.root / row["file"]).unlink(missing_ok=True)
            if row.get("mask_dir"):
                shutil.rmtree(self.root / row["mask_dir"], ignore_errors=True)
            self.boxes.pop(row["file"], None)
        self.rows = [r for r in self.rows if r["video_id"] != clip_id]

    def _crops(self) -> None:
        for row in self.rows:
            if self.stop:
                raise Stopped
            boxes = self.boxes.get(row["file"], {})
            self.crop_rows += cut_crops(self.root / row["file"], boxes, self.root, row["file"],
                                        {"label": row["label"], "split": row["split"],
                                         "compression": row["compression"]})
            self.step += int(row["frames"])
            self.reporter(self.step, message=f"cutting face crops of {Path(row['file']).name}",
                          metrics={"crops": len(self.crop_rows)})

    def _info(self) -> dict:
        from engine.provenance.record import STUDIO, studio_version

        o = self.options
        used = {m for _, m in self.plan.fakes}
        methods: dict[str, dict] = {}
        for model in self.models.values():
            if model.target.id in used:
                methods.setdefault(model.method, {"preset": model.preset, "models": []})["models"].append(
                    {"identity": model.target.identity, "model_id": model.swapper.model_id,
                     "folder": model.path.name})
        per_original = ("one fake per original, the split's models taking turns, so each split holds as many fake "
                        "frames as real ones") if o.balance else \
            "every clip swapped by every model of its split, so fakes outnumber originals that many times"
        return {
            "title": "Face-swap detector dataset: synthetic faces of real people",
            "intended_use": "training and testing deepfake detectors only; do not publish or share the faces",
            "synthetic": "manipulated_sequences/ holds synthetic faces, original_sequences/ the real clips",
            "studio": STUDIO, "version": studio_version(),
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "layout": "FaceForensics++ (original_sequences/youtube, manipulated_sequences/<method>)",
            "compressions": list(o.compressions), "crf": {c: COMPRESSIONS[c] for c in o.compressions},
            "methods": methods,
            "watermark": o.watermark,
            "max_frames": o.max_frames,
            "masks": "per fake frame, binary PNG: 255 where the swap may have changed the pixel",
            "split": {"by": o.split_by, "seed": o.seed, "shares": dict(zip(SPLITS, o.split, strict=True)),
                      "rule": RULES[o.split_by]},
            "splits": layout.split_summary(self.rows),
            "balance": f"{'on' if o.balance else 'off'}: {per_original} (counts in splits)",
            "crops": {"kind": "box", "scale": o.crop_scale, "every": o.crop_every, "count": len(self.crop_rows)}
            if o.crops else None,
            "skipped": list(self.skipped),
            "notes": list(self.plan.notes),
        }


def _check_out(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"--out {out} exists and is not an empty folder: pass a new folder (an export is "
                        "written whole, never into an old one)")


def _load_models(options: ExportOptions, detector) -> list[_Model]:
    """Every model checked before any work, loaded with one shared detector."""
    from engine.models.folder import CONFIG, WEIGHTS, is_model_dir, read_config
    from engine.swap.settings import SwapSettings

    for spec in options.models:
        if not is_model_dir(spec.path):
            raise UserError(f"--model {spec.path} is not a model folder (no {CONFIG} + {WEIGHTS} written by "
                            "training): pass the folder `python -m engine train --model` wrote")
    names = layout.unique_names([spec.identity or spec.path.resolve().name for spec in options.models], "model")
    identities = [layout.safe_name(spec.identity or spec.path.resolve().name, "model") for spec in options.models]
    models: list[_Model] = []
    seen: dict[tuple[str, str], Path] = {}
    for spec, key, identity in zip(options.models, names, identities, strict=True):
        preset = str(read_config(spec.path)["model"].get("preset") or "custom")
        if (identity, preset) in seen:
            raise UserError(f"--model {spec.path} and {seen[identity, preset]} both put in {identity!r} with preset "
                            f"{preset}: their fakes would share names; name one apart (--model {spec.path}=OTHER)")
        seen[identity, preset] = spec.path
        swapper = Swapper(spec.path, SwapSettings(watermark=options.watermark), device=options.device,
                          detector=detector if detector is not None else
                          (models[0].swapper.detector if models else options.detector))
        models.append(_Model(Target(key, identity), spec.path, swapper, preset))
    return models


def _probe_clips(options: ExportOptions, swapper: Swapper, skipped: list[str]) -> list[_Clip]:
    """The clips that can be exported; each one that cannot is skipped with its reason."""
    ids = layout.unique_names([v.path.stem for v in options.videos], "video")
    clips = []
    for spec, clip_id in zip(options.videos, ids, strict=True):
        try:
            info = probe_video(spec.path)
            if info.times.damage:
                raise UserError(f"{spec.path}: the file is cut short or damaged ({info.times.damage}); "
                                "copy or export it again")
            frames = min(info.frames, options.max_frames or info.frames)
            if not _has_face(swapper, info, frames):
                raise UserError(f"{spec.path}: no face found in {min(FACE_CHECK_FRAMES, frames)} frames spread over "
                                "it (use a clip where the face is clearly visible)")
        except UserError as err:
            skipped.append(str(err))
            continue
        person = layout.safe_name(spec.person, "person") if spec.person else clip_id
        clips.append(_Clip(Clip(clip_id, person, frames), spec.path, info))
    return clips


def _has_face(swapper: Swapper, info: VideoInfo, frames: int) -> bool:
    wanted = {int(round(i)) for i in np.linspace(0, frames - 1, min(FACE_CHECK_FRAMES, frames))}
    images = []
    for index, rgb in read_frames(info):
        if index in wanted:
            images.append(rgb)
        if index >= max(wanted):
            break
    return any(swapper.find_faces(images))


def _disk_full(err: BaseException | None) -> bool:
    """Whether `err` or what caused it is "no space left on device" (PyAV's errors carry errno too)."""
    while err is not None:
        if getattr(err, "errno", None) == errno.ENOSPC:
            return True
        err = err.__cause__ or err.__context__
    return False
