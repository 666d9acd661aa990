"""`mis info`: versions, devices, AMP support, threads."""
from __future__ import annotations

import typer

from mis.cli.common import print_json, print_table, reports_errors, runtime_of


@reports_errors
def info(ctx: typer.Context, json_output: bool = typer.Option(False, "--json", help="One JSON document")) -> None:
    """Show mis/torch/torchaudio/monai versions, devices, AMP support and threads."""
    from mis.runtime.environment import environment_report

    report = environment_report()
    if json_output or runtime_of(ctx).json:
        print_json(report)
        return
    rows = [[key, value] for key, value in report.items() if key != "devices"]
    for device in report["devices"]:
        rows.append([f"device {device['name']}", f"{device['description']}; fp16={device['fp16']} "
                     f"bf16={device['bf16']}"])
    print_table("mis environment", ["item", "value"], rows)
