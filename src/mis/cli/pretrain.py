"""`mis pretrain ct`: self-supervised Volume Fusion pretraining on unlabeled CT."""
from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from mis.cli.common import print_json, reports_errors, runtime_of, stdout

app = typer.Typer(help="Self-supervised pretraining (one sub-command per modality).", no_args_is_help=True)


@app.command("ct")
@reports_errors
def pretrain_ct(
    ctx: typer.Context,
    inputs: Optional[List[str]] = typer.Argument(None, help="Unlabeled CT: NIfTI files, DICOM series, folders, globs"),
    output: Path = typer.Option(..., "--output", "-o", help="Run folder; the checkpoint is "
                                "<folder>/pretrained.safetensors"),
    phantoms: int = typer.Option(0, min=0, help="Add N seeded synthetic phantoms (their labels are not used)"),
    steps: int = typer.Option(2000, min=1, help="Training iterations (the paper: 80 000)"),
    batch: int = typer.Option(2, "--batch", min=1, help="Fused samples per iteration"),
    lr: float = typer.Option(1e-3, help="Adam learning rate"),
    full: bool = typer.Option(False, "--full", help="Paper-size PCT-Net (GPU) instead of the fast configuration"),
    network: Optional[str] = typer.Option(None, help="JSON PCTNetConfig overrides, e.g. "
                                          "'{\"input_size\": [16, 32, 32]}'"),
    spacing: Optional[float] = typer.Option(None, help="Isotropic spacing in mm (default 4 fast, 1.5 full)"),
    resume: bool = typer.Option(False, "--resume", help="Continue exactly from the run folder's last checkpoint"),
) -> None:
    """Volume Fusion (MIS-FM): two crops of one scan fused block-wise with alpha in {0, 1/4, 1/2, 3/4, 1};
    the network learns to segment alpha (5 classes) with Dice + CE and deep supervision. The checkpoint
    goes to `mis train segment --init`."""
    from mis.errors import UsageError
    from mis.pipelines.ct_segmentation.pretrain import PretrainOptions, pretrain_ct as run

    runtime = runtime_of(ctx)
    try:
        overrides = json.loads(network) if network else None
    except json.JSONDecodeError as exc:
        raise UsageError(f"--network must be a JSON object ({exc})") from None
    options = PretrainOptions(out=output, inputs=list(inputs or []), phantoms=phantoms, steps=steps,
                              batch_size=batch, lr=lr, fast=not full, network=overrides,
                              spacing=(spacing,) * 3 if spacing else None, device=runtime.device,
                              precision=runtime.precision, seed=runtime.seed, resume=resume,
                              progress=runtime.chatty)
    log = (lambda text: stdout.print(text, highlight=False)) if runtime.chatty else (lambda *_: None)
    result = run(options, log=log)
    if runtime.json:
        print_json(result)
