"""Where every file of an export goes (FaceForensics++'s layout), and the files that describe it.

    original_sequences/youtube/<comp>/videos/<video>.mp4                 real clips, re-encoded
    manipulated_sequences/<method>/<comp>/videos/<video>_<identity>.mp4  their swaps
    manipulated_sequences/<method>/masks/videos/<video>_<identity>/<frame:04d>.png
    .../<comp>/crops/<video or video_identity>/<frame:04d>_<face>.png    with --crops
    manifest.csv, manifest.json, crops.csv, dataset.json, README.txt

`<method>` is `FaceSwapStudio-<preset>`; a fake's name is FF++'s `<target>_<source>`: the clip whose
frames it shows, then the identity put in. FF++ keeps masks as videos; here each frame's mask is a
binary PNG (255 where the swap may have changed the pixel), one set per fake, valid for every
compression. Detector code written for FF++ finds its way by these names; everything else is in the
manifest, one row per video file.
"""

from __future__ import annotations

import csv
import io
import re
import textwrap
from pathlib import Path

from engine.export.options import COMPRESSIONS, SPLITS

ORIGINALS = "original_sequences/youtube"
MANIPULATED = "manipulated_sequences"
MANIFEST_FIELDS = ("file", "label", "split", "compression", "crf", "frames", "source_video", "video_id", "person",
                   "target_identity", "model_id", "preset", "method", "mask_dir", "original")
CROP_FIELDS = ("file", "label", "split", "compression", "video", "frame", "face", "x1", "y1", "x2", "y2")


def safe_name(text: str, fallback: str = "video") -> str:
    """A name for file paths: letters, digits and '-' only ('_' separates a fake's two names)."""
    return re.sub(r"[^A-Za-z0-9-]+", "-", text).strip("-")[:60] or fallback


def unique_names(texts: list[str], fallback: str) -> list[str]:
    """`safe_name` of each, with -2, -3, ... where two would clash."""
    seen: set[str] = set()
    out = []
    for text in texts:
        base = name = safe_name(text, fallback)
        n = 2
        while name in seen:
            name = f"{base}-{n}"
            n += 1
        seen.add(name)
        out.append(name)
    return out


def method_name(preset: str) -> str:
    return f"FaceSwapStudio-{safe_name(preset, 'model')}"


def fake_name(video_id: str, identity: str) -> str:
    return f"{video_id}_{identity}"


def original_video(comp: str, video_id: str) -> str:
    return f"{ORIGINALS}/{comp}/videos/{video_id}.mp4"


def fake_video(method: str, comp: str, name: str) -> str:
    return f"{MANIPULATED}/{method}/{comp}/videos/{name}.mp4"


def mask_dir(method: str, name: str) -> str:
    return f"{MANIPULATED}/{method}/masks/videos/{name}"


def mask_file(method: str, name: str, frame: int) -> str:
    return f"{mask_dir(method, name)}/{frame:04d}.png"


def crop_file(video: str, frame: int, face: int) -> str:
    """A crop of `video` (a path from above): beside its videos/ folder, under crops/<its name>/."""
    path = Path(video)
    return f"{path.parent.parent / 'crops' / path.stem}/{frame:04d}_{face}.png"


def csv_text(rows: list[dict], fields: tuple[str, ...]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: row.get(k, "") for k in fields})
    return buf.getvalue()


def write_description(folder: Path, rows: list[dict], crop_rows: list[dict] | None, info: dict) -> None:
    """manifest.csv/.json, crops.csv, dataset.json and README.txt into `folder` (each written whole)."""
    from engine.atomic import write_json, write_text

    write_text(folder / "manifest.csv", csv_text(rows, MANIFEST_FIELDS))
    write_json(folder / "manifest.json", {"fields": list(MANIFEST_FIELDS), "rows": rows})
    if crop_rows is not None:
        write_text(folder / "crops.csv", csv_text(crop_rows, CROP_FIELDS))
    write_json(folder / "dataset.json", info)
    write_text(folder / "README.txt", readme(info))


def split_summary(rows: list[dict]) -> dict[str, dict]:
    """Per split (all three, empty ones too): its people, the identities swapped in, and real and fake
    videos and frames of one compression level (every level holds the same clips)."""
    out = {split: {"people": set(), "target_identities": set(), "real_videos": 0, "fake_videos": 0,
                   "real_frames": 0, "fake_frames": 0} for split in SPLITS}
    comps = sorted({r["compression"] for r in rows})
    for r in rows:
        if r["compression"] != comps[0]:
            continue
        s = out[r["split"]]
        s["people"].add(r["person"])
        kind = "real" if r["label"] == "real" else "fake"
        if kind == "fake":
            s["target_identities"].add(r["target_identity"])
        s[f"{kind}_videos"] += 1
        s[f"{kind}_frames"] += int(r["frames"])
    return {k: {**v, "people": sorted(v["people"]), "target_identities": sorted(v["target_identities"])}
            for k, v in out.items()}


def sort_rows(rows: list[dict]) -> list[dict]:
    """Manifest order: split by split (train, val, test), then by file."""
    return sorted(rows, key=lambda r: (SPLITS.index(r["split"]), r["file"]))


def readme(info: dict) -> str:
    """README.txt: what the export is, in words, for whoever unpacks it."""
    comps = ", ".join(f"{c} (H.264 crf {COMPRESSIONS[c]})" for c in info["compressions"])
    splits = "\n".join(f"  {name}: people {', '.join(s['people']) or '-'}; swapped-in identities "
                       f"{', '.join(s['target_identities']) or '-'};\n    {s['real_videos']} real and "
                       f"{s['fake_videos']} fake videos, {s['real_frames']} real and {s['fake_frames']} fake frames "
                       "per compression" if s["real_videos"] or s["fake_videos"] else f"  {name}: empty"
                       for name, s in info["splits"].items())
    shares = "/".join(f"{v:.3g}" for v in info["split"]["shares"].values())
    notes = "".join(textwrap.fill(n, 110, initial_indent="  - ", subsequent_indent="    ") + "\n"
                    for n in info["notes"]) or "  (none)\n"
    crops = ""
    if info["crops"]:
        c = info["crops"]
        crops = ("  <...>/<comp>/crops/<video or video_identity>/<frame>_<face>.png, listed in crops.csv:\n"
                 "        box crops, not aligned: the face square of the swap's alignment (ArcFace template)\n"
                 f"        enlarged {c['scale']}x about its centre, clipped to the frame, every {c['every']} frame(s),\n"
                 "        cut from each compressed video; x1,y1,x2,y2 in frame pixels. A fake's crop and its\n"
                 "        original's share the box.\n")
    mark = (" and an invisible watermark in its swapped faces" if info["watermark"]
            else "; its faces are NOT watermarked (exported with --no-watermark)")
    return f"""{info['title']}

WHAT THIS IS
Synthetic face swaps of real people, made by {info['studio']} {info['version']} on {info['created']}, with the
real clips they were made from. FOR TRAINING AND TESTING DEEPFAKE DETECTORS ONLY. The people shown own their
likeness: do not publish, share or use these videos for anything else. Every fake carries a provenance record
in its MP4 metadata (synthetic: true, the model id, the source's hash){mark}.

LAYOUT (as FaceForensics++)
  original_sequences/youtube/<comp>/videos/<video>.mp4                  real (re-encoded as the fakes are)
  manipulated_sequences/<method>/<comp>/videos/<video>_<identity>.mp4   fake: <video>'s frames, <identity>'s face
  manipulated_sequences/<method>/masks/videos/<video>_<identity>/<frame>.png   binary mask per frame:
        255 where the swap may have changed the pixel (all 0 on frames without a face)
{crops}  compressions: {comps}; real and fake differ only by the manipulation.
  manifest.csv / manifest.json: one row per video file (label, split, frames, person, identity, model, mask
  folder, the real file it pairs with). dataset.json: all of this as data.

SPLIT (by {info['split']['by']}, seed {info['split']['seed']}, shares train/val/test {shares})
{textwrap.fill(info['split']['rule'], 110)}
{splits}

BALANCE
{textwrap.fill(info['balance'], 110)}

NOTES
{notes}"""
