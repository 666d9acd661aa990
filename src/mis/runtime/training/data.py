"""Where training batches come from: step-seeded (so a resumed run sees the same data) and device moves."""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import numpy as np
import torch


def hold_out_last(paths: Iterable, count: int) -> tuple[list, list]:
    """(training, held-out) files: the last `count` by name are held out, so the split is the same on every
    machine and a run's card can name both lists."""
    from mis.errors import UsageError

    paths = sorted(paths, key=lambda p: p.name)
    if len(paths) <= count:
        raise UsageError(f"{len(paths)} file(s): need more than --val-files {count} to train")
    return (paths[:-count], paths[-count:]) if count else (paths, [])


class StepSeededBatches:
    """Batches that are a pure function of (seed, step), so a resumed run sees the same data.

    `make_batch(rng, step)` gets a fresh `np.random.Generator` seeded from (seed, step).
    Under DDP give each rank its own seed (e.g. seed + rank).
    """

    def __init__(self, make_batch: Callable[[np.random.Generator, int], Any], seed: int = 0):
        self.make_batch = make_batch
        self.seed = int(seed)
        self.step = 0

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        rng = np.random.default_rng([self.seed, self.step])
        batch = self.make_batch(rng, self.step)
        self.step += 1
        return batch

    def state_dict(self) -> dict[str, int]:
        return {"seed": self.seed, "step": self.step}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.step = int(state["step"])


def to_device(batch: Any, device: torch.device) -> Any:
    """Move every tensor inside dicts, lists and tuples to `device`."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, Mapping):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):  # namedtuple
        return type(batch)(*(to_device(v, device) for v in batch))
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


class BatchStream:
    """Next batch; a re-iterable source (a DataLoader) starts a new epoch when it runs out."""

    def __init__(self, source: Iterable[Any]):
        self.source = source
        self.iterator = iter(source)
        self.reiterable = self.iterator is not source

    def next(self) -> tuple[bool, Any]:
        try:
            return True, next(self.iterator)
        except StopIteration:
            if not self.reiterable:
                return False, None
            self.iterator = iter(self.source)
            try:
                return True, next(self.iterator)
            except StopIteration:  # an empty source
                return False, None
