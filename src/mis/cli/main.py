"""The `mis` command: a root callback with the shared runtime options and one thin file per command."""
from __future__ import annotations

import os
from typing import Optional

from mis.cli import lazy_rich

lazy_rich.install()  # before typer imports rich.markdown / rich.traceback

import typer  # noqa: E402

import mis  # noqa: E402
from mis.cli import audio, battery, demo, evaluate, info, models, pretrain, segment, train  # noqa: E402
from mis.cli.common import PANEL_AUDIO, PANEL_MEDICAL, PANEL_TABULAR, PANEL_TRAIN, PANEL_UTIL  # noqa: E402
from mis.runtime.config import RuntimeConfig  # noqa: E402

RUNTIME_PANEL = "Runtime"

app = typer.Typer(
    name="mis",
    help="Deep-learning pipelines behind one CLI and one runtime: CT segmentation, battery cycle life and a "
         "neural vocoder today (DSA interpolation, bandwidth extension, sea ice and crowd counting to follow).",
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"mis {mis.__version__}")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    device: str = typer.Option("auto", help="auto | cpu | cuda | cuda:N | mps", rich_help_panel=RUNTIME_PANEL),
    precision: str = typer.Option("auto", help="auto | fp32 | fp16 | bf16 (auto: bf16/fp16 on GPU, fp32 on CPU "
                                  "unless bf16 measures faster)", rich_help_panel=RUNTIME_PANEL),
    batch_size: int = typer.Option(0, "--batch-size", min=0, help="Windows/items per forward pass (0: the "
                                   "pipeline's default)", rich_help_panel=RUNTIME_PANEL),
    workers: int = typer.Option(2, min=1, help="Reader/decoder threads", rich_help_panel=RUNTIME_PANEL),
    seed: int = typer.Option(0, help="Random seed (same input and seed give the same output)",
                             rich_help_panel=RUNTIME_PANEL),
    compile: bool = typer.Option(False, "--compile", help="torch.compile the network (GPU)",
                                 rich_help_panel=RUNTIME_PANEL),
    json_output: bool = typer.Option(False, "--json", help="Print one JSON document instead of tables",
                                     rich_help_panel=RUNTIME_PANEL),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars or tables",
                               rich_help_panel=RUNTIME_PANEL),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks", rich_help_panel=RUNTIME_PANEL),
    version: Optional[bool] = typer.Option(None, "--version", callback=_version, is_eager=True,
                                           help="Print the version and exit"),
) -> None:
    """Root options apply to every command: `mis --device cuda --json segment scan.nii.gz`."""
    if quiet or json_output:
        os.environ["MIS_QUIET"] = "1"  # read by the progress utility
    ctx.obj = RuntimeConfig(device=device, precision=precision, batch_size=batch_size, workers=workers,
                            seed=seed, compile=compile, json=json_output, quiet=quiet, debug=debug)


app.command("segment", rich_help_panel=PANEL_MEDICAL)(segment.segment)
app.add_typer(pretrain.app, name="pretrain", rich_help_panel=PANEL_MEDICAL)
app.add_typer(battery.app, name="battery", rich_help_panel=PANEL_TABULAR)
app.command("mel", rich_help_panel=PANEL_AUDIO)(audio.mel)
app.command("vocode", rich_help_panel=PANEL_AUDIO)(audio.vocode)
app.add_typer(train.app, name="train", rich_help_panel=PANEL_TRAIN)
app.add_typer(evaluate.app, name="evaluate", rich_help_panel=PANEL_TRAIN)
app.add_typer(models.app, name="models", rich_help_panel=PANEL_UTIL)
app.command("info", rich_help_panel=PANEL_UTIL)(info.info)
app.command("demo", rich_help_panel=PANEL_UTIL)(demo.demo)


def main() -> None:
    app()
