"""Encode frames to H.264 MP4 at the source's own frame times, with its audio copied.

Piping raw frames at one constant rate is right for constant-rate video but not for variable-rate
phone clips: 135 frames of a 6.13 s clip written at its nominal 30 fps last 4.5 s and drift off the
audio. Raw video through a pipe has no timestamps, so this
writer wraps each frame in a minimal Matroska stream (uncompressed RGB blocks, microsecond
timestamps) that ffmpeg reads from stdin; ffmpeg then encodes with `-fps_mode passthrough`, so
every frame keeps its source time, the frame count and duration match, and the output reports
the same nominal rate (tbr) as the source. The timestamps come from the source's packets
(`frame_times`), read without decoding.
"""

from __future__ import annotations

import re
import subprocess
import threading
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from engine.errors import UserError
from engine.media import ffmpeg_exe

# audio codecs the MP4 muxer takes as they are; anything else is re-encoded to AAC
MP4_AUDIO_CODECS = {"aac", "mp3", "ac3", "eac3", "opus", "flac", "alac"}
_DISCARD_FLAG = 0x4  # AV_PKT_FLAG_DISCARD: packets an edit list hides, never shown as frames
_DAMAGE_SIGNS = ("partial file", "Invalid data", "moov atom not found", "truncat", "corrupt")


@dataclass(frozen=True)
class FrameTimes:
    """Presentation times (s) of a video's frames, the last frame's duration, and the stream time base."""

    times: np.ndarray
    last_duration: float
    time_base: Fraction
    damage: str | None = None  # ffmpeg's complaint when the stream is cut short or broken

    def time_of(self, index: int) -> float:
        """Time of frame `index`; frames past the known list continue at the last frame's pace."""
        if index < len(self.times):
            return float(self.times[index])
        return float(self.times[-1] + (index - len(self.times) + 1) * self.last_duration)

    def duration_of(self, index: int) -> float:
        if index + 1 < len(self.times):
            return float(self.times[index + 1] - self.times[index])
        return self.last_duration


def frame_times(path: str | Path, fps: float) -> FrameTimes:
    """Frame times from the packets of the first video stream (`ffmpeg -c copy -f framecrc`: no decoding).

    Falls back to a constant `fps` (the nominal rate) when the stream carries no usable timestamps,
    e.g. a raw elementary stream. Reading every packet also finds truncated files, which the decoder
    would end early without an error.
    """
    proc = subprocess.run([ffmpeg_exe(), "-nostdin", "-hide_banner", "-loglevel", "error", "-i", str(path),
                           "-map", "0:v:0", "-c", "copy", "-f", "framecrc", "-"],
                          capture_output=True, text=True, errors="replace")
    time_base, packets = None, []
    for line in proc.stdout.splitlines():
        if line.startswith("#tb 0:"):
            time_base = Fraction(line.split(":", 1)[1].strip())
        elif line and not line.startswith("#"):
            fields = [f.strip() for f in line.split(",")]
            flags = int(fields[6].removeprefix("F="), 16) if len(fields) > 6 and fields[6].startswith("F=") else 0
            if flags & _DISCARD_FLAG:
                continue
            try:
                packets.append((int(fields[2]), int(fields[3])))
            except (ValueError, IndexError):  # NOPTS and friends: no usable timing
                packets = []
                break
    damage = next((re.sub(r"^(\[[^\]]*\]\s*)+", "", line.strip()) for line in proc.stderr.splitlines()
                   if any(sign in line for sign in _DAMAGE_SIGNS)), None)
    fps = fps if fps > 0 else 25.0
    if proc.returncode != 0 or time_base is None or not packets:
        return FrameTimes(np.arange(1, dtype=np.float64), 1.0 / fps, Fraction(1, 90_000), damage)
    packets.sort()
    pts = np.array([p for p, _ in packets], dtype=np.int64)
    steps = np.arange(len(pts))
    pts = np.maximum.accumulate(pts - steps) + steps  # strictly increasing: equal times break the muxer
    last = packets[-1][1] or (int(pts[-1] - pts[-2]) if len(pts) > 1 else 0)
    last_duration = float(last * time_base) if last > 0 else 1.0 / fps
    times = pts.astype(np.float64) * float(time_base)
    # a few files start below zero (edit lists hiding encoder delay); the writer counts from 0
    return FrameTimes(times - min(0.0, times[0]), last_duration, time_base, damage)


def audio_codec(path: str | Path) -> str | None:
    """The first audio stream's codec name as ffmpeg reports it, or None without audio."""
    proc = subprocess.run([ffmpeg_exe(), "-nostdin", "-hide_banner", "-i", str(path)], capture_output=True,
                          text=True, errors="replace")
    for line in proc.stderr.splitlines():
        if "Stream #" in line and "Audio:" in line:
            return line.split("Audio:", 1)[1].strip().split()[0].rstrip(",")
    return None


class TimedVideoWriter:
    """H.264 MP4 writer taking (frame, time) pairs; writes beside `path` and renames on `close()`.

    Audio streams of `audio_from` are copied (re-encoded to AAC if MP4 cannot hold their codec).
    `time_base` is the encoder's time base: pass the source's so its timestamps survive exactly.
    """

    def __init__(self, path: str | Path, width: int, height: int, *, audio_from: str | Path | None = None,
                 time_base: Fraction = Fraction(1, 90_000), crf: int = 18, preset: str = "veryfast") -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = self.path.with_name(f".{self.path.stem}.partial{self.path.suffix or '.mp4'}")
        self.size = (width, height)
        cmd = [ffmpeg_exe(), "-nostdin", "-hide_banner", "-loglevel", "error", "-y", "-copyts",
               "-f", "matroska", "-i", "pipe:"]
        maps = ["-map", "0:v:0"]
        audio: list[str] = []
        if audio_from is not None:
            codec = audio_codec(audio_from)
            if codec is not None:
                cmd += ["-i", str(audio_from)]
                maps += ["-map", "1:a?"]
                audio = ["-c:a", "copy"] if codec in MP4_AUDIO_CODECS else ["-c:a", "aac", "-b:a", "192k"]
        cmd += maps + ["-fps_mode", "passthrough", "-enc_time_base", str(time_base),
                       "-vf", "pad=ceil(iw/2)*2:ceil(ih/2)*2", "-c:v", "libx264", "-pix_fmt", "yuv420p",
                       "-crf", str(crf), "-preset", preset, *audio, "-movflags", "+faststart",
                       "-f", "mp4", str(self.tmp)]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stderr=subprocess.PIPE)
        self._errors: list[bytes] = []
        self._drain = threading.Thread(target=lambda: self._errors.append(self.proc.stderr.read()), daemon=True)
        self._drain.start()
        self._pending: tuple[np.ndarray, float] | None = None  # held back: the last frame needs a duration
        self._last_time = -1.0
        self.frames = 0
        self._send(_matroska_header(width, height))

    def write(self, frame: np.ndarray, time: float) -> None:
        """Queue `frame` to be shown at `time` seconds (times must increase)."""
        if frame.shape != (self.size[1], self.size[0], 3):
            raise ValueError(f"frame is {frame.shape}, writer expects {self.size[1]}x{self.size[0]}x3")
        if time <= self._last_time:
            raise ValueError(f"frame times must increase: {time} after {self._last_time}")
        self._last_time = time
        if self._pending is not None:
            self._send(_cluster(*self._pending))
        self._pending = (np.ascontiguousarray(frame, dtype=np.uint8), time)
        self.frames += 1

    def close(self, last_duration: float) -> Path:
        """Finish with the last frame lasting `last_duration` s; rename into place."""
        if self._pending is not None:
            self._send(_cluster(*self._pending, duration=last_duration))
            self._pending = None
        try:
            self.proc.stdin.close()
        except BrokenPipeError:
            pass
        self.proc.wait()
        self._drain.join(timeout=5)
        if self.proc.returncode != 0 or self.frames == 0:
            self.abort()
            message = b"".join(self._errors).decode(errors="replace").strip()
            detail = message.splitlines()[-1] if message else ("no frames" if self.frames == 0 else "ffmpeg error")
            raise UserError(f"{self.path}: video encoding failed ({detail})")
        self.tmp.replace(self.path)
        return self.path

    def abort(self) -> None:
        """Stop ffmpeg and delete the partial file: nothing half-written stays behind."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.tmp.unlink(missing_ok=True)

    def _send(self, data: bytes) -> None:
        try:
            self.proc.stdin.write(data)
        except BrokenPipeError as err:
            self.proc.wait()
            self._drain.join(timeout=5)
            message = b"".join(self._errors).decode(errors="replace").strip()
            self.abort()
            raise UserError(f"{self.path}: video encoding failed "
                            f"({message.splitlines()[-1] if message else 'ffmpeg quit'})") from err


# --- a minimal Matroska stream: EBML header, one uncompressed RGB track, one cluster per frame ---
_US = 1_000_000  # TimestampScale of 1000 ns: timestamps in microseconds


def _size(n: int) -> bytes:
    return (1 << 56 | n).to_bytes(8, "big")  # 8-byte EBML length


def _element(element_id: bytes, payload: bytes) -> bytes:
    return element_id + _size(len(payload)) + payload


def _uint(element_id: bytes, value: int) -> bytes:
    return _element(element_id, int(value).to_bytes(max(1, (int(value).bit_length() + 7) // 8), "big"))


def _text(element_id: bytes, value: str) -> bytes:
    return _element(element_id, value.encode("ascii"))


def _matroska_header(width: int, height: int) -> bytes:
    ebml = _element(b"\x1a\x45\xdf\xa3", _uint(b"\x42\x86", 1) + _uint(b"\x42\xf7", 1) + _uint(b"\x42\xf2", 4)
                    + _uint(b"\x42\xf3", 8) + _text(b"\x42\x82", "matroska") + _uint(b"\x42\x87", 4)
                    + _uint(b"\x42\x85", 2))
    segment = b"\x18\x53\x80\x67" + b"\x01\xff\xff\xff\xff\xff\xff\xff"  # unknown size: a live stream
    info = _element(b"\x15\x49\xa9\x66", _uint(b"\x2a\xd7\xb1", 1_000_000_000 // _US)
                    + _text(b"\x4d\x80", "faceswap-studio") + _text(b"\x57\x41", "faceswap-studio"))
    video = _element(b"\xe0", _uint(b"\xb0", width) + _uint(b"\xba", height)
                     + _element(b"\x2e\xb5\x24", b"RGB\x18"))  # ColourSpace fourcc: packed RGB24
    track = _element(b"\xae", _uint(b"\xd7", 1) + _uint(b"\x73\xc5", 1) + _uint(b"\x83", 1) + _uint(b"\x9c", 0)
                     + _text(b"\x86", "V_UNCOMPRESSED") + video)
    return ebml + segment + info + _element(b"\x16\x54\xae\x6b", track)


def _cluster(frame: np.ndarray, time: float, duration: float | None = None) -> bytes:
    """One frame in its own cluster (block times are 16-bit offsets; a cluster each avoids overflow)."""
    block_head = b"\x81\x00\x00"  # track 1, relative time 0
    if duration is None:
        block = _element(b"\xa3", block_head + b"\x80" + frame.tobytes())  # SimpleBlock, keyframe
    else:  # BlockGroup: the only way to say how long the last frame lasts
        block = _element(b"\xa0", _element(b"\xa1", block_head + b"\x00" + frame.tobytes())
                         + _uint(b"\x9b", max(1, round(duration * _US))))
    return _element(b"\x1f\x43\xb6\x75", _uint(b"\xe7", max(0, round(time * _US))) + block)


class VideoWriter:
    """Constant-rate convenience over `TimedVideoWriter`: frame i is shown at i / fps.

    Writes beside `path` and renames on close (or deletes the partial file when the block fails).
    """

    def __init__(self, path: str | Path, width: int, height: int, fps: float,
                 audio_from: str | Path | None = None, crf: int = 18, preset: str = "veryfast") -> None:
        self.fps = float(fps)
        self._writer = TimedVideoWriter(path, width, height, audio_from=audio_from, crf=crf, preset=preset)

    @property
    def frames(self) -> int:
        return self._writer.frames

    def write(self, frame: np.ndarray) -> None:
        self._writer.write(frame, self._writer.frames / self.fps)

    def close(self) -> Path:
        return self._writer.close(1.0 / self.fps)

    def abort(self) -> None:
        self._writer.abort()

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
