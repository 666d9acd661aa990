"""What a task package declares about itself: data only, importable without torch.

Every `pipelines/<task>/spec.py` defines one `SPEC = TaskSpec(...)`. The registry, the CLI, `mis models`,
`mis demo`, `mis models import`, the sample-data script and the lazy `mis.<Name>` API are all built from
the list of specs in `mis/tasks.py`, so adding a task writes its own files and adds one line there.

Functions and classes are named by "module:attribute" strings and imported only when used, so reading
every spec (as `mis --help` does) costs no heavy import.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any


def resolve(target: str) -> Any:
    """"package.module:attribute" -> the attribute (imports the module)."""
    module, _, attribute = target.partition(":")
    if not attribute:
        raise ValueError(f"expected 'module:attribute', got {target!r}")
    return getattr(importlib.import_module(module), attribute)


@dataclass(frozen=True)
class KeyMap:
    """How upstream state-dict names become ours (`mis models import`)."""
    strip_prefixes: tuple[str, ...] = ("module.", "_orig_mod.")   # DataParallel / torch.compile wrappers
    renames: tuple[tuple[str, str], ...] = ()                      # (upstream prefix, our prefix)
    drop_prefixes: tuple[str, ...] = ()                            # upstream tensors we do not use
    suffix_renames: tuple[tuple[str, str], ...] = ()               # (upstream suffix, our suffix)


@dataclass(frozen=True)
class ModelFamily:
    """A network family: `Network(Config.from_dict(card["config"]))` rebuilds it from a card."""
    name: str
    module: str                     # python module holding the family, e.g. "mis.models.pctnet"
    network: str                    # nn.Module class name
    config: str                     # dataclass config class name
    key_map: KeyMap = KeyMap()      # upstream checkpoint names -> ours
    import_defaults: dict[str, Any] = field(default_factory=dict)  # config of the released upstream weights
    # "module:function(config: dict) -> dict": the card's preprocessing for imported weights (e.g. a mel convention)
    import_preprocessing: str | None = None
    # "module:function(path, config: dict) -> state dict in our names" for upstream files that are not torch
    # checkpoints (e.g. Keras HDF5); used when the file is HDF5
    import_reader: str | None = None


@dataclass(frozen=True)
class ShippedModel:
    """A checkpoint in `mis/weights/`, trained by the documented command named in its card."""
    name: str                       # what `--model` and `mis models info` accept, e.g. "ct_pctnet_demo"
    file: str                       # file name in mis/weights
    description: str
    demo: bool = True               # a demo model: commands that use it say so once, with the two lines below
    quality: str = ""               # what it measured, in one line (the card's metrics hold the numbers)
    instead: str = ""               # how to get a model for real use


@dataclass(frozen=True)
class Command:
    """One CLI command: `group` None is top level (`mis segment`), else `mis <group> <name>`."""
    name: str
    target: str                     # "mis.cli.segment:segment"
    group: str | None = None


@dataclass(frozen=True)
class TaskSpec:
    name: str                       # registry key, e.g. "ct_segmentation"
    title: str                      # one line for `mis models list` and help
    panel: str                      # help panel of its top-level commands: Medical, Audio, Remote sensing, ...
    pipeline: str                   # "module:Class" of the pipeline (derives from pipelines.base.Pipeline)
    families: tuple[ModelFamily, ...]
    models: tuple[ShippedModel, ...] = ()
    default_model: str | None = None   # a ShippedModel name
    fast_model: str | None = None      # the CPU-friendly one (`--fast`)
    commands: tuple[Command, ...] = ()
    groups: dict[str, str] = field(default_factory=dict)   # task-owned command groups -> help text
    input_kinds: tuple[str, ...] = ()  # io input kinds its commands read (documentation and `mis models list`)
    demo: str | None = None            # "module:function(sample_dir, out_dir, runtime) -> list[dict]" for `mis demo`
    sample_data: str | None = None     # "module:function(out_dir) -> list[Path]" for sample_data/make_sample_data.py
    api: dict[str, str] = field(default_factory=dict)      # lazy `mis.<name>` -> module

    @property
    def command_line(self) -> str:
        """The main command as users type it, e.g. "mis segment" or "mis battery predict"."""
        main = self.commands[0] if self.commands else None
        if main is None:
            return ""
        return f"mis {main.group + ' ' if main.group else ''}{main.name}"

    def model(self, name: str) -> ShippedModel | None:
        return next((m for m in self.models if m.name == name or m.file == name), None)
