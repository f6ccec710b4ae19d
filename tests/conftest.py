"""Shared fixtures: the real data in ../shared/data and small face sets extracted from it once."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _require_data() -> Path:
    if not DATA.is_dir():
        pytest.skip(f"real test data not found at {DATA} (the repo expects ../shared/data beside it)")
    return DATA


@pytest.fixture(scope="session", autouse=True)
def precision_cache(tmp_path_factory) -> Path:
    """The precision probe's per-machine cache in a folder of this test session's, not the user's own
    (subprocesses inherit it): the probe runs once per network a session trains, never from a stale answer."""
    import os

    folder = tmp_path_factory.mktemp("cache")
    before = os.environ.get("FACESWAP_STUDIO_CACHE")
    os.environ["FACESWAP_STUDIO_CACHE"] = str(folder)
    yield folder
    if before is None:
        os.environ.pop("FACESWAP_STUDIO_CACHE", None)
    else:
        os.environ["FACESWAP_STUDIO_CACHE"] = before


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return _require_data()


@pytest.fixture(scope="session")
def astronaut_and_obama():
    """Two real photos and their 5 landmarks (eyes, nose tip, mouth corners; hand-checked on 4x zooms):
    skimage's astronaut as the frame, obama_small.jpg as the face pasted into it."""
    import cv2
    import numpy as np
    import skimage.data

    photo = _require_data() / "photos" / "obama_small.jpg"
    if not photo.exists():
        pytest.skip(f"{photo} not available")
    return SimpleNamespace(
        frame=skimage.data.astronaut(),
        frame_points=np.array([(204, 101), (247, 102), (225, 126), (205, 140), (245, 140)], float),
        face=cv2.cvtColor(cv2.imread(str(photo)), cv2.COLOR_BGR2RGB),
        face_points=np.array([(139, 97), (186, 96), (161, 124), (133, 145), (189, 145)], float))


@pytest.fixture(scope="session")
def mtcnn():
    from engine.faces.mtcnn import MTCNNDetector

    return MTCNNDetector()


@pytest.fixture(scope="session")
def faceset_a(tmp_path_factory, mtcnn) -> Path:
    """Destination identity: faces from talk2.mp4 (every 3rd frame, about 42 faces)."""
    from engine.faces.extract import ExtractOptions, extract

    out = tmp_path_factory.mktemp("faceset_a")
    report = extract([_require_data() / "video" / "talk2.mp4"], out, ExtractOptions(every=3), detector=mtcnn)
    assert report.faces_kept >= 30, report
    return out


@pytest.fixture(scope="session")
def faceset_b(tmp_path_factory, mtcnn) -> Path:
    """Source identity: faces from 48 photos of Steve Carell."""
    from engine.faces.extract import ExtractOptions, extract

    photos = sorted((_require_data() / "people" / "carell").glob("*.jpg"))[:48]
    out = tmp_path_factory.mktemp("faceset_b")
    report = extract(photos, out, ExtractOptions(), detector=mtcnn)
    assert report.faces_kept >= 40, report
    return out


@pytest.fixture(scope="module")
def one_torch_thread():
    """On a shared 2-core machine one torch thread is several times faster than two fighting for cores."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def train_lite(faces_a: Path, faces_b: Path, folder: Path, iterations: int) -> Path:
    """A lite model trained on the CPU for `iterations` (batch 4, saved at the end) into `folder`."""
    from engine.train import TrainConfig, train

    result = train(TrainConfig(faces_a=str(faces_a), faces_b=str(faces_b), model_dir=str(folder),
                               preset="lite", device="cpu", batch_size=4, iterations=iterations,
                               save_every=iterations, preview_every=0))
    assert result.status == "done"
    return folder


@pytest.fixture(scope="session")
def tiny_model(faceset_a, faceset_b, tmp_path_factory) -> Path:
    """A lite model trained for 30 iterations: blurry faces, but real weights in a real model folder."""
    return train_lite(faceset_a, faceset_b, tmp_path_factory.mktemp("swap_model") / "lite", 30)


def free_port() -> int:
    """A TCP port free on loopback now."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _no_redis(why: str):
    """Redis-backed tests skip where no server can start, and fail in CI (CI=true), which must run them."""
    import os

    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI needs a Redis server for this test: {why}")
    pytest.skip(f"no Redis server: {why}")


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    """A real Redis server for this test session on a free loopback port (Debian's redis-server, which
    `make test` and .ci/run install when missing), stopped after; or the one $STUDIO_TEST_REDIS names."""
    import os
    import shutil
    import subprocess
    import time

    given = os.environ.get("STUDIO_TEST_REDIS")
    if given:
        yield given
        return
    exe = shutil.which("redis-server")
    if exe is None:
        _no_redis("redis-server is not installed (apt-get install redis-server; `make test` does it)")
    try:
        import redis
    except ImportError:
        _no_redis("the redis client is not installed (it is in requirements.txt)")
    folder = tmp_path_factory.mktemp("redis")
    port = free_port()
    proc = subprocess.Popen([exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                             "--dir", str(folder), "--logfile", str(folder / "redis.log")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    url = f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + 20
    while True:
        try:
            redis.Redis.from_url(url).ping()
            break
        except redis.ConnectionError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                log = (folder / "redis.log").read_text() if (folder / "redis.log").exists() else ""
                _no_redis(f"redis-server did not start: {log[-500:]}")
            time.sleep(0.1)
    yield url
    proc.terminate()
    proc.wait(timeout=30)


@pytest.fixture
def redis_url(redis_server) -> str:
    """The session's Redis server, emptied for this test (its queues and job rows start from nothing)."""
    import redis

    redis.Redis.from_url(redis_server).flushdb()
    return redis_server
