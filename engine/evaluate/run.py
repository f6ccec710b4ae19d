"""The evaluation job: swap a destination video with a model, then measure the result frame by frame.

The swap is the product's own: a whole video goes through `swap_video` (detection, tracking,
smoothing, blending, encoding), so speed and flicker are what a user gets, and the swapped MP4 is
then decoded beside the source; a `--frames N` sample swaps short runs of consecutive frames spread
over the video through `swap_frames`, the same loop without the encoder, with the same tracking and
smoothing inside each run (flicker needs neighbouring frames). This module only orchestrates:
inputs.py gives the references and held-out faces, meter.py measures each frame, report.py
assembles and writes the report.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from engine.progress import Listener, Progress, Reporter, StopFlag, Stopped
from engine.swap.video import SwappedFrame

from . import metrics as M
from .inputs import reconstruction, reference_embeddings, resolve_set, sample_clips
from .meter import FrameMeter
from .options import EvaluateOptions
from .report import SWAPPED_VIDEO, StripCollector, SwapFacts, build_report, write_report


def evaluate(options: EvaluateOptions, listeners: Iterable[Listener] = (), stop: StopFlag | None = None) -> dict:
    """Run the evaluation and write report.json, report.html and plots into `options.out`.

    Returns the report dict (status 'done'), or {'status': 'stopped'} when stopped, writing nothing.
    """
    from engine.evaluate.identity import FaceAnalyzer
    from engine.models import load_model

    stop = stop if stop is not None else StopFlag()  # not `or`: an unset flag is falsy
    started = time.perf_counter()
    out = Path(options.out)
    reporter = Reporter("evaluate", unit="step", listeners=listeners)
    model, meta = load_model(options.model, "cpu")
    train_sets = meta.get("train", {})
    sets = {side: resolve_set(getattr(options, f"faces_{side}"), train_sets.get(f"faces_{side}"), side)
            for side in ("a", "b")}
    try:
        reporter(0, message="loading dlib models")
        analyzer = FaceAnalyzer()
        reporter(0, message="identity references")
        refs = {side: reference_embeddings(analyzer, faceset, options.reference_faces, stop)
                for side, faceset in sets.items()}
        mean_a, mean_b = refs["a"].mean(axis=0), refs["b"].mean(axis=0)
        reporter(0, message="held-out reconstructions")
        recon = {side: reconstruction(model, sets[side], side, train_sets.get(f"faces_{side}"))
                 for side in ("a", "b")}
        facts = {"preset": model.config.get("preset"), "resolution": int(model.resolution),
                 "iteration": meta.get("iteration"), "train": train_sets}
        del model
        threshold = M.verification_threshold(refs["b"])  # one figure for the frames and the report
        meter = FrameMeter(analyzer, mean_target=mean_b, mean_source=mean_a, threshold=threshold)
        strip = StripCollector(options.strip)
        frames, swap = _swap(options, out, reporter, stop, strip)
        records = []
        for frame in frames:
            if stop:
                raise Stopped
            records.append(meter.add(frame.index, frame.source, frame.swapped, frame.faces, frame.first))
            strip.offer(frame.index, frame.source, frame.swapped, frame.faces)
            # a whole video was swapped before measuring starts; a sample is swapped as it is measured
            step = swap.count + len(records) if swap.output is not None else 2 * len(records)
            reporter(step, total=2 * swap.count, message="measuring")
    except Stopped:
        reporter(0, message="stopped", done=True)
        return {"status": "stopped"}
    grids = {side: r.pop("grid") for side, r in recon.items()}
    report = build_report(options, facts, records, refs, threshold, recon, swap, time.perf_counter() - started)
    write_report(out, report, strip.pairs, grids)
    reporter(2 * swap.count, total=2 * swap.count, message="report written", done=True,
             metrics={k: v for k, v in report["summary"].items() if isinstance(v, float)})
    return report


def _swap(options: EvaluateOptions, out: Path, reporter: Reporter, stop: StopFlag,
          strip: StripCollector) -> tuple[Iterator[SwappedFrame], SwapFacts]:
    """The swapped frames to measure, and the facts of the swap (complete once the frames are consumed)."""
    from engine.swap.pipeline import Swapper
    from engine.swap.settings import SwapSettings
    from engine.video_reader import probe_video

    video = probe_video(options.video)
    clips = sample_clips(video.frames, options.frames)
    swapper = Swapper(options.model, options.settings or SwapSettings(), device=options.device,
                      detector=options.detector)
    strip.plan([i for c in clips for i in c])
    if len(clips) == 1 and len(clips[0]) == video.frames:
        return _swap_whole(swapper, video, options, out, reporter, stop, clips)
    return _swap_sampled(swapper, video, options, stop, clips)


def _swap_whole(swapper, video, options: EvaluateOptions, out: Path, reporter: Reporter, stop: StopFlag,
                clips: list[list[int]]) -> tuple[Iterator[SwappedFrame], SwapFacts]:
    """The product path: swap_video writes out/swapped.mp4; its frames are then read back beside the source's."""
    from engine.swap.video import swap_video
    from engine.video_reader import read_frames

    def forward(event: Progress) -> None:
        reporter(event.step, total=2 * video.frames, message="swapping", preview=event.preview)

    video_out = out / SWAPPED_VIDEO
    result = swap_video(swapper, options.video, video_out, smooth=options.smooth, listeners=[forward],
                        stop=stop, keep_faces=True, probe=video)
    if result.out is None:
        raise Stopped

    def frames() -> Iterator[SwappedFrame]:
        for (index, dest), (_, swapped), faces in zip(read_frames(video), read_frames(video_out),
                                                     result.faces, strict=False):
            yield SwappedFrame(index, dest, swapped[: dest.shape[0], : dest.shape[1]], faces, first=index == 0)

    facts = SwapFacts(result.frames, clips, "swap_video on the whole video: decode, detect, smooth, swap, blend, "
                      "encode", output=str(video_out), seconds=result.seconds, stages=dict(result.stages))
    return frames(), facts


def _swap_sampled(swapper, video, options: EvaluateOptions, stop: StopFlag,
                  clips: list[list[int]]) -> tuple[Iterator[SwappedFrame], SwapFacts]:
    """Only the sampled runs, through swap_frames (decoding, no encoding); timed by its stage clock."""
    from engine.swap.video import swap_frames

    facts = SwapFacts(sum(len(c) for c in clips), clips,
                      "swap_frames on the sampled runs: detect, smooth, swap, blend (no decode or encode)")

    def frames() -> Iterator[SwappedFrame]:
        for batch in swap_frames(swapper, video, runs=clips, smooth=options.smooth, stop=stop):
            yield from batch
            stages = swapper.clock.seconds
            facts.stages = dict(stages)
            facts.seconds = sum(v for k, v in stages.items() if k not in ("decode", "encode"))

    return frames(), facts
