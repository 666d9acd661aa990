"""mis: deep-learning pipelines behind one CLI and one runtime.

Importing `mis` imports no torch; the public API loads on first use. The runtime and checkpoint names
are listed here, each task package adds its own (its spec's `api`):

    import mis
    pipeline = mis.CTSegmentationPipeline.from_checkpoint(mis.default_checkpoint("ct_segmentation"))
    image, meta = mis.read_volume("scan.nii.gz")
    result = pipeline(image, meta)          # result.labels has exactly image.shape
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

_CORE = {
    "RuntimeConfig": "mis.runtime.config",
    "load_checkpoint": "mis.checkpoints",
    "save_checkpoint": "mis.checkpoints",
    "read_card": "mis.checkpoints",
}


def _api() -> dict[str, str]:
    from mis.registry import task_specs

    names = dict(_CORE)
    for spec in task_specs().values():
        names.update(spec.api)
    return names


def __dir__() -> list[str]:
    return sorted({"__version__", "default_checkpoint", *globals(), *_api()})


def default_checkpoint(task: str):
    """Path of the shipped checkpoint for a task (see `mis models list`)."""
    from mis.registry import resolve_checkpoint

    return resolve_checkpoint(task, None)


def __getattr__(name: str):
    if name == "__all__":  # computed on request: the task packages' names come from their specs
        return ["__version__", "default_checkpoint", *_api()]
    if name.startswith("__"):
        raise AttributeError(name)
    api = _api()
    if name in api:
        return getattr(importlib.import_module(api[name]), name)
    raise AttributeError(f"module 'mis' has no attribute {name!r}")
