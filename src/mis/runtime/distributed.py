"""Several processes (torchrun) and several GPUs in one process.

Under torchrun every rank takes a deterministic strided share of the inputs (`shard`), runs it,
and rank 0 collects the summaries (`gather_summaries`). Inside one process, `run_on_devices`
drives one worker thread per local GPU over a shared queue.
"""
from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from mis.runtime.executor import RunSummary

T = TypeVar("T")
R = TypeVar("R")


def dist_info() -> tuple[int, int, int]:
    """(rank, world_size, local_rank) from the environment torchrun sets; (0, 1, 0) without it."""
    rank = int(os.environ.get("RANK", "0") or 0)
    world_size = int(os.environ.get("WORLD_SIZE", "1") or 1)
    local_rank = int(os.environ.get("LOCAL_RANK", str(rank)) or 0)
    return rank, world_size, local_rank


def is_distributed() -> bool:
    """True when a process group with more than one rank is up."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def is_main_process() -> bool:
    return (dist.get_rank() if is_distributed() else dist_info()[0]) == 0


def init_distributed(backend: str | None = None) -> bool:
    """Join the process group torchrun describes; a no-op (False) for a single process.

    The default backend is nccl when CUDA is available (each rank on its LOCAL_RANK device),
    gloo otherwise.
    """
    _, world_size, local_rank = dist_info()
    if world_size <= 1 or not dist.is_available():
        return False
    if dist.is_initialized():
        return True
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend=backend)
    return True


def destroy_distributed() -> None:
    """Leave the process group together: without the barrier a rank that tears its group down while another
    is still in a collective can make gloo abort at exit ("terminate called without an active exception")."""
    if dist.is_available() and dist.is_initialized():
        if dist.get_world_size() > 1:
            dist.barrier()
        dist.destroy_process_group()


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def shard(items: Sequence[T], rank: int, world_size: int) -> list[T]:
    """This rank's share: items[rank::world_size]. Strided rather than contiguous so that ranks
    get similar mixes when inputs are sorted by size; together the shares cover every item once."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is outside a world of size {world_size}")
    return list(items)[rank::world_size]


def _interleave(per_rank: list[RunSummary]) -> RunSummary:
    """Undo `shard`: item i of the input is result i // W of rank i % W."""
    world_size = len(per_rank)
    total = sum(len(s.results) for s in per_rank)
    results = [per_rank[i % world_size].results[i // world_size] for i in range(total)]
    # Ranks run side by side, so the run took as long as the slowest rank.
    return RunSummary(results, max(s.seconds for s in per_rank))


def gather_summaries(summary: RunSummary) -> RunSummary | None:
    """Combine every rank's summary of its `shard`; rank 0 gets it in input order, others None.

    Without a process group this returns `summary` unchanged.
    """
    if not is_distributed():
        return summary
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, summary)
    return _interleave(gathered) if dist.get_rank() == 0 else None


def visible_gpu_workers() -> list[str]:
    """Devices for `run_on_devices`: this rank's GPU under torchrun, every visible GPU otherwise,
    and no devices without CUDA (the caller then stays on its single device)."""
    if not torch.cuda.is_available():
        return []
    if dist_info()[1] > 1:
        return [f"cuda:{dist_info()[2]}"]
    return [f"cuda:{i}" for i in range(torch.cuda.device_count())]


def run_on_devices(items: Sequence[T], devices: Sequence[str],
                   fn: Callable[[T, str], R]) -> list[R]:
    """Run `fn(item, device)` over items with one worker thread per device pulling from a shared
    queue, so faster devices take more items. Results come back in input order.

    `fn` should isolate its own per-item failures; an exception it lets out stops the workers
    and is re-raised here once they have finished their current item.
    """
    if not devices:
        raise ValueError("run_on_devices needs at least one device")
    work: queue.Queue = queue.Queue()
    for index, item in enumerate(items):
        work.put((index, item))
    results: list[Any] = [None] * len(items)
    errors: list[BaseException] = []
    stop = threading.Event()

    def worker(device: str) -> None:
        while not stop.is_set():
            try:
                index, item = work.get_nowait()
            except queue.Empty:
                return
            try:
                results[index] = fn(item, device)
            except BaseException as exc:  # noqa: BLE001 - handed to the calling thread
                errors.append(exc)
                stop.set()

    threads = [threading.Thread(target=worker, args=(d,), name=f"mis-{d}", daemon=True)
               for d in devices]
    for thread in threads:
        thread.start()
    try:
        for thread in threads:
            # A join with a timeout keeps the main thread responsive to Ctrl-C.
            while thread.is_alive():
                thread.join(0.1)
    except BaseException:
        stop.set()
        raise
    if errors:
        raise errors[0]
    return results
