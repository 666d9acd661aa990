"""One module per task package, each defining `CASE = ContractCase(...)`; the shared contract suite
(tests/test_pipeline_contract.py) and the golden-slice script (tests/golden/regenerate.py) run every case
found here. Adding a task adds one file here and touches no shared test."""
from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


@dataclass
class ContractCase:
    name: str                                             # also the golden file's name
    make_checkpoint: Callable[[Path], Path]              # a tiny seeded checkpoint in this folder
    load: Callable[[Path, Any], Any]                     # (checkpoint, RuntimeConfig) -> pipeline
    inputs: Callable[[int], list]                         # n seeded, in-memory inputs
    run: Callable[[Any, Any], np.ndarray]                # (pipeline, one input) -> output array
    run_batch: Callable[[Any, list], list[np.ndarray]]   # (pipeline, inputs) -> one output each, batched
    expect: Callable[[Any, np.ndarray], None]            # asserts the output's dtype and shape for that input
    bad_input: Callable[[Any, Path], None]               # must raise InputError naming the given path
    cli: Callable[[Path, Path], list[str]]               # (checkpoint, out dir) -> CLI args on sample data
    golden: Callable[[np.ndarray], list[float]] = lambda out: np.asarray(out, np.float64).ravel()[:16].tolist()
    has_network: bool = True                              # mel has none: precision/compile only say so
    batch_tolerance: float = 1e-5
    notes: Sequence[str] = field(default_factory=tuple)


def all_cases() -> list[ContractCase]:
    cases = []
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        cases.append(importlib.import_module(f"{__name__}.{info.name}").CASE)
    return cases
