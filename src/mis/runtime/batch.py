"""The one batch runner behind every batch command (`mis segment`, `mis vocode`, `mis mel`, `mis battery predict`).

A command describes its work as a `BatchJob` (read one item, compute a batch, write one result) and hands
the planned `WorkItem`s to `run_batch`, which adds what every command needs in the same way:

- the streaming executor: read-ahead threads, batches, per-item isolation, atomic writes (`executor.py`);
- under torchrun, each rank takes `items[rank::world]` and rank 0 returns one combined summary in input
  order (other ranks get None and print nothing);
- with several visible GPUs in one process, one worker per GPU over a shared queue, each with its own
  job (pipeline copy) from `build(device)`.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mis.runtime.config import RuntimeConfig
from mis.runtime.distributed import (destroy_distributed, dist_info, gather_summaries, init_distributed,
                                     is_distributed, run_on_devices, shard, visible_gpu_workers)
from mis.runtime.executor import RunSummary, WorkItem, run_items


@dataclass
class BatchJob:
    read: Callable[[WorkItem], Any]                       # decode one input (worker threads)
    compute: Callable[[list[Any]], list[Any]]             # one output per input (the compute thread)
    write: Callable[[WorkItem, Any], dict | None]         # write atomically; returns extra summary info
    batch_size: int = 1
    batchable: Callable[[Any, Any], bool] | None = None   # may two decoded inputs share a batch?
    description: str = ""


def run_batch(items: list[WorkItem], build: Callable[[str | None], BatchJob], runtime: RuntimeConfig, *,
              skip_existing: bool = False, overwrite: bool = False) -> RunSummary | None:
    """Run `items` through the job `build(None)` builds (or one per GPU: `build("cuda:N")`).

    Returns the summary of every item on rank 0, None on the other torchrun ranks.
    """
    # torchrun: join the group so rank 0 can gather the summaries (and leave it again if we joined it here)
    joined = dist_info()[1] > 1 and not is_distributed() and init_distributed()
    rank, world, _ = dist_info()
    mine = shard(items, rank, world)
    gpus = visible_gpu_workers() if runtime.device in ("auto", "cuda") and world == 1 else []
    if len(gpus) > 1:
        summary = _on_devices(mine, build, gpus, runtime, skip_existing, overwrite)
    else:
        summary = _run(mine, build(None), runtime, skip_existing, overwrite, progress=runtime.chatty)
    if world == 1:
        return summary
    combined = gather_summaries(summary)
    if joined:
        # Leave the group before the process exits: a process group torn down by the interpreter's exit can
        # abort ("terminate called without an active exception") after the summary was printed.
        destroy_distributed()
    return combined


def _run(items: list[WorkItem], job: BatchJob, runtime: RuntimeConfig, skip_existing: bool, overwrite: bool,
         progress: bool) -> RunSummary:
    return run_items(items, read=job.read, compute=job.compute, write=job.write, workers=runtime.workers,
                     batch_size=job.batch_size, batchable=job.batchable, skip_existing=skip_existing,
                     overwrite=overwrite, progress=progress, description=job.description)


def _on_devices(items: list[WorkItem], build: Callable[[str | None], BatchJob], devices: list[str],
                runtime: RuntimeConfig, skip_existing: bool, overwrite: bool) -> RunSummary:
    """One worker per GPU over a shared queue of items, each with its own job; results in input order."""
    jobs: dict[str, BatchJob] = {}
    lock = threading.Lock()

    def job_for(device: str) -> BatchJob:
        with lock:
            if device not in jobs:
                jobs[device] = build(device)
            return jobs[device]

    def one(item: WorkItem, device: str):
        return _run([item], job_for(device), runtime, skip_existing, overwrite, progress=False).results[0]

    start = time.perf_counter()
    results = run_on_devices(items, devices, one)
    return RunSummary(results, time.perf_counter() - start)
