"""Seeding and RNG state capture.

`rng_state()` returns only tensors, ints, floats, strings, None, lists and dicts, so a training
checkpoint holding it loads with `torch.load(weights_only=True)` (no pickle of numpy objects).
"""
from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all CUDA devices). Deterministic algorithms are left alone:
    forcing them makes some CUDA ops raise, which is the caller's decision, not ours."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device


def _python_state() -> dict[str, Any]:
    version, internal, gauss_next = random.getstate()
    # The Mersenne Twister words are < 2**32, so int64 holds them exactly.
    return {"version": version, "state": torch.tensor(internal, dtype=torch.int64),
            "gauss_next": gauss_next}


def _set_python_state(state: dict[str, Any]) -> None:
    internal = tuple(int(v) for v in state["state"].tolist())
    random.setstate((int(state["version"]), internal, state["gauss_next"]))


def _numpy_state() -> dict[str, Any]:
    name, keys, pos, has_gauss, cached_gaussian = np.random.get_state(legacy=True)
    return {"name": str(name), "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
            "has_gauss": int(has_gauss), "cached_gaussian": float(cached_gaussian)}


def _set_numpy_state(state: dict[str, Any]) -> None:
    keys = state["keys"].numpy().astype(np.uint32)
    np.random.set_state((state["name"], keys, state["pos"], state["has_gauss"],
                         state["cached_gaussian"]))


def rng_state() -> dict[str, Any]:
    """Python, numpy, torch CPU and (when available) every CUDA device's RNG state."""
    state: dict[str, Any] = {"python": _python_state(), "numpy": _numpy_state(),
                             "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what `rng_state()` captured; CUDA states are restored only if devices match."""
    _set_python_state(state["python"])
    _set_numpy_state(state["numpy"])
    torch.set_rng_state(state["torch"].cpu())
    cuda_states = state.get("cuda")
    if cuda_states and torch.cuda.is_available() and len(cuda_states) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in cuda_states])
