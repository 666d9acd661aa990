"""Import upstream `.pth`/`.pt` checkpoints into our format, without running any pickled code.

`torch.load(weights_only=True)` only rebuilds tensors and plain containers; a file that carries
other pickled objects (and so could run code) is refused. Keys go through an explicit key map per
model family, the network is rebuilt from a config, loaded with strict=True and saved with a card.
"""
from __future__ import annotations

import pickle
from pathlib import Path

import torch

from mis.checkpoints import build_card, build_model, save_checkpoint
from mis.errors import CheckpointError, InputError
from mis.registry import model_family
from mis.spec import KeyMap, resolve

# Upstream training scripts wrap the weights in these containers (PyMIC: "model_state_dict").
CONTAINER_KEYS = ("model_state_dict", "state_dict", "model", "net", "generator")


def key_map(family: str) -> KeyMap:
    """The family's upstream -> ours key map (declared in its task package's spec)."""
    return model_family(family).key_map


def default_config(family: str) -> dict:
    """The network config of the family's released upstream weights (the spec's import defaults)."""
    spec = model_family(family)
    config_cls = resolve(f"{spec.module}:{spec.config}")
    return config_cls(**spec.import_defaults).to_dict()


def default_preprocessing(family: str, config: dict) -> dict:
    """What the card needs besides the network (e.g. a vocoder's mel convention), from the spec's hook."""
    hook = model_family(family).import_preprocessing
    return resolve(hook)(config) if hook else {}


def safe_torch_load(path: Path) -> object:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "unsupported pickled object"
        raise CheckpointError(f"{path}: refused: the file holds pickled objects other than tensors, which could "
                              f"run code when loaded ({first[:160]})") from None
    except (RuntimeError, EOFError, ValueError, OSError) as exc:
        raise InputError(path, f"not a readable PyTorch checkpoint ({str(exc).splitlines()[0][:160]})") from None


def extract_state_dict(obj: object, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(obj, dict):
        for key in CONTAINER_KEYS:
            if key in obj and isinstance(obj[key], dict):
                return extract_state_dict(obj[key], path)
        tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
        if tensors:
            return tensors
    raise InputError(path, "no state dict found (expected a dict of tensors or one under "
                     f"{', '.join(CONTAINER_KEYS)})")


def map_keys(state: dict[str, torch.Tensor], key_map: KeyMap) -> dict[str, torch.Tensor]:
    mapped = {}
    for name, tensor in state.items():
        for prefix in key_map.strip_prefixes:
            if name.startswith(prefix):
                name = name[len(prefix):]
        if any(name.startswith(p) for p in key_map.drop_prefixes):
            continue
        for old, new in key_map.renames:
            if name.startswith(old):
                name = new + name[len(old):]
                break
        for old, new in key_map.suffix_renames:
            if name.endswith(old):
                name = name[: -len(old)] + new
                break
        mapped[name] = tensor
    return mapped


def read_upstream_state(source: Path, family: str, config: dict) -> dict[str, torch.Tensor]:
    """Our names -> tensors: a torch checkpoint through the key map, or an HDF5 (Keras) file through the family's
    reader."""
    with open(source, "rb") as handle:
        hdf5 = handle.read(8) == b"\x89HDF\r\n\x1a\n"
    reader = model_family(family).import_reader
    if hdf5 and reader:
        return resolve(reader)(source, config)
    if hdf5:
        raise InputError(source, f"an HDF5 (Keras) file; the {family} family imports PyTorch checkpoints only")
    return map_keys(extract_state_dict(safe_torch_load(source), source), key_map(family))


def import_checkpoint(source: Path, target: Path, *, family: str, task: str, config: dict,
                      preprocessing: dict | None = None, labels: dict | None = None, half: bool = False) -> dict:
    """Returns the saved card. Raises with the missing/unexpected keys when the map does not fit."""
    state = read_upstream_state(source, family, config)
    model = build_model({"family": family, "config": config})
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong_shape = sorted(k for k in set(own) & set(state) if tuple(own[k].shape) != tuple(state[k].shape))
    if missing or unexpected or wrong_shape:
        def head(keys: list[str]) -> str:
            return ", ".join(keys[:4]) + (f" (+{len(keys) - 4} more)" if len(keys) > 4 else "")
        problems = [f"{len(missing)} missing: {head(missing)}" if missing else "",
                    f"{len(unexpected)} unexpected: {head(unexpected)}" if unexpected else "",
                    f"{len(wrong_shape)} wrong shape: {head(wrong_shape)}" if wrong_shape else ""]
        raise CheckpointError(f"{source}: weights do not fit {family} with this config; "
                              + "; ".join(p for p in problems if p))
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()}, strict=True)
    card = build_card(family, config, task=task, preprocessing=preprocessing, labels=labels,
                      training={"imported_from": source.name})
    return save_checkpoint(target, model, card, half=half)
