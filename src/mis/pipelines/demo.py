"""`mis demo`: every task package's demo (its spec's `demo`), on sample_data/, with the shipped weights."""
from __future__ import annotations

from pathlib import Path

from mis.errors import MisError
from mis.runtime.config import RuntimeConfig


def find_sample_data(start: Path | None = None) -> Path:
    """sample_data/ next to the source tree (editable install) or in the working directory."""
    candidates = [Path.cwd() / "sample_data", Path(__file__).resolve().parents[3] / "sample_data"]
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    raise MisError("sample_data/ not found: run `mis demo` from the project folder")


def run_demo(out: Path, runtime: RuntimeConfig) -> list[dict]:
    from mis.registry import task_specs
    from mis.spec import resolve

    sample = find_sample_data()
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for spec in task_specs().values():
        if spec.demo:
            rows.extend(resolve(spec.demo)(sample, out, runtime))
    return rows
