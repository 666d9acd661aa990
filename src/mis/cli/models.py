"""`mis models list|info|import`: the registry, checkpoint cards, and import of upstream weights."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from mis.cli.common import print_json, print_table, reports_errors, runtime_of, stdout

app = typer.Typer(help="The model registry, checkpoint cards and import of upstream weights.",
                  no_args_is_help=True)


@app.command("list")
@reports_errors
def list_models(ctx: typer.Context) -> None:
    """Every task and the checkpoints it ships (no torch needed). The names work with `--model` and
    `mis models info`."""
    from mis.registry import WEIGHTS_DIR, task_specs

    rows = []
    for spec in task_specs().values():
        family = ", ".join(f.name for f in spec.families)
        for model in spec.models or (None,):
            rows.append({"task": spec.name, "command": spec.command_line, "family": family,
                         "model": model.name if model else "",
                         "default": "yes" if model and model.name == spec.default_model else "",
                         "shipped": bool(model) and (WEIGHTS_DIR / model.file).exists(),
                         "description": model.description if model else spec.title})
    if runtime_of(ctx).json:
        print_json(rows)
        return
    print_table("mis models", list(rows[0]), [list(r.values()) for r in rows])


def checkpoint_path(name: str) -> Path:
    """A file, a shipped model's name (as `mis models list` prints it) or file name, or a task name (its default)."""
    from mis.registry import default_checkpoint_path, resolve_checkpoint, task_specs

    if Path(name).exists():
        return Path(name)
    if name in task_specs():
        return default_checkpoint_path(name)
    return resolve_checkpoint(next(iter(task_specs())), name)


@app.command("info")
@reports_errors
def info(ctx: typer.Context, checkpoint: str = typer.Argument(..., help="Checkpoint path, shipped model name or "
                                                              "task name (as `mis models list` prints them)")) -> None:
    """Print a checkpoint's card: network config, preprocessing, labels, training and metrics."""
    from mis.checkpoints import describe, read_card

    card = read_card(checkpoint_path(checkpoint))
    if runtime_of(ctx).json:
        print_json(card)
        return
    for key, value in describe(card).items():
        stdout.print(f"[bold]{key}[/bold]: ", end="", highlight=False)
        stdout.print(json.dumps(value, default=str), markup=False, highlight=False)


@app.command("import")
@reports_errors
def import_model(
    ctx: typer.Context,
    source: Path = typer.Argument(..., exists=True, dir_okay=False, help="Upstream .pth/.pt file (Keras .h5 for seaice)"),
    output: Path = typer.Option(..., "--output", "-o", help="Our .safetensors checkpoint to write"),
    task: str = typer.Option("ct_segmentation", help="Task the weights are for (see `mis models list`)"),
    family: Optional[str] = typer.Option(None, help="Network family, for tasks with several (default: the first)"),
    config: Optional[str] = typer.Option(None, help="JSON object with network config overrides, e.g. "
                                         "'{\"class_num\": 5, \"input_size\": [64,128,128]}'"),
    labels: Optional[str] = typer.Option(None, help='JSON object of class id -> name, e.g. \'{"1": "liver"}\''),
    preprocessing: Optional[str] = typer.Option(None, "--preprocessing", help="JSON object of card preprocessing "
                                                "overrides, e.g. a bandwidth extension's rate pair "
                                                "'{\"input_sample_rate\": 8000, \"sample_rate\": 16000}'"),
    half: bool = typer.Option(False, "--half", help="Store floating tensors as fp16"),
) -> None:
    """Import upstream weights (torch.load with weights_only=True, explicit key map, strict load).

    Example, the MIS-FM CT10k PCT-Net: `mis models import pctnet_ct10k_volf.pt -o pctnet_ct10k.safetensors
    --config '{"class_num": 5, "input_size": [64,128,128]}'`. Upstream APNet (16 kHz):
    `mis models import g_02030000 --task vocoder -o apnet_16k.safetensors`. Upstream AP-BWE (one checkpoint per
    rate pair, default 16 -> 48 kHz): `mis models import g_16kto48k --task bwe -o apbwe_16k_48k.safetensors`.
    Upstream ViSual_IceD (Keras, by layer name): `mis models import weights.h5 --task seaice -o visual_iced.safetensors`."""
    from mis.errors import UsageError
    from mis.importing import default_config, default_preprocessing, import_checkpoint
    from mis.registry import task_entry

    entry = task_entry(task)
    families = [f.name for f in entry.families]
    if family is not None and family not in families:
        raise UsageError(f"task {task} has no network family {family!r}; its families: {', '.join(families)}")
    family = family or families[0]
    try:
        overrides = json.loads(config) if config else {}
        names = json.loads(labels) if labels else {}
        extra = json.loads(preprocessing) if preprocessing else {}
    except json.JSONDecodeError as exc:
        raise UsageError(f"--config/--labels/--preprocessing must be JSON objects ({exc})") from None
    if not all(isinstance(v, dict) for v in (overrides, names, extra)):
        raise UsageError("--config/--labels/--preprocessing must be JSON objects")
    base = default_config(family)
    base.update(overrides)
    card = import_checkpoint(source, output, family=family, task=task, config=base, labels=names, half=half,
                             preprocessing={**default_preprocessing(family, base), **extra})
    if runtime_of(ctx).json:
        print_json({"output": str(output), "sha256": card["sha256"]})
    else:
        stdout.print(f"imported {source} -> {output} (sha256 {card['sha256'][:12]})", markup=False, highlight=False)

