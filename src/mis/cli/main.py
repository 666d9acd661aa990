"""The `mis` command: a root callback with the shared runtime options, and the commands every task
package declares in its spec (`mis.tasks.TASK_PACKAGES`), one thin file per task under `mis/cli/`."""
from __future__ import annotations

import os
from typing import Optional

from mis.cli import lazy_rich

lazy_rich.install()  # before typer imports rich.markdown / rich.traceback

import typer  # noqa: E402
from typer.core import TyperGroup  # noqa: E402

import mis  # noqa: E402
from mis.cli import demo, info, models  # noqa: E402
from mis.cli.common import PANEL_TRAIN, PANEL_UTIL, capture_warnings  # noqa: E402
from mis.registry import task_specs  # noqa: E402
from mis.runtime.config import RuntimeConfig  # noqa: E402
from mis.spec import resolve  # noqa: E402

RUNTIME_PANEL = "Runtime"
# Command groups every task may add to; a task's own groups (`mis pretrain`, `mis battery`) come from its spec.
SHARED_GROUPS = {
    "train": "Train or fine-tune a pipeline's network (one sub-command per task).",
    "evaluate": "Score predictions against references (one sub-command per task).",
}


# Root options may also follow the command (`mis segment x --json`): they are moved before it. Their names are
# therefore reserved: no command may define an option of the same name with another meaning.
ROOT_FLAGS = frozenset({"--compile", "--json", "--quiet", "-q", "--debug"})
ROOT_WITH_VALUE = frozenset({"--device", "--precision", "--batch-size", "--workers", "--seed"})


def hoist_root_options(args: list[str]) -> list[str]:
    """['segment', 'x', '--json', '--device', 'cpu'] -> ['--json', '--device', 'cpu', 'segment', 'x'].
    Nothing after a `--` moves (it ends the options)."""
    hoisted, rest, i = [], [], 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            rest.extend(args[i:])
            break
        name = arg.split("=", 1)[0]
        if arg in ROOT_FLAGS:
            hoisted.append(arg)
        elif name in ROOT_WITH_VALUE and "=" in arg:
            hoisted.append(arg)
        elif arg in ROOT_WITH_VALUE and i + 1 < len(args):
            hoisted.extend(args[i:i + 2])
            i += 1
        else:
            rest.append(arg)
        i += 1
    return hoisted + rest


class RootGroup(TyperGroup):
    """The root command group: accepts the runtime options before or after the command."""

    def parse_args(self, ctx, args: list[str]) -> list[str]:
        return super().parse_args(ctx, hoist_root_options(list(args)))


def _shipped_summary() -> str:
    names = [spec.command_line.removeprefix("mis ") for spec in task_specs().values()]
    return ", ".join(names)


app = typer.Typer(
    name="mis",
    cls=RootGroup,
    help="Deep-learning pipelines behind one CLI and one runtime: " + _shipped_summary() + ".",
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
    compile: bool = typer.Option(False, "--compile", help="torch.compile the network (the first call pays the "
                                 "compile time)", rich_help_panel=RUNTIME_PANEL),
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
        os.environ["MIS_QUIET"] = "1"  # read by the progress utility and the notices
    if debug:
        os.environ["MIS_DEBUG"] = "1"  # the executor prints per-item tracebacks
    capture_warnings(quiet or json_output)
    ctx.obj = RuntimeConfig(device=device, precision=precision, batch_size=batch_size, workers=workers,
                            seed=seed, compile=compile, json=json_output, quiet=quiet, debug=debug)


def _build_commands() -> None:
    """Every spec's commands, in the order of mis.tasks; groups are created on first use."""
    groups: dict[str, typer.Typer] = {}
    specs = task_specs().values()
    help_texts = dict(SHARED_GROUPS)
    for spec in specs:
        for name, text in spec.groups.items():
            help_texts.setdefault(name, text)
    for spec in specs:
        for command in spec.commands:
            function = resolve(command.target)
            if command.group is None:
                app.command(command.name, rich_help_panel=spec.panel)(function)
                continue
            if command.group not in groups:
                groups[command.group] = typer.Typer(help=help_texts.get(command.group, ""), no_args_is_help=True)
                panel = PANEL_TRAIN if command.group in SHARED_GROUPS else spec.panel
                app.add_typer(groups[command.group], name=command.group, rich_help_panel=panel)
            groups[command.group].command(command.name)(function)


_build_commands()
app.add_typer(models.app, name="models", rich_help_panel=PANEL_UTIL)
app.command("info", rich_help_panel=PANEL_UTIL)(info.info)
app.command("demo", rich_help_panel=PANEL_UTIL)(demo.demo)


def main() -> None:
    app()
