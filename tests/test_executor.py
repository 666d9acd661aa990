"""The streaming executor: order, failure isolation, existing outputs, batching, interruption."""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

import pytest

from mis.errors import InputError
from mis.runtime.executor import OUTPUT_EXISTS, RunSummary, WorkItem, error_line, run_items

SRC = str(Path(__file__).resolve().parents[1] / "src")


def atomic_write_text(path: Path, text: str) -> None:
    """The tests' own atomic writer: temp file in the same folder, then rename."""
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.replace(tmp, path)


def make_items(tmp_path: Path, n: int, with_targets: bool = True) -> list[WorkItem]:
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    items = []
    for i in range(n):
        source = tmp_path / f"in_{i:03d}.txt"
        source.write_text(str(i))
        target = out / f"out_{i:03d}.txt" if with_targets else None
        items.append(WorkItem(f"k{i:03d}", source, target))
    return items


def read_int(item: WorkItem) -> int:
    return int(item.source.read_text())


def square_all(batch: list[int]) -> list[int]:
    return [x * x for x in batch]


def write_text(item: WorkItem, value: int) -> dict:
    atomic_write_text(item.target, str(value))
    return {"value": value}


def run(items, **kwargs) -> RunSummary:
    kwargs.setdefault("read", read_int)
    kwargs.setdefault("compute", square_all)
    kwargs.setdefault("write", write_text)
    kwargs.setdefault("progress", False)
    return run_items(items, **kwargs)


def statuses(summary: RunSummary) -> dict[str, str]:
    return {r.key: r.status for r in summary.results}


def test_order_preserved_with_random_delays(tmp_path):
    items = make_items(tmp_path, 30)
    rng = random.Random(0)
    delays = {item.key: rng.uniform(0, 0.015) for item in items}

    def slow_read(item):
        time.sleep(delays[item.key])
        return read_int(item)

    def slow_write(item, value):
        time.sleep(delays[item.key] / 3)
        return write_text(item, value)

    summary = run(items, read=slow_read, write=slow_write, workers=4, batch_size=3)
    assert [r.key for r in summary.results] == [item.key for item in items]
    assert summary.done == 30 and summary.exit_code == 0
    assert [r.info["value"] for r in summary.results] == [i * i for i in range(30)]
    for i, item in enumerate(items):
        assert item.target.read_text() == str(i * i)


def test_read_failure_isolated(tmp_path):
    items = make_items(tmp_path, 8)

    def read(item):
        if item.key == "k003":
            raise InputError(item.source, "not a valid volume")
        return read_int(item)

    summary = run(items, read=read, batch_size=3)
    bad = summary.results[3]
    assert bad.status == "failed" and bad.error == f"{items[3].source}: not a valid volume"
    assert summary.done == 7 and summary.failed == 1 and summary.exit_code == 1
    assert not items[3].target.exists()


def test_compute_failure_retries_batch_items_alone(tmp_path):
    items = make_items(tmp_path, 8)
    calls: list[list[int]] = []

    def compute(batch):
        calls.append(list(batch))
        if 5 in batch:
            raise ValueError("cannot square five\nsecond line")
        return square_all(batch)

    summary = run(items, compute=compute, batch_size=4)
    assert statuses(summary)["k005"] == "failed"
    assert summary.results[5].error == "ValueError: cannot square five second line"
    assert summary.done == 7
    # The batch holding 5 failed once, then its items ran one by one.
    assert [4, 5, 6, 7] in calls and [4] in calls and [6] in calls and [7] in calls


def test_compute_output_count_mismatch_fails_items(tmp_path):
    items = make_items(tmp_path, 3)
    summary = run(items, compute=lambda batch: [])
    assert summary.failed == 3
    assert "compute returned 0 outputs for 1 inputs" in summary.results[0].error


def test_write_failure_isolated(tmp_path):
    items = make_items(tmp_path, 6)

    def write(item, value):
        if item.key == "k002":
            raise OSError("disk full")
        return write_text(item, value)

    summary = run(items, write=write, batch_size=2)
    assert statuses(summary)["k002"] == "failed"
    assert summary.results[2].error == "OSError: disk full"
    assert summary.done == 5


def test_items_without_targets(tmp_path):
    items = make_items(tmp_path, 4, with_targets=False)
    summary = run(items, write=lambda item, value: {"count": value})
    assert [r.info["count"] for r in summary.results] == [0, 1, 4, 9]
    assert all(r.target is None for r in summary.results)


def test_existing_outputs(tmp_path):
    items = make_items(tmp_path, 4)
    items[1].target.write_text("old")
    read_keys = []

    def read(item):
        read_keys.append(item.key)
        return read_int(item)

    failed = run(items, read=read)
    assert statuses(failed)["k001"] == "failed" and failed.results[1].error.endswith(f": {OUTPUT_EXISTS}")
    assert str(failed.results[1].target) in failed.results[1].error  # names the file
    assert items[1].target.read_text() == "old" and "k001" not in read_keys

    for item in items:
        if item.key != "k001":
            item.target.unlink()
    read_keys.clear()
    skipped = run(items, read=read, skip_existing=True)
    assert statuses(skipped) == {"k000": "done", "k001": "skipped", "k002": "done", "k003": "done"}
    assert "k001" not in read_keys and items[1].target.read_text() == "old"

    overwritten = run(items, overwrite=True)
    assert overwritten.done == 4 and items[1].target.read_text() == "1"


def test_batches_respect_batchable_and_size(tmp_path):
    items = make_items(tmp_path, 20)
    batches: list[list[int]] = []

    def compute(batch):
        batches.append(list(batch))
        return square_all(batch)

    # Compatible = same "shape" (value // 3), so runs of three form groups.
    summary = run(items, compute=compute, batch_size=4, batchable=lambda a, b: a // 3 == b // 3,
                  workers=3)
    assert summary.done == 20
    assert [x for batch in batches for x in batch] == list(range(20))
    for batch in batches:
        assert 1 <= len(batch) <= 4
        assert len({x // 3 for x in batch}) == 1
    assert max(len(b) for b in batches) == 3

    batches.clear()
    run(items, compute=compute, batch_size=8, overwrite=True)  # default: all compatible
    assert [len(b) for b in batches] == [8, 8, 4]


def test_prefetch_is_bounded(tmp_path):
    items = make_items(tmp_path, 40, with_targets=False)
    lock = threading.Lock()
    state = {"read": 0, "computed": 0, "ahead": 0}

    def read(item):
        with lock:
            state["read"] += 1
            state["ahead"] = max(state["ahead"], state["read"] - state["computed"])
        return read_int(item)

    def compute(batch):
        time.sleep(0.005)  # slower than reading, so readers would run away if unbounded
        with lock:
            state["computed"] += len(batch)
        return square_all(batch)

    run(items, read=read, compute=compute, write=lambda item, value: None, workers=2,
        batch_size=2)
    assert state["ahead"] <= 2 * 2 + 2 + 2  # prefetch + the batch being assembled


def test_keyboard_interrupt_is_not_swallowed(tmp_path):
    items = make_items(tmp_path, 50)
    writes = []

    def compute(batch):
        if 10 in batch:
            raise KeyboardInterrupt
        return square_all(batch)

    def write(item, value):
        writes.append(item.key)
        return write_text(item, value)

    start = time.perf_counter()
    with pytest.raises(KeyboardInterrupt):
        run(items, compute=compute, write=write, batch_size=1)
    assert time.perf_counter() - start < 5
    assert len(writes) <= 10


def test_error_line_formats():
    assert error_line(InputError("a.nii", "empty file")) == "a.nii: empty file"
    assert error_line(RuntimeError("x\n  y")) == "RuntimeError: x y"
    # an OS error names the file the user knows (an atomic write's temporary file names its folder)
    assert error_line(PermissionError(13, "Permission denied", "/o/.a_seg.tmp-12.json")) == "/o: permission denied"
    assert error_line(FileNotFoundError(2, "No such file or directory", "b.wav")) == "b.wav: no such file or directory"


def test_targets_that_are_folders_or_unwritable_fail_before_any_work(tmp_path):
    items = make_items(tmp_path, 2)
    items[0].target.mkdir()
    items[1] = WorkItem("k001", items[1].source, items[1].target, problem="in_001.txt: would replace the input")
    summary = run(items, overwrite=True, read=lambda item: pytest.fail("read"))
    assert [r.error for r in summary.results] == [f"{items[0].target}: is a folder, not an output file",
                                                  "in_001.txt: would replace the input"]


# A child process runs the executor with slow, atomic, chunked writes; the test kills it with
# SIGKILL mid-run and checks that every file with a final name is complete.
KILL_SCRIPT = textwrap.dedent(r"""
    import json, os, sys, tempfile, time
    from pathlib import Path
    from mis.runtime.executor import WorkItem, run_items

    root, skip = Path(sys.argv[1]), sys.argv[2] == "skip"
    items = [WorkItem(f"k{i:02d}", root / "in" / f"{i:02d}.txt", root / "out" / f"{i:02d}.json")
             for i in range(20)]

    def read(item):
        return int(item.source.read_text())

    def compute(batch):
        return [{"value": v, "payload": "x" * 4000} for v in batch]

    def write(item, output):
        text = json.dumps(output)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=item.target.parent)
        with os.fdopen(fd, "w") as handle:
            for start in range(0, len(text), 1000):  # slow, chunked: a kill lands mid-write
                handle.write(text[start:start + 1000])
                handle.flush()
                time.sleep(0.01 if skip else 0.03)
        os.replace(tmp, item.target)

    summary = run_items(items, read=read, compute=compute, write=write, workers=2,
                        skip_existing=skip, progress=False)
    print(json.dumps({"done": summary.done, "skipped": summary.skipped,
                      "failed": summary.failed}))
""")


def _final_outputs_valid(out: Path) -> list[str]:
    names = []
    for path in sorted(out.iterdir()):
        if path.name.startswith(".tmp-"):
            continue
        data = json.loads(path.read_text())  # a partial file would not parse
        assert data["value"] == int(path.stem) and data["payload"] == "x" * 4000
        names.append(path.name)
    return names


def test_sigkill_mid_run_leaves_only_complete_outputs_and_resumes(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "out").mkdir()
    for i in range(20):
        (tmp_path / "in" / f"{i:02d}.txt").write_text(str(i))
    script = tmp_path / "kill_run.py"
    script.write_text(KILL_SCRIPT)
    env = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1", "MIS_QUIET": "1"}

    child = subprocess.Popen([sys.executable, str(script), str(tmp_path), "noskip"], env=env)
    try:
        deadline = time.time() + 30
        while time.time() < deadline:
            finals = [p for p in (tmp_path / "out").iterdir() if not p.name.startswith(".tmp-")]
            if len(finals) >= 4:
                break
            assert child.poll() is None, "the child finished before it could be killed"
            time.sleep(0.01)
        os.kill(child.pid, signal.SIGKILL)
        child.wait(10)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == -signal.SIGKILL
    completed = _final_outputs_valid(tmp_path / "out")
    assert 4 <= len(completed) < 20

    rerun = subprocess.run([sys.executable, str(script), str(tmp_path), "skip"], env=env,
                           capture_output=True, text=True, timeout=60)
    assert rerun.returncode == 0, rerun.stderr
    counts = json.loads(rerun.stdout.strip().splitlines()[-1])
    assert counts == {"done": 20 - len(completed), "skipped": len(completed), "failed": 0}
    assert len(_final_outputs_valid(tmp_path / "out")) == 20


def test_progress_bar_switches(monkeypatch, capsys):
    from mis.runtime.progress import ProgressBar, progress_bar, progress_enabled, track

    monkeypatch.delenv("MIS_QUIET", raising=False)
    monkeypatch.delenv("RANK", raising=False)
    assert not progress_enabled(False)
    assert not progress_enabled(None)  # pytest captures the streams: not a terminal
    assert not progress_enabled(True)  # True allows a bar but never forces one into a pipe
    import mis.runtime.progress as progress

    monkeypatch.setattr(progress, "_stream_is_tty", lambda stream: True)
    assert progress_enabled(True) and progress_enabled(None)
    monkeypatch.setenv("RANK", "1")
    assert not progress_enabled(True)
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("MIS_QUIET", "1")
    assert not progress_enabled(True)
    monkeypatch.delenv("MIS_QUIET")

    assert list(track(range(5), description="count", enabled=True)) == list(range(5))
    assert list(progress_bar([1, 2], "list", enabled=False)) == [1, 2]
    with progress_bar(3, "manual", enabled=True) as bar:
        assert isinstance(bar, ProgressBar)
        bar.advance()
        bar.set_description("still manual")
        bar.advance(2)
    assert capsys.readouterr().out == ""  # bars go to stderr only
