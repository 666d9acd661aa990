"""`mis --help` wall time vs `python -c "import torch"` (the floor any torch-importing CLI pays).

Goal: median <= 0.3 s for `mis --help` and `mis segment --help`.
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path


def median_seconds(command: list[str], repeats: int) -> float:
    subprocess.run(command, capture_output=True, check=True)  # warm the file cache
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(command, capture_output=True, check=True)
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
