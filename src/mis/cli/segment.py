"""CT commands: `mis segment`, `mis train segment`, `mis evaluate segment`, `mis pretrain ct`."""
from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from mis.cli.common import (cell, command_line, model_option, print_json, report_evaluation, report_run, reports_errors, runtime_of,
                            training_log)


def _split_names(values: list[str] | None) -> list[str] | None:
    if not values:
        return None
    return [name.strip() for value in values for name in value.split(",") if name.strip()]


@reports_errors
def segment(
    ctx: typer.Context,
    inputs: List[str] = typer.Argument(..., help="NIfTI files, DICOM series folders, folders of either, or globs"),
    output: Path = typer.Option(Path("segmentations"), "--output", "-o",
                                help="Output folder, or a .nii.gz file name for a single input"),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Checkpoint path or shipped name "
                                        "(default: the shipped demo model; see `mis models list`)"),
    fast: bool = typer.Option(False, "--fast", help="CPU-friendly: the fast model and 25% window overlap"),
    overlap: float = typer.Option(0.5, min=0.0, max=0.9, help="Sliding-window overlap (0.5 = nnU-Net/PyMIC)"),
    tta: bool = typer.Option(False, "--tta", help="Mirroring test-time augmentation along the axes the model was "
                             "trained mirror-invariant on (2^axes passes; a single pass for models with left/right "
                             "classes, like the demo model)"),
    roi_subset: Optional[List[str]] = typer.Option(None, "--roi-subset", help="Only these organs (names, "
                                                   "repeat or comma-separate)"),
    save_probabilities: bool = typer.Option(False, "--save-probabilities",
                                            help="Also write per-class probabilities (4-D uint8 NIfTI, p*255)"),
    statistics: bool = typer.Option(False, "--statistics", help="Volume (ml), mean/std HU per organ: a JSON per case "
                                    "and one statistics.csv for the batch (one row per organ per case)"),
    output_type: str = typer.Option("nifti", "--output-type", help="nifti | dicom-seg | both: DICOM SEG (one "
                                    "segment per organ, coded, referencing the source series) for DICOM inputs"),
    dicom_reference: Optional[Path] = typer.Option(None, "--dicom-reference", help="The DICOM series a NIfTI input "
                                                   "came from, for --output-type dicom-seg/both (one input)"),
    preview: bool = typer.Option(False, "--preview", help="PNG of three orthogonal slices with overlay"),
    skip_existing: bool = typer.Option(False, "--skip-existing", help="Skip inputs whose output exists (resume)"),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing outputs"),
) -> None:
    """Segment organs in CT volumes with PCT-Net. Output: label map with exactly the input geometry,
    a JSON sidecar with label names, and optional statistics, preview and probabilities."""
    from mis.pipelines.ct_segmentation.pipeline import CTSegmentationPipeline
    from mis.pipelines.ct_segmentation.run import (SegmentOptions, plan_items, segment_files, statistics_csv_path,
                                                   write_statistics_csv)
    from mis.registry import resolve_checkpoint

    runtime = runtime_of(ctx)
    options = SegmentOptions(roi_subset=_split_names(roi_subset), save_probabilities=save_probabilities,
                             statistics=statistics, preview=preview, skip_existing=skip_existing,
                             overwrite=overwrite, output_type=output_type, dicom_reference=dicom_reference)
    items = plan_items(inputs, output, options)
    checkpoint = resolve_checkpoint("ct_segmentation", model, fast=fast)
    with model_option():
        pipeline = CTSegmentationPipeline.from_checkpoint(checkpoint, runtime, overlap=0.25 if fast else overlap,
                                                          tta=tta and not fast)
    summary = segment_files(pipeline, items, options, runtime)
    if summary is None:  # a non-zero rank under torchrun: rank 0 reports
        raise typer.Exit(0)
    if statistics and summary.done:
        write_statistics_csv(statistics_csv_path(output), summary)
    report_run(summary, runtime, "mis segment", extra_columns=["windows", "windows_skipped", "warning"],
               run_info=pipeline.run_info())


@reports_errors
def train_segment(
    ctx: typer.Context,
    images: Optional[List[str]] = typer.Option(None, "--images", help="CT volumes (files, folders, DICOM series)"),
    labels: Optional[List[str]] = typer.Option(None, "--labels", help="Label maps, matched to images by case name"),
    labels_map: Optional[Path] = typer.Option(None, "--labels-map", help='JSON {"liver": [5], ...}: source label '
                                              "ids per class; key order = class ids 1..N"),
    phantoms: int = typer.Option(0, min=0, help="Add N seeded synthetic labelled phantoms"),
    out: Path = typer.Option(Path("runs/segment"), "--output", "-o", "--out", help="Run folder (checkpoints, "
                             "metrics.jsonl, model.safetensors)"),
    init: Optional[Path] = typer.Option(None, "--init", exists=True, dir_okay=False,
                                        help="Start from a checkpoint (e.g. `mis pretrain ct`): tensors with "
                                        "matching name and shape are loaded, the rest re-initialised"),
    steps: int = typer.Option(2000, min=1, help="Training iterations"),
    batch: int = typer.Option(2, "--batch", min=1, help="Patches per iteration"),
    lr: float = typer.Option(1e-3, help="Adam learning rate (poly decay, power 0.9)"),
    full: bool = typer.Option(False, "--full", help="Paper-size PCT-Net (64x128x128 patches, 24..512 channels; "
                              "GPU) instead of the fast CPU configuration"),
    spacing: Optional[float] = typer.Option(None, help="Isotropic model spacing in mm (default 4 fast, 1.5 full)"),
    partial_scans: float = typer.Option(0.35, "--partial-scans", min=0.0, max=1.0,
                                        help="Share of patches cut like a partial scan (a slab of the window; half "
                                        "as many get a field-of-view cut), so slabs and cut-off scans are in "
                                        "distribution (0: never)"),
    resume: bool = typer.Option(False, "--resume", help="Continue exactly from the run folder's last checkpoint"),
    half: bool = typer.Option(False, "--half", help="Store the final weights as fp16"),
) -> None:
    """Train PCT-Net: foreground-oversampled patches, flips and intensity augmentation, Dice + CE with deep
    supervision, poly LR, validation Dice on held-out phantoms, periodic checkpoints and exact resume.
    Under `torchrun` it trains with DDP."""
    from mis.pipelines.ct_segmentation.labels import read_labels_map
    from mis.pipelines.ct_segmentation.train import SegTrainOptions, train_segmentation

    runtime = runtime_of(ctx)
    options = SegTrainOptions(
        out=out, images=list(images or []), labels=list(labels or []),
        labels_map=read_labels_map(labels_map) if labels_map else None, phantoms=phantoms, steps=steps,
        batch_size=batch, lr=lr, fast=not full, spacing=(spacing,) * 3 if spacing else None, init=init,
        device=runtime.device, precision=runtime.precision, seed=runtime.seed, resume=resume, half=half,
        progress=runtime.chatty, partial_scans=partial_scans, command=command_line())
    log = training_log(runtime)
    result = train_segmentation(options, log=log)
    if runtime.json:
        print_json(result)


@reports_errors
def evaluate_segment(
    ctx: typer.Context,
    pred: List[str] = typer.Option(..., "--pred", help="Predicted label maps (folder, files or globs)"),
    ref: List[str] = typer.Option(..., "--ref", help="Reference label maps, matched by case name"),
    labels_map: Optional[Path] = typer.Option(None, "--labels-map", help='JSON {"liver": [5], ...} mapping '
                                              "reference ids to the prediction's classes"),
    hd95: bool = typer.Option(True, "--hd95/--no-hd95", help="Also compute HD95 (mm)"),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Also write the JSON report here"),
) -> None:
    """Dice and HD95 (MONAI metrics) per label and case, with the mean per label."""
    from mis.pipelines.ct_segmentation.evaluate import evaluate_segmentations
    from mis.pipelines.ct_segmentation.labels import read_labels_map

    mapping = read_labels_map(labels_map) if labels_map else None
    report = evaluate_segmentations(pred, ref, mapping, hd95=hd95)
    report_evaluation(report, runtime_of(ctx), output, f"Dice / HD95 over {len(report['cases'])} case(s)",
                      ["label", "Dice", "HD95 mm", "cases"],
                      lambda r: [[name, cell(m["dice"], 4), cell(m["hd95_mm"]), m["cases"]]
                                 for name, m in r["mean"].items()])


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
    log = training_log(runtime)
    result = run(options, log=log)
    if runtime.json:
        print_json(result)
