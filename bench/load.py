"""Load figure: N signed-in visitors at once on one server for a few minutes; prints one JSON line.

    .venv/bin/python bench/load.py [--visitors 20] [--users 2] [--seconds 180]

The real `app.py` (`--device cpu`, `--auth-file`, jobs run in the server's own worker as on one box)
on a free loopback port, a fresh workspace under a temporary folder. Each user has a project with a
lite model (trained here 20 iterations on noise faces) and a training of it queued through the page
(Resume, target 100 000): one runs, the others wait in the train lane. Every visitor is a page of one
of the users (round robin), signed in through /login, driving the page's own events as a browser does
(Gradio's upload route, /gradio_api/queue/join and the event stream): it uploads the photo
(shared/data/photos/obama_small.jpg) once, then until the time is up: a swap preview of it (the
photo's change event, timed from the join to the answer), a poll of the training's progress (the
Train tab's timer event), one second of thinking.

Figures: preview latency p50/p95/max, previews and polls answered, requests refused (HTTP 429, a
full queue) and failed (any other error, an event answered with an error, a timeout), the server's
peak memory (VmHWM) after start-up and at the end, the training's progress meanwhile, and the load
average (1/5/15 min) at the start and the end, with the CPU count.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from engine.models import folder as model_folder  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PHOTO = ROOT.parent / "shared" / "data" / "photos" / "obama_small.jpg"


class Page:
    """One signed-in browser page: its cookies, its Gradio session and its events (found by elem_id)."""

    def __init__(self, url: str, user: str, password: str) -> None:
        self.url, self.http = url, requests.Session()
        answer = self.http.post(f"{url}/login", data={"username": user, "password": password}, timeout=30)
        answer.raise_for_status()
        self.session = secrets.token_hex(6)
        self.config = self.http.get(f"{url}/config", timeout=30).json()
        self.ids = {c.get("props", {}).get("elem_id"): c["id"] for c in self.config["components"]}
        self.components = {c["id"]: c for c in self.config["components"]}
        self.photo: dict | None = None  # this page's upload of the photo

    def fn(self, elem: str | None, event: str, output: str | None = None) -> int:
        for i, dep in enumerate(self.config["dependencies"]):
            targets = {(t[0], t[1]) for t in dep["targets"]}
            if elem is not None and (self.ids.get(elem), event) not in targets:
                continue
            if elem is None and event not in {t[1] for t in targets}:
                continue
            if output is None or self.ids[output] in dep["outputs"]:
                return i
        raise KeyError((elem, event, output))

    def inputs(self, fn: int, **values) -> list:
        """The event's inputs at the page's initial values (states None: kept server-side), some replaced
        by elem_id."""
        out = []
        for cid in self.config["dependencies"][fn]["inputs"]:
            comp = self.components[cid]
            elem = comp.get("props", {}).get("elem_id")
            default = None if comp["type"] in ("state", "browserstate") else comp.get("props", {}).get("value")
            out.append(values.get(elem, default))
        return out

    def call(self, fn: int, data: list, timeout: float = 120) -> tuple[str, str]:
        """-> ("ok" | "refused" | "failed", detail)."""
        body = {"data": data, "fn_index": fn, "session_hash": self.session, "event_data": None,
                "trigger_id": (self.config["dependencies"][fn]["targets"] or [[None]])[0][0]}
        try:
            joined = self.http.post(f"{self.url}/gradio_api/queue/join", json=body, timeout=timeout)
            if joined.status_code != 200:
                return ("refused" if joined.status_code == 429 else "failed"), f"HTTP {joined.status_code}"
            event = joined.json()["event_id"]
            with self.http.get(f"{self.url}/gradio_api/queue/data", params={"session_hash": self.session},
                               stream=True, timeout=timeout) as stream:
                for line in stream.iter_lines(decode_unicode=True):
                    if not line or not line.startswith("data:"):
                        continue
                    msg = json.loads(line[5:])
                    if msg.get("event_id") != event and msg.get("msg") != "queue_full":
                        continue
                    if msg.get("msg") == "queue_full":
                        return "refused", "queue full"
                    if msg.get("msg") == "process_completed":
                        if msg.get("success"):
                            return "ok", ""
                        return "failed", str((msg.get("output") or {}).get("error"))[:200]
            return "failed", "event stream closed"
        except requests.RequestException as err:
            return "failed", f"{type(err).__name__}: {err}"[:200]

    def upload(self, path: Path) -> dict:
        answer = self.http.post(f"{self.url}/gradio_api/upload", files=[("files", (path.name, path.read_bytes()))],
                                timeout=60)
        answer.raise_for_status()
        return {"path": answer.json()[0], "orig_name": path.name, "meta": {"_type": "gradio.FileData"}}


def noise_model(folder: Path) -> Path:
    """Face sets of noise faces and a lite model trained 20 iterations on them (one CPU thread)."""
    import torch

    from engine.faces.faceset import FaceSet
    from engine.train import TrainConfig, train

    for k, side in enumerate("AB"):
        rng = np.random.default_rng(k)
        faceset = FaceSet(folder / "faces" / side, size=96, create=True)
        for i in range(12):
            faceset.add({"file": f"f{i}.png", "source": "synthetic", "frame": i},
                        rng.integers(0, 255, (96, 96, 3), dtype=np.uint8))
        faceset.save()
    torch.set_num_threads(1)
    result = train(TrainConfig(faces_a=str(folder / "faces" / "A"), faces_b=str(folder / "faces" / "B"),
                               model_dir=str(folder / "model"), preset="lite", device="cpu", batch_size=4,
                               iterations=20, save_every=20, preview_every=0))
    assert result.status == "done", result
    return folder


def peak_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return round(int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) / 1024, 1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--visitors", type=int, default=20)
    p.add_argument("--users", type=int, default=2, help="users the visitors are pages of (each has a project)")
    p.add_argument("--seconds", type=float, default=180)
    args = p.parse_args()

    root = Path(tempfile.mkdtemp(prefix="studio-load-"))
    proc = None
    try:
        users = {f"user{i + 1}": secrets.token_hex(8) for i in range(args.users)}
        (root / "users.txt").write_text("".join(f"{u}:{pw}\n" for u, pw in users.items()))
        (root / "gradio").mkdir()
        (root / "tmp").mkdir()
        port = _free_port()
        env = {**os.environ, "GRADIO_TEMP_DIR": str(root / "gradio"), "TMPDIR": str(root / "tmp"),
               "GRADIO_ANALYTICS_ENABLED": "False", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        log = open(root / "app.log", "w")  # noqa: SIM115 - the server's, closed with it
        proc = subprocess.Popen([sys.executable, "app.py", "--port", str(port), "--workspace", str(root / "ws"),
                                 "--auth-file", str(root / "users.txt"), "--device", "cpu"],
                                cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env)
        url = f"http://127.0.0.1:{port}"
        deadline = time.time() + 180
        while True:
            try:
                requests.get(url, timeout=5)
                break
            except requests.ConnectionError:
                if proc.poll() is not None or time.time() > deadline:
                    raise SystemExit(f"app did not start:\n{(root / 'app.log').read_text()}") from None
                time.sleep(0.5)
        model = noise_model(root / "model")
        for user, password in users.items():  # each user: a project with the model, a training queued
            page = Page(url, user, password)
            assert page.call(page.fn(None, "load"), [None])[0] == "ok"
            assert page.call(page.fn("project-create", "click"), ["load"])[0] == "ok"
            project = root / "ws" / user / "load"
            for sub in ("faces", "model"):
                shutil.copytree(model / sub, project / sub, dirs_exist_ok=True)
            resume = page.fn("train-resume", "click")
            status, detail = page.call(resume, page.inputs(resume, **{"train-iterations": 100_000,
                                                                      "train-minutes": 0}))
            assert status == "ok", detail

        pages = []
        for i in range(args.visitors):
            user = list(users)[i % len(users)]
            page = Page(url, user, users[user])
            assert page.call(page.fn(None, "load"), [None])[0] == "ok"
            assert page.call(page.fn("project-choose", "change"), ["load"])[0] == "ok"
            page.photo = page.upload(PHOTO)  # a user's upload is theirs alone (webapp.access.Guard)
            pages.append(page)
        preview = pages[0].fn("swap-photo", "change")
        poll = pages[0].fn(None, "tick", output="train-status")
        for page in pages[:args.users]:  # each user's model loaded once before the clock starts
            assert page.call(preview, page.inputs(preview, **{"swap-photo": page.photo}))[0] == "ok"
        start_mb = peak_mb(proc.pid)
        latencies, outcomes, errors = [], {"preview": {}, "poll": {}}, []
        lock, gate = threading.Lock(), threading.Barrier(len(pages))
        load_start = os.getloadavg()

        def visit(page: Page) -> None:
            gate.wait(timeout=120)
            end = time.monotonic() + args.seconds
            while time.monotonic() < end:
                t0 = time.perf_counter()
                status, detail = page.call(preview, page.inputs(preview, **{"swap-photo": page.photo}))
                took = time.perf_counter() - t0
                polled, poll_detail = page.call(poll, [None, None])
                with lock:
                    if status == "ok":
                        latencies.append(took)
                    for kind, s, d in (("preview", status, detail), ("poll", polled, poll_detail)):
                        outcomes[kind][s] = outcomes[kind].get(s, 0) + 1
                        if s != "ok" and len(errors) < 10:
                            errors.append(f"{kind}: {d}")
                time.sleep(1.0)

        started = time.monotonic()
        threads = [threading.Thread(target=visit, args=(page,)) for page in pages]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.monotonic() - started
        load_end = os.getloadavg()
        lat = np.array(sorted(latencies)) if latencies else np.array([np.nan])
        refused = sum(o.get("refused", 0) for o in outcomes.values())
        failed = sum(o.get("failed", 0) for o in outcomes.values())
        figures = {
            "bench": "load", "visitors": args.visitors, "users": args.users, "seconds": round(wall, 1),
            "previews": outcomes["preview"].get("ok", 0), "polls": outcomes["poll"].get("ok", 0),
            "preview_p50_s": round(float(np.percentile(lat, 50)), 3),
            "preview_p95_s": round(float(np.percentile(lat, 95)), 3), "preview_max_s": round(float(lat[-1]), 3),
            "refused": refused, "failed": failed, "errors": errors,
            "server_peak_mb_after_start": start_mb, "server_peak_mb": peak_mb(proc.pid),
            "loadavg_start": [round(x, 2) for x in load_start], "loadavg_end": [round(x, 2) for x in load_end],
            "cpus": os.cpu_count()}
        proc.terminate()  # the running training stops and saves: how far it got under the load
        proc.wait(timeout=120)
        figures["training_iterations"] = [model_folder.summary(root / "ws" / u / "load" / "model")["iteration"]
                                          for u in users]
        print(json.dumps(figures))
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(root, ignore_errors=True)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


if __name__ == "__main__":
    main()
