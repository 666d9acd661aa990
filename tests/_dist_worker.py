"""Run under `python -m torch.distributed.run --nproc_per_node 2 --standalone` by
tests/test_distributed.py: sharding + summary gathering, and one DDP training step.

usage: _dist_worker.py OUT_DIR
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mis.runtime.distributed import (destroy_distributed, dist_info, gather_summaries,
                                     init_distributed, shard)
from mis.runtime.executor import WorkItem, run_items
from mis.runtime.training import StepSeededBatches, TrainConfig, Trainer

N_ITEMS = 10
LR = 0.1


def make_batch(rng: np.random.Generator, step: int) -> dict[str, torch.Tensor]:
    x = rng.normal(size=(8, 3)).astype(np.float32)
    return {"x": torch.from_numpy(x), "y": torch.from_numpy(x.sum(axis=1, keepdims=True) + 1)}


def rank_batches(rank: int) -> StepSeededBatches:
    # Different data on every rank: DDP must average the gradients.
    return StepSeededBatches(make_batch, seed=100 + rank)


def mse(model, batch):
    return nn.functional.mse_loss(model(batch["x"]), batch["y"]), {}


def check_sharding(out: Path, rank: int, world_size: int) -> None:
    items = [WorkItem(f"item{i:02d}", out / f"missing{i}", None) for i in range(N_ITEMS)]
    mine = shard(items, rank, world_size)
    (out / f"shard_rank{rank}.json").write_text(json.dumps([item.key for item in mine]))
    summary = run_items(mine, read=lambda item: item.key, compute=lambda batch: batch,
                        write=lambda item, value: {"rank": rank}, progress=False)
    combined = gather_summaries(summary)
    if rank == 0:
        rows = [[r.key, r.status, r.info["rank"]] for r in combined.results]
        (out / "combined.json").write_text(json.dumps(rows))
    else:
        assert combined is None


def ddp_step(out: Path, rank: int) -> None:
    torch.manual_seed(rank)  # different init per rank: DDP starts everyone from rank 0's
    model = nn.Linear(3, 1)
    if rank == 0:
        torch.save(model.state_dict(), out / "init.pt")
    config = TrainConfig(out_dir=out / "train", max_steps=1, grad_clip=None, progress=False)
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    Trainer(model, optimizer, None, config, loss_fn=mse).fit(rank_batches(rank))
    torch.save(model.state_dict(), out / f"weights_rank{rank}.pt")


def main() -> None:
    out = Path(sys.argv[1])
    assert init_distributed("gloo"), "expected to run under torchrun with WORLD_SIZE > 1"
    rank, world_size, _ = dist_info()
    try:
        check_sharding(out, rank, world_size)
        ddp_step(out, rank)
    finally:
        destroy_distributed()


if __name__ == "__main__":
    main()
