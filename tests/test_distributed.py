"""Sharding, summary gathering, multi-device threads, and a real 2-process DDP step (gloo)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from mis.runtime.distributed import (_interleave, dist_info, gather_summaries,
                                     init_distributed, run_on_devices, shard)
from mis.runtime.executor import ItemResult, RunSummary

HERE = Path(__file__).resolve().parent
SRC = str(HERE.parent / "src")


@pytest.mark.parametrize("n,world_size", [(10, 2), (7, 3), (2, 4), (0, 2)])
def test_shard_covers_everything_once(n, world_size):
    items = list(range(n))
    shares = [shard(items, rank, world_size) for rank in range(world_size)]
    assert sorted(x for share in shares for x in share) == items
    assert shares == [shard(items, rank, world_size) for rank in range(world_size)]
    with pytest.raises(ValueError):
        shard(items, world_size, world_size)


def test_interleave_restores_input_order():
    keys = [f"k{i}" for i in range(7)]
    per_rank = [RunSummary([ItemResult(k, k, None, "done") for k in shard(keys, r, 3)], float(r))
                for r in range(3)]
    combined = _interleave(per_rank)
    assert [r.key for r in combined.results] == keys and combined.seconds == 2.0


def test_single_process_defaults(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    assert dist_info() == (0, 1, 0)
    assert init_distributed() is False
    summary = RunSummary([], 0.0)
    assert gather_summaries(summary) is summary


def test_run_on_devices_uses_every_device_and_keeps_order():
    seen = []

    def fn(item, device):
        seen.append(device)
        return torch.full((2,), float(item), device=device).sum().item()

    assert run_on_devices(list(range(20)), ["cpu", "cpu"], fn) == [2.0 * i for i in range(20)]
    assert len(seen) == 20

    def failing(item, device):
        if item == 3:
            raise ValueError("bad item")
        return item

    with pytest.raises(ValueError, match="bad item"):
        run_on_devices(list(range(10)), ["cpu", "cpu"], failing)


@pytest.mark.slow
@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed unavailable")
def test_torchrun_sharding_and_ddp_step(tmp_path):
    env = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1", "MIS_QUIET": "1"}
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
               "--standalone", str(HERE / "_dist_worker.py"), str(tmp_path)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    # (a) the two shares cover the ten items without overlap; rank 0 gets them back in order.
    shares = [set(json.loads((tmp_path / f"shard_rank{r}.json").read_text())) for r in (0, 1)]
    all_keys = [f"item{i:02d}" for i in range(10)]
    assert shares[0] | shares[1] == set(all_keys) and not shares[0] & shares[1]
    combined = json.loads((tmp_path / "combined.json").read_text())
    assert [row[0] for row in combined] == all_keys
    assert [row[2] for row in combined] == [i % 2 for i in range(10)]
    assert all(row[1] == "done" for row in combined)

    # (b) after one DDP step both ranks hold the same weights, moved from the start, and equal
    # to one step on both ranks' data together (the averaged gradient).
    from _dist_worker import LR, mse, rank_batches

    init = torch.load(tmp_path / "init.pt", weights_only=True)
    w0, w1 = (torch.load(tmp_path / f"weights_rank{r}.pt", weights_only=True) for r in (0, 1))
    for key in init:
        torch.testing.assert_close(w0[key], w1[key], rtol=0, atol=0)
        assert not torch.allclose(w0[key], init[key])
    model = nn.Linear(3, 1)
    model.load_state_dict(init)
    loss = sum(mse(model, next(rank_batches(r)))[0] for r in (0, 1)) / 2
    loss.backward()
    for name, param in model.named_parameters():
        torch.testing.assert_close(w0[name], param.detach() - LR * param.grad, rtol=1e-5, atol=1e-6)
    assert (tmp_path / "train" / "last.pt").exists()
