"""`mis demo`: run every pipeline on sample_data/ with the shipped weights and print a summary."""
from __future__ import annotations

from pathlib import Path

import typer

from mis.cli.common import print_json, print_table, reports_errors, runtime_of


@reports_errors
def demo(ctx: typer.Context, out: Path = typer.Option(Path("demo_out"), "--out", "-o", help="Output folder")) -> None:
    """Run every pipeline on sample_data/ with the shipped demo weights; write to ./demo_out/."""
    from mis.pipelines.demo import run_demo

    runtime = runtime_of(ctx)
    rows = run_demo(out, runtime)
    if runtime.json:
        print_json(rows)
    else:
        print_table(f"mis demo -> {out}/", list(rows[0]), [list(r.values()) for r in rows])
    raise typer.Exit(0 if all(r["status"] == "done" for r in rows) else 1)
