"""An evaluation's report: assembled from the per-frame records (`build_report`), then written as
report.json (every figure), report.html (figures beside a strip of destination/swapped faces,
`StripCollector`, and per-frame plots), and the PNGs the page shows; and read back for the web app.

Every file is written atomically, so a crash never leaves a report that looks whole but is not.
Non-finite numbers (a frame without a face, PSNR of identical images) are written as JSON null.
"""

from __future__ import annotations

import html
import io
import math
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from engine import atomic

from . import metrics as M
from .inputs import spread
from .meter import FrameRecord, main_face, region_box

STRIP_SIDE = 192  # px, height of each close-up in the report's strip

# (key in summary, label, what it means / what good looks like)
ROWS = [
    ("id_retrieval", "identity retrieval", "share of swapped faces nearer to B's mean embedding than to A's (1 = all read as B)"),
    ("id_verified", "verified as B", "share of swapped faces as near B's mean as 95% of B's own photos are "
                                     "(stricter than retrieval: a face that is merely no longer A fails it)"),
    ("id_similarity_target", "similarity to B", "mean cosine similarity of swapped faces to B's mean embedding"),
    ("id_similarity_target_real", "real B to B (leave-one-out)", "the same figure for real B faces: the ceiling"),
    ("id_similarity_source", "similarity to A", "mean cosine similarity of swapped faces to A's mean (lower = less of A left)"),
    ("id_jitter", "identity jitter", "std of per-frame similarity to B (lower = steadier identity)"),
    ("landmark_nme", "landmark NME", "68-point distance swapped vs destination / inter-ocular distance (0 = same expression)"),
    ("pose_error_deg", "pose error (deg)", "rotation between the head poses solvePnP finds on swapped and destination"),
    ("ssim_a", "SSIM A->A", "held-out A faces through the A decoder (1 = identical)"),
    ("psnr_a", "PSNR A->A (dB)", "same faces, peak signal-to-noise ratio"),
    ("ssim_b", "SSIM B->B", "held-out B faces through the B decoder"),
    ("psnr_b", "PSNR B->B (dB)", "same faces"),
    ("sharpness_ratio", "sharpness ratio", "Laplacian variance of swapped face / destination face (1 = as sharp)"),
    ("seam_score", "seam score", "gradient across the blend edge, swapped / destination (1 = no seam)"),
    ("flicker", "flicker", "warping error of swapped frames / destination's, flow from the destination (1 = as steady)"),
    ("seconds", "swap seconds", "time the swap took"),
    ("fps", "swap frames/s", "frames swapped per second"),
]

# per-frame plots: file, title, [(series key, label)], y label
PLOTS = [
    ("identity.png", "Identity per frame", [("id_similarity_target", "swapped vs B"), ("id_similarity_source", "swapped vs A"),
                                            ("destination_similarity_target", "destination vs B"),
                                            ("destination_similarity_source", "destination vs A")], "cosine similarity"),
    ("geometry.png", "Expression kept (68-point landmarks)", [("landmark_nme", "landmark NME")], "NME"),
    ("pose.png", "Head pose error", [("pose_error_deg", "pose error")], "degrees"),
    ("quality.png", "Sharpness and seam", [("sharpness_ratio", "sharpness ratio"), ("seam_score", "seam score")], "ratio"),
    ("temporal.png", "Warping error between consecutive frames",
     [("warping_error_swapped", "swapped"), ("warping_error_destination", "destination")], "mean |error| (0-255)"),
]


@dataclass
class SwapFacts:
    """What the report says of the swap: the frames measured, which runs, how long it took and what was timed."""

    count: int  # frames that will be measured
    clips: list[list[int]]
    what: str
    output: str | None = None  # the swapped video, when the whole video was swapped
    seconds: float = 0.0
    stages: dict = field(default_factory=dict)


class StripCollector:
    """Keeps face close-ups of a few evenly spread frames for the report's destination/swapped strip."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.wanted: set[int] = set()
        self.pairs: list[tuple[int, np.ndarray, np.ndarray]] = []

    def plan(self, indices: list[int]) -> None:
        self.wanted = {indices[i] for i in spread(len(indices), self.count)}

    def offer(self, index: int, dest: np.ndarray, swapped: np.ndarray, faces: list) -> None:
        face = main_face(faces)
        if index not in self.wanted or face is None:
            return
        y0, y1, x0, x1 = region_box(face.region(dest.shape), 0)
        pad = (y1 - y0) // 4
        y0, y1 = max(0, y0 - pad), min(dest.shape[0], y1 + pad)
        x0, x1 = max(0, x0 - pad), min(dest.shape[1], x1 + pad)
        scale = STRIP_SIDE / max(1, y1 - y0)
        size = (max(1, round((x1 - x0) * scale)), STRIP_SIDE)
        self.pairs.append((index, cv2.resize(dest[y0:y1, x0:x1], size, interpolation=cv2.INTER_AREA),
                           cv2.resize(swapped[y0:y1, x0:x1], size, interpolation=cv2.INTER_AREA)))


def _mean(values) -> float:
    v = np.asarray(list(values), dtype=np.float64)
    v = v[np.isfinite(v)]
    return float(v.mean()) if len(v) else math.nan


def build_report(options, facts: dict, records: list[FrameRecord], refs: dict, threshold: float,
                 recon: dict, swap: SwapFacts, seconds: float) -> dict:
    """The report as a JSON-able dict: headline figures in `summary`, details and per-frame series.

    `options` is the job's `EvaluateOptions` (its model and video are named in the report).
    """
    faced = [r for r in records if r.face]
    pose = np.array([r.pose for r in faced]).reshape(-1, 4)
    pose_mean = [_mean(pose[:, k]) for k in range(4)]
    warp_s = np.array([r.warp_swapped for r in records])
    warp_d = np.array([r.warp_destination for r in records])
    fps = swap.count / swap.seconds if swap.seconds > 0 else math.nan
    summary = {
        "id_retrieval": _mean(r.retrieved for r in faced),
        "id_verified": _mean(r.verified for r in faced),
        "id_similarity_target": _mean(r.sim_target for r in faced),
        "id_similarity_source": _mean(r.sim_source for r in faced),
        "id_similarity_target_real": _mean(M.leave_one_out_similarity(refs["b"])),
        "id_jitter": M.jitter([r.sim_target for r in faced]),
        "landmark_nme": _mean(r.nme for r in faced),
        "pose_error_deg": pose_mean[3],
        "ssim_a": recon["a"]["ssim"], "psnr_a": recon["a"]["psnr"],
        "ssim_b": recon["b"]["ssim"], "psnr_b": recon["b"]["psnr"],
        "sharpness_ratio": _mean(r.sharpness for r in faced),
        "seam_score": _mean(r.seam for r in faced),
        "flicker": M.flicker_ratio(warp_s, warp_d),
        "seconds": swap.seconds, "fps": fps,
    }
    return {
        "status": "done",
        "model": str(options.model), "video": str(options.video),
        "model_facts": facts,
        "frames": {"measured": len(records), "with_face": len(faced), "sampled": swap.output is None,
                   "clips": [[c[0], c[-1]] for c in swap.clips]},
        "summary": summary,
        "identity": {
            "faces_a": len(refs["a"]), "faces_b": len(refs["b"]),
            "real_b_leave_one_out": summary["id_similarity_target_real"],
            "real_a_leave_one_out": _mean(M.leave_one_out_similarity(refs["a"])),
            "destination_similarity_target": _mean(r.dest_sim_target for r in faced),
            "destination_similarity_source": _mean(r.dest_sim_source for r in faced),
            "destination_retrieval": _mean(r.dest_retrieved for r in faced),
            "destination_verified": _mean(r.dest_verified for r in faced),
            "verification_threshold": threshold,
            "distance_target": _mean(r.dist_target for r in faced),
            "destination_distance_target": _mean(r.dest_dist_target for r in faced),
            "distance_target_real": _mean(M.leave_one_out_distance(refs["b"])),
        },
        "pose_error_deg": dict(zip(("yaw", "pitch", "roll", "angle"), pose_mean, strict=True)),
        "reconstruction": recon,
        "temporal": {"flicker": summary["flicker"], "warping_error_swapped": _mean(warp_s),
                     "warping_error_destination": _mean(warp_d),
                     "pairs": int(np.sum(np.isfinite(warp_s) & np.isfinite(warp_d)))},
        "speed": {"seconds": swap.seconds, "fps": fps, "frames": swap.count, "what": swap.what,
                  "stages": swap.stages, "output": swap.output},
        "evaluation_seconds": seconds,
        "per_frame": {
            "index": [r.index for r in records],
            "id_similarity_target": [r.sim_target for r in records],
            "id_similarity_source": [r.sim_source for r in records],
            "destination_similarity_target": [r.dest_sim_target for r in records],
            "destination_similarity_source": [r.dest_sim_source for r in records],
            "landmark_nme": [r.nme for r in records],
            "pose_error_deg": [float(r.pose[3]) for r in records],
            "sharpness_ratio": [r.sharpness for r in records],
            "seam_score": [r.seam for r in records],
            "warping_error_swapped": [r.warp_swapped for r in records],
            "warping_error_destination": [r.warp_destination for r in records],
        },
    }


def clean(value):
    """JSON-safe copy: numpy scalars and arrays to Python, NaN and infinities to None."""
    if isinstance(value, dict):
        return {str(k): clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    if isinstance(value, np.ndarray):
        return clean(value.tolist())
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return value


REPORT_JSON = "report.json"  # every figure
REPORT_HTML = "report.html"  # the page: figures, strip, plots
SWAPPED_VIDEO = "swapped.mp4"  # a whole-video evaluation's render


def is_report(folder: str | Path) -> bool:
    """Whether `folder` holds a finished report (its figures and its page written)."""
    return (Path(folder) / REPORT_JSON).is_file() and (Path(folder) / REPORT_HTML).is_file()


def write_report(out: str | Path, report: dict, pairs: list[tuple[int, np.ndarray, np.ndarray]],
                 grids: dict[str, np.ndarray]) -> Path:
    """Write report.json, report.html, plots, frame pairs and reconstruction grids; -> report.html."""
    out = Path(out)
    images = {"pairs": [], "plots": [], "recon": {}}
    for index, dest, swapped in pairs:
        name = f"frames/pair_{index:05d}.png"
        gap = np.full((dest.shape[0], 4, 3), 255, np.uint8)
        atomic.write_image(out / name, np.concatenate([dest, gap, swapped], axis=1))
        images["pairs"].append((index, name))
    for side, grid in grids.items():
        name = f"reconstruction_{side}.png"
        atomic.write_image(out / name, grid)
        images["recon"][side] = name
    series = report["per_frame"]
    for name, title, lines, ylabel in PLOTS:
        atomic.write_bytes(out / name, plot_png(series["index"], [(series[k], label) for k, label in lines],
                                                title, ylabel))
        images["plots"].append(name)
    atomic.write_json(out / REPORT_JSON, clean(report))
    page = out / REPORT_HTML
    atomic.write_text(page, render_html(clean(report), images))
    return page


@dataclass
class SavedReport:
    """A report folder read back: the figures and the paths of the images its page shows."""

    folder: Path
    report: dict
    pairs: list[tuple[int, Path]]  # (frame index, destination | swapped PNG)
    plots: list[Path]
    reconstructions: dict[str, Path]  # side -> grid PNG

    @property
    def page(self) -> Path:
        return self.folder / REPORT_HTML

    @property
    def figures(self) -> Path:
        return self.folder / REPORT_JSON

    @property
    def video(self) -> Path | None:
        path = self.folder / SWAPPED_VIDEO
        return path if path.is_file() else None


def read_report(folder: str | Path) -> SavedReport:
    """The report `write_report` left in `folder`; UserError when there is none or it is damaged."""
    import json

    from engine.errors import UserError

    folder = Path(folder)
    try:
        report = json.loads((folder / REPORT_JSON).read_text())
        report["summary"]  # noqa: B018 - a report without figures is damaged
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise UserError(f"{folder} holds no readable {REPORT_JSON} ({err}): run the evaluation again") from err
    pairs = sorted((int(p.stem.rsplit("_", 1)[1]), p) for p in (folder / "frames").glob("pair_*.png")
                   if p.stem.rsplit("_", 1)[1].isdigit())
    plots = [folder / name for name, *_ in PLOTS if (folder / name).is_file()]
    recon = {side: folder / f"reconstruction_{side}.png" for side in ("a", "b")
             if (folder / f"reconstruction_{side}.png").is_file()}
    return SavedReport(folder, report, pairs, plots, recon)


def standalone_html(saved: SavedReport) -> str:
    """report.html with its images inlined as data: URIs, for showing it where its folder is not served
    (the web app's Evaluate tab puts it in an iframe)."""
    import base64

    def inline(path: Path) -> str:
        return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")

    images = {"pairs": [(index, inline(path)) for index, path in saved.pairs],
              "plots": [inline(path) for path in saved.plots],
              "recon": {side: inline(path) for side, path in saved.reconstructions.items()}}
    return render_html(saved.report, images, json_link=False)


def plot_png(x: list[int], lines: list[tuple[list[float], str]], title: str, ylabel: str) -> bytes:
    """A line plot of per-frame series (gaps where a frame has no value) as PNG bytes."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8.5, 2.6), dpi=100)
    ax = fig.add_subplot()
    for values, label in lines:
        y = np.array([np.nan if v is None else v for v in values], dtype=np.float64)
        ax.plot(x, y, marker="." if len(x) < 40 else None, linewidth=1.2, label=label)
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("frame")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))  # beside, never over the curves
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def format_value(value) -> str:
    """A figure as the report shows it: 4 significant digits, `n/a` where it could not be measured."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _fmt(value) -> str:
    return html.escape(format_value(value))


def summary_rows(summary: dict) -> list[tuple[str, str, str]]:
    """(label, value as text, meaning) of each headline figure: the table of the HTML page and the web app."""
    return [(label, format_value(summary.get(key)), why) for key, label, why in ROWS]


def render_html(report: dict, images: dict, json_link: bool = True) -> str:
    """The report page: headline figures with their meaning, then the strip, plots and details."""
    e = html.escape
    summary = report["summary"]
    rows = "\n".join(f"<tr><td>{e(label)}</td><td class=num>{e(value)}</td><td>{e(why)}</td></tr>"
                     for label, value, why in summary_rows(summary))
    ident = report["identity"]
    pose = report["pose_error_deg"]
    recon = report["reconstruction"]
    extra = [
        ("destination (unswapped) faces: similarity to B / to A / retrieval",
         f"{_fmt(ident['destination_similarity_target'])} / {_fmt(ident['destination_similarity_source'])} / "
         f"{_fmt(ident['destination_retrieval'])}"),
        ("real A faces to A (leave-one-out)", _fmt(ident["real_a_leave_one_out"])),
        ("distance to B's mean: swapped / unswapped / real B (leave-one-out) / verification threshold",
         f"{_fmt(ident.get('distance_target'))} / {_fmt(ident.get('destination_distance_target'))} / "
         f"{_fmt(ident.get('distance_target_real'))} / {_fmt(ident.get('verification_threshold'))}"),
        ("destination (unswapped) faces verified as B", _fmt(ident.get("destination_verified"))),
        ("reference faces embedded (A, B)", f"{ident['faces_a']}, {ident['faces_b']}"),
        ("pose error yaw / pitch / roll (deg)", f"{_fmt(pose['yaw'])} / {_fmt(pose['pitch'])} / {_fmt(pose['roll'])}"),
        ("warping error swapped / destination",
         f"{_fmt(report['temporal']['warping_error_swapped'])} / {_fmt(report['temporal']['warping_error_destination'])}"
         f" over {report['temporal']['pairs']} frame pairs"),
        ("reconstruction faces A", f"{recon['a']['faces']}: {recon['a']['note']}"),
        ("reconstruction faces B", f"{recon['b']['faces']}: {recon['b']['note']}"),
        ("swap timing", f"{_fmt(report['speed']['seconds'])} s for {report['speed']['frames']} frames: "
                        f"{report['speed']['what']}"),
        ("frames measured (with a face)", f"{report['frames']['measured']} ({report['frames']['with_face']})"),
        ("evaluation took (s)", _fmt(report["evaluation_seconds"])),
    ]
    details = "\n".join(f"<tr><td>{e(k)}</td><td colspan=2>{e(v)}</td></tr>"
                        for k, v in extra)
    strip = "\n".join(f"<figure><img src='{e(name)}' alt='frame {i}'><figcaption>frame {i}: destination | swapped"
                      f"</figcaption></figure>" for i, name in images["pairs"])
    plots = "\n".join(f"<img class=plot src='{e(name)}' alt='per-frame plot'>" for name in images["plots"])
    recon_imgs = "\n".join(f"<figure><img src='{e(name)}' alt='reconstruction {side}'><figcaption>{side.upper()}->"
                           f"{side.upper()}: input crops (top), reconstructions (bottom)</figcaption></figure>"
                           for side, name in images["recon"].items())
    facts = report["model_facts"]
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>Swap quality: {e(Path(report['model']).name)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }}
table {{ border-collapse: collapse; margin-bottom: 1em; }}
td, th {{ border-bottom: 1px solid #ddd; padding: 3px 10px; vertical-align: top; }}
td.num {{ text-align: right; font-variant-numeric: tabular-nums; font-weight: 600; }}
figure {{ display: inline-block; margin: 4px; }} figcaption {{ font-size: 80%; color: #555; }}
img.plot {{ display: block; margin: 6px 0; }}
</style></head><body>
<h1>Swap quality</h1>
<p>Model <code>{e(report['model'])}</code> ({e(str(facts.get('preset')))}, {e(str(facts.get('resolution')))} px,
{e(str(facts.get('iteration')))} iterations) on <code>{e(report['video'])}</code>.
A = the destination identity (the video's), B = the identity put in.</p>
<table><tr><th>figure</th><th>value</th><th>meaning</th></tr>
{rows}
{details}
</table>
<h2>Destination | swapped</h2>
<div>{strip}</div>
<h2>Per frame</h2>
{plots}
<h2>Reconstructions of held-out faces</h2>
<div>{recon_imgs}</div>
{'<p>All figures: <a href="report.json">report.json</a>.</p>' if json_link else ''}
</body></html>
"""
