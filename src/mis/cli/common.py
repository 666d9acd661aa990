"""Helpers shared by the thin command files: runtime options, error reporting, summaries.

Imports no torch: every heavy import happens inside a command body.
"""
from __future__ import annotations

import contextlib
import functools
import json
import sys
from typing import Any, Callable

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from mis.errors import MisError, UsageError
from mis.runtime.config import RuntimeConfig

stdout = Console(soft_wrap=True)
stderr = Console(stderr=True, soft_wrap=True)

PANEL_MEDICAL = "Medical"
PANEL_AUDIO = "Audio"
PANEL_REMOTE = "Remote sensing"
PANEL_VISION = "Vision"
PANEL_TABULAR = "Tabular"
PANEL_TRAIN = "Training and evaluation"
PANEL_UTIL = "Utilities"


def runtime_of(ctx: typer.Context) -> RuntimeConfig:
    """The RuntimeConfig built by the root callback (defaults when a command is called alone)."""
    root = ctx.find_root()
    if isinstance(root.obj, RuntimeConfig):
        return root.obj
    return RuntimeConfig()


def capture_warnings(quiet: bool) -> None:
    """Library warnings (numpy, nibabel, torch) as one `warning: ...` line each, once per text, on stderr; none
    under --quiet/--json (a JSON consumer reads `notices`)."""
    import warnings

    shown: set[str] = set()

    def show(message, category, filename, lineno, file=None, line=None):
        text = " ".join(str(message).split())
        if quiet or text in shown:
            return
        shown.add(text)
        stderr.print(f"warning: {text}", style="yellow", markup=False, highlight=False)

    warnings.showwarning = show


def fail_usage(message: str) -> None:
    raise UsageError(message)


def print_error(text: str) -> None:
    """One `error: ...` line on stderr (file names are printed as they are, never as markup)."""
    text = " ".join(str(text).split())
    stderr.print(text if text.startswith("failed: ") else f"error: {text}", style="red", markup=False,
                 highlight=False)


def reports_errors(command: Callable) -> Callable:
    """Turn MisError into one clear line and an exit code (2: usage, including a --model that is no usable
    checkpoint for the command, see `model_option`; 1: the run failed); other errors too unless --debug. With
    --json the failure is also one JSON document on stdout, so scripts always get one."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        ctx = kwargs.get("ctx") or next((a for a in args if isinstance(a, typer.Context)), None)
        runtime = runtime_of(ctx) if ctx is not None else RuntimeConfig()

        def fail(text: str, code: int):
            print_error(text)
            if runtime.json:
                print_json({"error": text, "exit_code": code})
            raise typer.Exit(code)

        try:
            return command(*args, **kwargs)
        except (typer.Exit, typer.Abort, SystemExit):
            raise
        except KeyboardInterrupt:
            stderr.print("interrupted", style="red")
            raise typer.Exit(130)
        except UsageError as exc:
            if runtime.debug:
                raise
            fail(str(exc), 2)
        except MisError as exc:
            if runtime.debug:
                raise
            fail(str(exc), 1)
        except Exception as exc:  # an internal error still gets one line; --debug shows the traceback
            if runtime.debug:
                raise
            fail(f"{type(exc).__name__}: {exc} (rerun with --debug for the traceback)", 1)

    return wrapper


def _rounded(value: Any) -> Any:
    """Floats to 6 significant digits for reports (a float32 sum printed with 17 digits helps nobody)."""
    if isinstance(value, float):
        return float(f"{value:.6g}")
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_rounded(v) for v in value]
    return value


@contextlib.contextmanager
def model_option():
    """Around resolving and loading `--model`: a checkpoint that cannot serve this command (missing, corrupt,
    another task, a tampered card) is a usage error, exit 2, in every command alike."""
    from mis.errors import CheckpointError

    try:
        yield
    except CheckpointError as exc:
        raise UsageError(str(exc)) from None
    note_slow_start()


# Start-up (imports and the model) normally takes 3-6 s here; this much means the libraries came from disk.
SLOW_START_SECONDS = 15.0


def note_slow_start() -> None:
    """Say why the first run after installing or rebooting is slow, once, when it is (measured: 8.1 s with the
    page cache dropped vs 5.3 s warm here; tens of seconds on slower disks)."""
    import os
    import time

    started = os.environ.get("MIS_STARTED_AT")
    if not started:
        return
    seconds = time.time() - float(started)
    if seconds > SLOW_START_SECONDS:
        from mis.runtime.notices import notice

        notice(f"start-up took {seconds:.0f} s: the first run after installing or rebooting reads PyTorch's "
               "libraries (1 GB, and 3 GB of CUDA libraries in this build) from disk; later runs start in a few "
               "seconds")


def print_json(document: Any) -> None:
    sys.stdout.write(json.dumps(_rounded(document), indent=2, default=str) + "\n")
    sys.stdout.flush()


def print_table(title: str, columns: list[str], rows: list[list[Any]]) -> None:
    """A rich table on a terminal (cells are plain text, never markup; long cells wrap, never cut); plain
    tab-separated lines with whole values when stdout is a file or a pipe."""
    if not stdout.is_terminal:
        lines = [title, "\t".join(columns)] + ["\t".join(_plain_cell(v) for v in row) for row in rows]
        sys.stdout.write("\n".join(lines) + "\n")
        sys.stdout.flush()
        return
    table = Table(title=escape(title), title_justify="left")
    for column in columns:
        table.add_column(escape(column), overflow="fold")
    for row in rows:
        table.add_row(*[Text(_plain_cell(value)) for value in row])
    stdout.print(table)


def _plain_cell(value: Any) -> str:
    return " ".join(_fmt(value).split()) if not isinstance(value, str) else " ".join(value.split())


def report_run(summary, runtime: RuntimeConfig, title: str, extra_columns: list[str] | None = None,
               run_info: dict | None = None) -> None:
    """Print the end-of-run summary (table or JSON), failures as one line each on stderr, then exit.

    `run_info` (the pipeline's device, precision, compile setting and model) goes into the JSON document.
    The table names inputs and outputs by what distinguishes them (paths relative to their common folder,
    which the title names) and gives a failed item's reason in its row."""
    from mis.runtime.notices import notices

    extra_columns = extra_columns or []
    for result in summary.results:
        if result.status == "failed":
            print_error(f"failed: {result.error}")
    if runtime.json:
        print_json({
            "title": title, **(run_info or {}), "notices": notices(),
            "seconds": round(summary.seconds, 3),
            "done": summary.done, "skipped": summary.skipped, "failed": summary.failed,
            "items": [
                {"source": r.source, "target": r.target, "status": r.status, "error": r.error,
                 "seconds": round(r.seconds, 3), **r.info}
                for r in summary.results
            ],
        })
    elif not runtime.quiet:
        sources, source_root = relative_names([r.source for r in summary.results])
        targets, target_root = relative_names([r.target or "" for r in summary.results])
        rows = [[source, target, r.status, f"{r.seconds:.2f}", *[_fmt(r.info.get(c, "")) for c in extra_columns],
                 _reason(r)] for r, source, target in zip(summary.results, sources, targets)]
        where = f" (inputs in {source_root}, outputs in {target_root})" if source_root or target_root else ""
        print_table(f"{title}: {summary.done} done, {summary.skipped} skipped, {summary.failed} failed "
                    f"in {summary.seconds:.1f} s{where}", ["input", "output", "status", "s", *extra_columns,
                                                          "reason"], rows)
    raise typer.Exit(summary.exit_code)


def relative_names(paths: list[str]) -> tuple[list[str], str]:
    """(each path relative to the deepest folder they share, that folder); names stay whole when they share none."""
    import os

    present = [p for p in paths if p]
    if len(present) < 2:
        return paths, ""
    try:
        root = os.path.commonpath([os.path.dirname(os.path.abspath(p)) for p in present])
    except ValueError:   # different drives
        return paths, ""
    if root in ("", os.sep):
        return paths, ""
    return [os.path.relpath(os.path.abspath(p), root) if p else "" for p in paths], root


def _reason(result) -> str:
    """A failed item's problem without the path the row already shows."""
    if result.status != "failed" or not result.error:
        return ""
    error = str(result.error)
    for path in (result.source, result.target):
        if path and error.startswith(f"{path}: "):
            return error[len(path) + 2:]
    return error


def report_evaluation(report: dict, runtime: RuntimeConfig, output, title: str, columns: list[str],
                      rows: Callable[[dict], list[list[Any]]]) -> None:
    """End every `mis evaluate`: write the JSON report (-o), one line per failed case on stderr, the report as
    JSON or a table of `rows(report)`, and exit 1 when any case failed."""
    from mis.io.atomic import atomic_write_json
    from mis.runtime.notices import notices

    report = {**report, "notices": notices()}
    if output:
        atomic_write_json(output, report)
    for failure in report.get("errors", []):
        print_error(failure["error"])
    if runtime.json:
        print_json(report)
    else:
        print_table(title, columns, rows(report))
    raise typer.Exit(1 if report.get("errors") else 0)


def cell(value: Any, digits: int = 2) -> str:
    """A table cell for a number that may be missing."""
    return "-" if value is None else f"{value:.{digits}f}"


def command_line() -> str:
    """How this run was started, as a card records it (`mis ...`, whatever the launcher)."""
    import shlex

    return shlex.join(["mis", *sys.argv[1:]])


def training_log(runtime: RuntimeConfig) -> Callable[[str], None]:
    """Where `mis train` / `mis pretrain` print their progress lines (nothing under --quiet/--json)."""
    if not runtime.chatty:
        return lambda *_: None
    return lambda text: stdout.print(text, highlight=False, markup=False)


def single_process(command: str) -> None:
    """Under torchrun every rank would train the whole run and write the same files: say so instead."""
    from mis.runtime.distributed import dist_info

    if dist_info()[1] > 1:
        raise UsageError(f"{command} trains in one process (DDP: `mis train segment` and `mis pretrain ct`); "
                         "start it without torchrun")


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)
