"""mis: six deep-learning pipelines behind one CLI and one runtime.

Importing `mis` imports no torch; the public API below loads on first use:

    import mis
    pipeline = mis.CTSegmentationPipeline.from_checkpoint(mis.default_checkpoint("ct_segmentation"))
    image, meta = mis.read_volume("scan.nii.gz")
    result = pipeline(image, meta)          # result.labels has exactly image.shape
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

_LAZY = {
    "CTSegmentationPipeline": "mis.pipelines.ct_segmentation.pipeline",
    "SegmentationResult": "mis.pipelines.ct_segmentation.pipeline",
    "RuntimeConfig": "mis.runtime.config",
    "load_checkpoint": "mis.checkpoints",
    "save_checkpoint": "mis.checkpoints",
    "read_card": "mis.checkpoints",
    "read_volume": "mis.io.volume",
    "write_nifti": "mis.io.nifti",
    "make_phantom": "mis.pipelines.ct_segmentation.phantom",
    "BatteryLifePipeline": "mis.pipelines.battery.pipeline",
    "read_cells": "mis.io.battery",
    "VocoderPipeline": "mis.pipelines.vocoder.pipeline",
    "read_audio": "mis.io.audio",
    "read_mel": "mis.io.audio",
    "write_wav": "mis.io.audio",
}

__all__ = ["__version__", "default_checkpoint", *_LAZY]


def default_checkpoint(task: str):
    """Path of the shipped checkpoint for a task (see `mis models list`)."""
    from mis.registry import resolve_checkpoint

    return resolve_checkpoint(task, None)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'mis' has no attribute {name!r}")
