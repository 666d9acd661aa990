"""`mis segment`: CT volumes (NIfTI files, DICOM series folders, folders of either, globs) -> label maps."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import List, Optional

import typer

from mis.cli.common import report_run, reports_errors, runtime_of


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
    tta: bool = typer.Option(False, "--tta", help="Mirroring test-time augmentation (8x slower)"),
    roi_subset: Optional[List[str]] = typer.Option(None, "--roi-subset", help="Only these organs (names, "
                                                   "repeat or comma-separate)"),
    save_probabilities: bool = typer.Option(False, "--save-probabilities",
                                            help="Also write per-class probabilities (4-D uint8 NIfTI, p*255)"),
    statistics: bool = typer.Option(False, "--statistics", help="Volume (ml) and mean HU per organ, JSON"),
    preview: bool = typer.Option(False, "--preview", help="PNG of three orthogonal slices with overlay"),
    skip_existing: bool = typer.Option(False, "--skip-existing", help="Skip inputs whose output exists (resume)"),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing outputs"),
) -> None:
    """Segment organs in CT volumes with PCT-Net. Output: label map with exactly the input geometry,
    a JSON sidecar with label names, and optional statistics, preview and probabilities."""
    from mis.pipelines.ct_segmentation.pipeline import CTSegmentationPipeline
    from mis.pipelines.ct_segmentation.run import SegmentOptions, plan_items, segment_files, segment_on_devices
    from mis.registry import resolve_checkpoint, task_entry
    from mis.runtime.distributed import dist_info, visible_gpu_workers

    runtime = runtime_of(ctx)
    items = plan_items(inputs, output)
    checkpoint = resolve_checkpoint("ct_segmentation", model or (task_entry("ct_segmentation").fast_checkpoint
                                                                if fast else None))
    settings = dict(overlap=0.25 if fast else overlap, tta=tta and not fast)
    options = SegmentOptions(roi_subset=_split_names(roi_subset), save_probabilities=save_probabilities,
                             statistics=statistics, preview=preview, skip_existing=skip_existing,
                             overwrite=overwrite)
    gpus = visible_gpu_workers() if runtime.device in ("auto", "cuda") and dist_info()[1] == 1 else []
    if len(gpus) > 1:  # one worker per GPU, each with its own copy of the network
        summary = segment_on_devices(
            lambda device: CTSegmentationPipeline.from_checkpoint(
                checkpoint, dataclasses.replace(runtime, device=device), **settings), items, options, gpus)
    else:
        pipeline = CTSegmentationPipeline.from_checkpoint(checkpoint, runtime, **settings)
        summary = segment_files(pipeline, items, options, workers=runtime.workers,
                                progress=runtime.chatty)
    if summary is None:  # a non-zero rank under torchrun: rank 0 reports
        raise typer.Exit(0)
    report_run(summary, runtime, "mis segment", extra_columns=["windows", "windows_skipped", "warning"])
