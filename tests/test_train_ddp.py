"""Training beyond one process: DDP over gloo keeps every rank's weights identical."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
import torch.multiprocessing as mp
from test_train import tiny

from engine.models import build_model, load_model
from engine.train.data import rank_indices

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train_rank(rank: int, world_size: int, port: int, faceset_a: str, faceset_b: str, out: str) -> None:
    """One spawned rank: the environment torchrun would give it, then the ordinary train()."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    from engine.train import train

    result = train(tiny(faceset_a, faceset_b, Path(out) / "model", iterations=4, save_every=4, batch_size=4))
    torch.save({k: v.contiguous() for k, v in result.model.state_dict().items()}, Path(out) / f"rank{rank}.pt")


def test_two_gloo_ranks_hold_identical_weights_after_training(faceset_a, faceset_b, tmp_path):
    mp.spawn(train_rank, args=(2, free_port(), str(faceset_a), str(faceset_b), str(tmp_path)), nprocs=2)

    rank0, rank1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    saved, meta = load_model(tmp_path / "model")
    assert meta["iteration"] == 4
    torch.manual_seed(0)  # train() seeds the initial weights with --seed (0 here)
    start = build_model("lite").state_dict()
    assert rank0.keys() == rank1.keys() == start.keys()
    for name, tensor in rank0.items():
        assert torch.equal(tensor, rank1[name]), name
        assert torch.equal(tensor, saved.state_dict()[name]), name
    assert any(not torch.equal(tensor, start[name]) for name, tensor in rank0.items())  # it did train


def test_ranks_train_on_disjoint_slices_that_cover_the_set():
    slices = [rank_indices(10, rank, 3) for rank in range(3)]
    assert sorted(np.concatenate(slices).tolist()) == list(range(10))
    assert [len(s) for s in slices] == [4, 3, 3]


def test_torchrun_cli_trains_with_two_processes_and_only_rank_0_reports(faceset_a, faceset_b, tmp_path):
    folder = tmp_path / "m"
    args = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
            "-m", "engine", "train", "--faces-a", str(faceset_a), "--faces-b", str(faceset_b), "--model",
            str(folder), "--preset", "lite", "--device", "cpu", "--batch-size", "2", "--iterations", "3",
            "--save-every", "3", "--preview-every", "3"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("done at iteration 3") == 1
    assert load_model(folder)[1]["iteration"] == 3
    assert (folder / "previews" / "latest.png").is_file()
