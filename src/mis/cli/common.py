"""Helpers shared by the thin command files: runtime options, error reporting, summaries.

Imports no torch: every heavy import happens inside a command body.
"""
from __future__ import annotations

import functools
import json
import sys
from typing import Any, Callable

import typer
from rich.console import Console
from rich.table import Table

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


def fail_usage(message: str) -> None:
    raise UsageError(message)


def print_error(text: str) -> None:
    """One `error: ...` line on stderr (file names are printed as they are, never as markup)."""
    stderr.print(f"error: {text}", style="red", markup=False, highlight=False)


def reports_errors(command: Callable) -> Callable:
    """Turn MisError into one clear line and an exit code; other errors too unless --debug."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        ctx = kwargs.get("ctx") or next((a for a in args if isinstance(a, typer.Context)), None)
        debug = runtime_of(ctx).debug if ctx is not None else False
        try:
            return command(*args, **kwargs)
        except (typer.Exit, typer.Abort, SystemExit):
            raise
        except KeyboardInterrupt:
            stderr.print("interrupted", style="red")
            raise typer.Exit(130)
        except UsageError as exc:
            if debug:
                raise
            print_error(str(exc))
            raise typer.Exit(2)
        except MisError as exc:
            if debug:
                raise
            print_error(str(exc))
            raise typer.Exit(1)
        except Exception as exc:  # an internal error still gets one line; --debug shows the traceback
            if debug:
                raise
            print_error(f"{type(exc).__name__}: {exc} (rerun with --debug for the traceback)")
            raise typer.Exit(1)

    return wrapper


def print_json(document: Any) -> None:
    sys.stdout.write(json.dumps(document, indent=2, default=str) + "\n")
    sys.stdout.flush()


def print_table(title: str, columns: list[str], rows: list[list[Any]]) -> None:
    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*[str(value) for value in row])
    stdout.print(table)


def report_run(summary, runtime: RuntimeConfig, title: str, extra_columns: list[str] | None = None,
               run_info: dict | None = None) -> None:
    """Print the end-of-run summary (table or JSON), failures as one line each on stderr, then exit.

    `run_info` (the pipeline's device, precision, compile setting and model) goes into the JSON document."""
    from mis.runtime.notices import notices

    extra_columns = extra_columns or []
    for result in summary.results:
        if result.status == "failed":
            stderr.print(f"failed: {result.error}", style="red", markup=False, highlight=False)
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
        rows = [[r.source, r.target or "", r.status, f"{r.seconds:.2f}",
                 *[_fmt(r.info.get(c, "")) for c in extra_columns]] for r in summary.results]
        print_table(f"{title}: {summary.done} done, {summary.skipped} skipped, {summary.failed} failed "
                    f"in {summary.seconds:.1f} s", ["input", "output", "status", "s", *extra_columns], rows)
    raise typer.Exit(summary.exit_code)


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
