"""`mis --help` wall time vs `python -c "import torch"` (the floor any torch-importing CLI pays).

Goal: median <= 0.3 s for `mis --help` and `mis segment --help`. Help is rendered through Typer/Rich
the first time and printed from the help cache afterwards (`mis/cli/entry.py`); both are timed, the
first-time rows with an empty cache folder for every run.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def median_seconds(command: list[str], repeats: int, first_time: bool = False) -> float:
    """Median wall time; `first_time`: every run gets an empty help cache (so help is rendered)."""
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "MIS_CACHE_DIR": cache}
        subprocess.run(command, capture_output=True, check=True, env=env)  # warm the file (and help) cache
        times = []
        for _ in range(repeats):
            if first_time:
                shutil.rmtree(cache, ignore_errors=True)
            start = time.perf_counter()
            subprocess.run(command, capture_output=True, check=True, env=env)
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=11)
    args = parser.parse_args()
    mis = shutil.which("mis") or str(Path(sys.executable).with_name("mis"))
    rows = [
        ("mis --help", median_seconds([mis, "--help"], args.repeats)),
        ("mis segment --help", median_seconds([mis, "segment", "--help"], args.repeats)),
        ("mis --help (first time: rendered)", median_seconds([mis, "--help"], args.repeats, first_time=True)),
        ('python -c "import torch" (baseline)', median_seconds([sys.executable, "-c", "import torch"], args.repeats)),
    ]
    baseline = rows[-1][1]
    print(f"{'command':40s} {'median s':>9s} {'vs import torch':>16s}")
    for name, seconds in rows:
        print(f"{name:40s} {seconds:9.3f} {baseline / seconds:15.1f}x")
    ok = all(seconds <= 0.3 for name, seconds in rows[:2])
    print(f"goal (mis --help <= 0.3 s): {'met' if ok else 'NOT met'}")


if __name__ == "__main__":
    main()
