"""SIGKILL at random moments of a real training, 20 times in a row on one model folder, each run resuming
the last: the folder always loads, the next run starts at its saved iteration, at most one save interval
of iterations is lost, and the temporary files a kill leaves are gone once the next run has started.

The figures (docs/reliability.md, "SIGKILL during training") come from this test's summary line
(`pytest tests/test_sigkill_training.py -q -s`).
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from engine.atomic import temp_files
from engine.models import load_model
from engine.models.folder import LOCK, OPTIMIZER
from engine.train.checkpoint import load

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
KILLS = 20
SAVE_EVERY = 10  # lite, batch 2, one CPU thread: a save every second or so
TARGET = 1_000_000  # never reached: every run but the last ends by SIGKILL
SEED = 15
STEP = re.compile(rf"(\d+)/{TARGET} \[")  # the tqdm bar's "iteration/total [" (one report per CPU iteration)


def command(faceset_a: Path, faceset_b: Path, folder: Path, resume: bool, iterations: int = TARGET) -> list[str]:
    args = [sys.executable, "-m", "engine", "train", "--model", str(folder), "--preset", "lite", "--device", "cpu",
            "--batch-size", "2", "--iterations", str(iterations), "--save-every", str(SAVE_EVERY),
            "--preview-every", "0"]
    return args + (["--resume"] if resume else ["--faces-a", str(faceset_a), "--faces-b", str(faceset_b)])


def steps(log: Path) -> list[int]:
    return [int(n) for n in STEP.findall(log.read_text(errors="replace"))]


def held_iteration(folder: Path) -> int:
    """The iteration the folder holds; it must load as a model and as a resumable checkpoint."""
    model, meta = load_model(folder)
    _, state, _ = load(folder, torch.device("cpu"))
    assert state.iteration == meta["iteration"]
    return meta["iteration"]


def test_sigkill_at_random_moments_twenty_times_loses_at_most_one_save_interval(faceset_a, faceset_b, tmp_path):
    rng = random.Random(SEED)
    folder = tmp_path / "m"
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    held, lost, resume_s, orphans = 0, [], [], set()  # orphans: temporary files the last kill left
    mid_save = orphan_count = orphan_bytes = optimizer_restarts = 0
    for kill in range(KILLS):
        resume = kill > 0
        log = tmp_path / f"run{kill:02d}.log"
        # one kill in five at a random moment of the start (imports, loading, the sweep); the rest while
        # training, 40 % of those at any moment and 60 % aimed at a save: just after the iteration before it
        during_start = resume and rng.random() < 0.2
        aimed = not during_start and rng.random() < 0.6
        delay = rng.uniform(0.5, 6.0) if during_start else rng.uniform(0.05, 0.4) if aimed else rng.uniform(0.0, 2.5)
        t0 = time.monotonic()
        with open(log, "w") as err:
            process = subprocess.Popen(command(faceset_a, faceset_b, folder, resume), cwd=REPO, env=env,
                                       stdout=subprocess.DEVNULL, stderr=err)
        try:
            if during_start:
                time.sleep(delay)
            else:
                while not steps(log):
                    assert process.poll() is None, log.read_text()
                    assert time.monotonic() - t0 < 180, "no training step within 3 minutes"
                    time.sleep(0.02)
                resume_s.append(time.monotonic() - t0)
                while aimed and steps(log)[-1] % SAVE_EVERY != SAVE_EVERY - 1:
                    assert process.poll() is None, log.read_text()
                    time.sleep(0.005)
                time.sleep(delay)
        finally:
            process.send_signal(signal.SIGKILL)
            process.wait()
        reported = steps(log)
        text = log.read_text(errors="replace")
        if reported:
            # it started where the folder stood, and the orphans of the kill before were swept first
            assert reported[0] == held + 1, (kill, reported[:3], held)
            assert not held or f"{folder}: resuming at iteration {held}" in text
            assert not orphans & set(temp_files(folder)), (kill, orphans)
        now = held_iteration(folder)
        left = temp_files(folder)
        optimizer_at = torch.load(folder / OPTIMIZER, weights_only=True)["iteration"]
        mid_save += bool(left) or optimizer_at != now  # killed between a save's first rename and its last
        orphan_count, orphan_bytes = orphan_count + len(left), orphan_bytes + sum(p.stat().st_size for p in left)
        orphans = set(left)
        if not reported:  # killed before its first step: nothing was trained or saved
            assert now == held, (kill, now, held)
            continue
        last = reported[-1]  # the save of iteration it comes before its report: it may be on disk already
        assert now in {last // SAVE_EVERY * SAVE_EVERY, (last + 1) // SAVE_EVERY * SAVE_EVERY}, (kill, last, now)
        lost.append(max(0, last - now))
        assert lost[-1] < SAVE_EVERY
        optimizer_restarts += "restarting the optimizer" in text  # the kill before left it out of step
        held = now

    # one last run, to its end: the last kill's orphans swept, nothing left behind, the lock file gone
    log = tmp_path / "final.log"
    with open(log, "w") as err:
        final = subprocess.run(command(faceset_a, faceset_b, folder, True, held + 3), cwd=REPO, env=env,
                               stdout=subprocess.PIPE, stderr=err, text=True, timeout=300)
    assert final.returncode == 0, log.read_text()
    assert f"done at iteration {held + 3}" in final.stdout
    assert temp_files(folder) == [] and not (folder / LOCK).exists()
    assert held_iteration(folder) == held + 3

    figures = {"kills": KILLS, "killed_while_training": len(lost), "killed_mid_save": mid_save,
               "orphans_left": orphan_count, "orphan_mb": round(orphan_bytes / 1e6, 1),
               "save_every": SAVE_EVERY, "lost_max": max(lost), "lost_mean": round(statistics.mean(lost), 2),
               "resume_to_first_step_s_median": round(statistics.median(resume_s), 2),
               "resume_to_first_step_s_max": round(max(resume_s), 2), "optimizer_restarts": optimizer_restarts,
               "final_iteration": held + 3}
    print("SIGKILL figures:", json.dumps(figures))
