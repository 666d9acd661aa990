"""The model registry, built from the task packages' specs: data only, importable without torch.

It drives `mis models list/info/import`, the CLI's default checkpoints and the rebuilding of a network
from a checkpoint card. Unknown names raise an error that lists the valid ones.
"""
from __future__ import annotations

import functools
import importlib
from pathlib import Path

from mis.errors import UsageError
from mis.spec import ModelFamily, ShippedModel, TaskSpec
from mis.tasks import TASK_PACKAGES

WEIGHTS_DIR = Path(__file__).parent / "weights"


@functools.cache
def task_specs() -> dict[str, TaskSpec]:
    """Every task's spec, in the order of `mis.tasks.TASK_PACKAGES`."""
    specs = {}
    for package in TASK_PACKAGES:
        spec = importlib.import_module(f"mis.pipelines.{package}.spec").SPEC
        if spec.name in specs:
            raise RuntimeError(f"two task packages declare the task {spec.name!r}")
        specs[spec.name] = spec
    return specs


@functools.cache
def model_families() -> dict[str, ModelFamily]:
    families: dict[str, ModelFamily] = {}
    for spec in task_specs().values():
        for family in spec.families:
            families.setdefault(family.name, family)
    return families


def task_entry(task: str) -> TaskSpec:
    specs = task_specs()
    if task not in specs:
        raise UsageError(f"unknown task {task!r}; valid tasks: {', '.join(specs)}")
    return specs[task]


def model_family(name: str) -> ModelFamily:
    families = model_families()
    if name not in families:
        raise UsageError(f"unknown model family {name!r}; valid families: {', '.join(sorted(families))}")
    return families[name]


def shipped_models() -> list[tuple[TaskSpec, ShippedModel]]:
    """Every checkpoint the task packages ship, with its task."""
    return [(spec, model) for spec in task_specs().values() for model in spec.models]


def shipped_model(name: str) -> tuple[TaskSpec, ShippedModel] | None:
    """A shipped model by name or file name ("ct_pctnet_demo", "ct_pctnet_demo.safetensors")."""
    return next(((spec, m) for spec, m in shipped_models() if name in (m.name, m.file)), None)


def is_demo_checkpoint(path: str | Path) -> ShippedModel | None:
    """The shipped demo model `path` is, if it is one (commands that use it say so once)."""
    path = Path(path)
    for _, model in shipped_models():
        if model.demo and path.name == model.file and path.resolve() == (WEIGHTS_DIR / model.file).resolve():
            return model
    return None


def default_checkpoint_path(task: str, fast: bool = False) -> Path:
    spec = task_entry(task)
    name = spec.fast_model if fast and spec.fast_model else spec.default_model
    if name is None:
        raise UsageError(f"task {task!r} ships no checkpoint; train one (`mis train`) or import one "
                         "(`mis models import`) and pass it with --model")
    return WEIGHTS_DIR / spec.model(name).file


def resolve_checkpoint(task: str, model: str | None, *, fast: bool = False) -> Path:
    """`--model` may be a path, a shipped model's name or file name, or empty (the task default)."""
    if not model:
        return default_checkpoint_path(task, fast)
    path = Path(model)
    if path.exists():
        return path
    found = shipped_model(model) or shipped_model(f"{model}.safetensors")
    if found is not None and (WEIGHTS_DIR / found[1].file).exists():
        return WEIGHTS_DIR / found[1].file
    names = [m.name for _, m in shipped_models() if (WEIGHTS_DIR / m.file).exists()]
    raise UsageError(f"model {model!r} is neither a file nor a shipped checkpoint; shipped: {', '.join(names) or 'none'}")
