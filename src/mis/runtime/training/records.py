"""What a run leaves in its folder besides the weights: atomic checkpoints and the metrics log."""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch


def atomic_torch_save(obj: Any, path: Path) -> None:
    """Write to a temporary file next to `path`, then rename: a crash never leaves half a file."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(obj, handle)
            handle.flush()
            os.fsync(handle.fileno())
        # mkstemp creates 0600; a checkpoint is as readable as the run's other files
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def scalar(value: Any) -> float | None:
    if isinstance(value, torch.Tensor):
        return float(value.detach().float().mean()) if value.numel() else None
    if isinstance(value, (int, float, np.number)) and not isinstance(value, bool):
        return float(value)
    return None


class MetricWindow:
    """Averages numeric step metrics over the steps since the last log line."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.counts: dict[str, int] = {}

    def add(self, metrics: Mapping[str, Any]) -> None:
        for key, value in metrics.items():
            number = scalar(value)
            if number is not None:
                self.sums[key] = self.sums.get(key, 0.0) + number
                self.counts[key] = self.counts.get(key, 0) + 1

    def pop(self) -> dict[str, float]:
        means = {k: self.sums[k] / self.counts[k] for k in self.sums}
        self.sums, self.counts = {}, {}
        return means


class MetricsLog:
    """metrics.jsonl: one JSON record per logged step, readable as one uninterrupted run after a resume."""

    def __init__(self, path: Path, writable: bool = True):
        self.path = path
        self.writable = writable   # only rank 0 writes

    def append(self, record: Mapping[str, Any]) -> None:
        if self.writable:
            with open(self.path, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(record) + "\n")

    def at(self, step: int) -> dict[str, Any]:
        """The metrics logged at `step` (merged, as the file may hold several records for it); {} if none."""
        if step == 0 or not self.path.exists():
            return {}
        merged: dict[str, Any] = {}
        for line in self.path.read_text(encoding="utf-8").splitlines():
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                if record.get("step") == step:
                    merged.update(record)
        return merged

    def reset(self, keep_until: int) -> None:
        """A fresh run starts a new file; a resumed one drops lines logged after its checkpoint (they will be
        logged again)."""
        if not self.writable or not self.path.exists():
            return
        kept = []
        if keep_until > 0:
            for line in self.path.read_text(encoding="utf-8").splitlines():
                with contextlib.suppress(ValueError):
                    if json.loads(line).get("step", 0) <= keep_until:
                        kept.append(line + "\n")
        self.path.write_text("".join(kept), encoding="utf-8")
