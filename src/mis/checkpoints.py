"""Checkpoints: one `.safetensors` file whose header carries a JSON card.

The card holds everything needed to rebuild the network and its pre/post-processing without any
other file: model family and constructor config, preprocessing, labels, training data and metrics,
versions and a sha256 of the weights. Loading never unpickles.
"""
from __future__ import annotations

import hashlib
import importlib
import json
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save as safetensors_save

import mis
from mis.errors import CheckpointError
from mis.io.atomic import atomic_write_bytes
from mis.registry import model_family

CARD_KEY = "mis_card"
CARD_FORMAT = 1


def weights_sha256(state: dict[str, torch.Tensor]) -> str:
    """Hash of names, dtypes, shapes and bytes in sorted key order (independent of file layout)."""
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def build_card(family: str, config: dict, *, task: str, preprocessing: dict | None = None,
               labels: dict | None = None, training: dict | None = None, metrics: dict | None = None,
               extra: dict | None = None, inference: dict | None = None) -> dict:
    """`inference`: the model's default inference settings (e.g. a vocoder's phase refinement)."""
    return {
        "format": CARD_FORMAT,
        "task": task,
        "family": family,
        "config": config,
        "preprocessing": preprocessing or {},
        "labels": {str(k): v for k, v in (labels or {}).items()},
        "training": training or {},
        "metrics": metrics or {},
        "extra": extra or {},
        **({"inference": inference} if inference else {}),
    }


def save_checkpoint(path: str | Path, model: torch.nn.Module, card: dict, *, half: bool = False) -> dict:
    """Write weights + card atomically. `half` stores floating tensors as fp16 (demo weights)."""
    state = {}
    for name, tensor in model.state_dict().items():
        tensor = tensor.detach().cpu().contiguous()
        if half and tensor.is_floating_point():
            tensor = tensor.half()
        state[name] = tensor
    card = dict(card)
    card["versions"] = {"mis": mis.__version__, "torch": torch.__version__.split("+")[0]}
    card["storage_dtype"] = "float16" if half else "float32"
    card["sha256"] = weights_sha256(state)
    data = safetensors_save(state, metadata={CARD_KEY: json.dumps(card, sort_keys=True)})
    atomic_write_bytes(Path(path), data)
    return card


def read_card(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
    except Exception as exc:  # safetensors raises several types for bad headers
        raise CheckpointError(f"{path}: not a safetensors checkpoint ({exc})") from None
    if CARD_KEY not in metadata:
        raise CheckpointError(f"{path}: safetensors file has no mis card (import it with `mis models import`)")
    try:
        card = json.loads(metadata[CARD_KEY])
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: checkpoint card is not valid JSON ({exc})") from None
    problems = card_problems(card)
    if problems:
        raise CheckpointError(f"{path}: invalid checkpoint card: {'; '.join(problems)}")
    return card


# What every card holds, and the JSON type of each part.
CARD_FIELDS = {"task": str, "family": str, "config": dict, "preprocessing": dict, "labels": dict}


def card_problems(card: Any) -> list[str]:
    """What is wrong with a card's structure (any task); each pipeline checks its own values on top."""
    if not isinstance(card, dict):
        return [f"the card is a JSON {type(card).__name__}, not an object"]
    problems = []
    for name, kind in CARD_FIELDS.items():
        if name not in card:
            problems.append(f"no '{name}'")
        elif not isinstance(card[name], kind):
            problems.append(f"'{name}' is a JSON {type(card[name]).__name__}, not {'an object' if kind is dict else 'a string'}")
    labels = card.get("labels")
    if isinstance(labels, dict) and not all(isinstance(k, str) and k.lstrip("-").isdigit() and isinstance(v, str)
                                            for k, v in labels.items()):
        problems.append("'labels' must map class ids to names, e.g. {\"1\": \"liver\"}")
    family = card.get("family")
    if isinstance(family, str):
        from mis.registry import model_families

        if family not in model_families():
            problems.append(f"unknown model family {family!r} (this mis knows {', '.join(sorted(model_families()))})")
    return problems


def stored_shapes(path: str | Path) -> dict[str, tuple[int, ...]]:
    """Tensor names and shapes from the file's header (no tensor data is read)."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            return {name: tuple(handle.get_slice(name).get_shape()) for name in handle.keys()}
    except Exception as exc:  # safetensors raises several types for bad headers
        raise CheckpointError(f"{path}: not a safetensors checkpoint ({exc})") from None


def check_fit(path: str | Path, card: dict) -> None:
    """The card's network, built without memory (meta device), must have exactly the file's tensors: a card
    edited to declare another (say, an enormous) network is refused before anything is allocated."""
    try:
        with torch.device("meta"):
            expected = {k: tuple(v.shape) for k, v in build_model(card).state_dict().items()}
    except CheckpointError:
        raise
    except Exception as exc:  # the config's values do not build a network
        raise CheckpointError(f"{path}: the card's network config is invalid ({type(exc).__name__}: {exc})") from None
    stored = stored_shapes(path)
    missing = sorted(set(expected) - set(stored))
    unexpected = sorted(set(stored) - set(expected))
    wrong = sorted(k for k in set(expected) & set(stored) if expected[k] != stored[k])
    if missing or unexpected or wrong:
        first = (missing or unexpected or wrong)[0]
        raise CheckpointError(f"{path}: weights do not fit the card's network ({len(missing)} missing, "
                              f"{len(unexpected)} unexpected, {len(wrong)} of another shape; first: {first})")


def read_state(path: str | Path) -> dict[str, torch.Tensor]:
    if not Path(path).is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        with safe_open(str(path), framework="pt") as handle:
            return {name: handle.get_tensor(name) for name in handle.keys()}
    except Exception as exc:  # safetensors raises several types for bad headers
        raise CheckpointError(f"{path}: not a safetensors checkpoint ({exc})") from None


def build_model(card: dict) -> torch.nn.Module:
    """Rebuild the (untrained) network from the card alone."""
    family = model_family(card["family"])
    module = importlib.import_module(family.module)
    config_cls = getattr(module, family.config)
    network_cls = getattr(module, family.network)
    return network_cls(config_cls.from_dict(card["config"]))


def load_checkpoint(path: str | Path, *, verify: bool = True) -> tuple[torch.nn.Module, dict]:
    """Return (model in eval mode, float32, on CPU; card). strict=True: every key must match."""
    card = read_card(path)
    check_fit(path, card)
    state = read_state(path)
    if verify and card.get("sha256") and weights_sha256(state) != card["sha256"]:
        raise CheckpointError(f"{path}: weights do not match the card's sha256 (file corrupted or edited)")
    model = build_model(card)
    reference = model.state_dict()
    state = {k: v.to(reference[k].dtype) if k in reference else v for k, v in state.items()}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: weights do not fit the card's network ({str(exc).splitlines()[0]})") from None
    model.eval()
    return model, card


def load_matching(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> dict[str, list[str]]:
    """Load tensors whose name and shape match (fine-tuning init); report what was loaded and not.

    Upstream PyMIC does the same silently; we return the lists so the CLI can print them.
    """
    own = model.state_dict()
    loaded, reinitialised, unused = [], [], []
    for name, tensor in own.items():
        if name in state and tuple(state[name].shape) == tuple(tensor.shape):
            own[name] = state[name].to(tensor.dtype)
            loaded.append(name)
        else:
            reinitialised.append(name)
    unused = [name for name in state if name not in own or name in reinitialised]
    model.load_state_dict(own, strict=True)
    return {"loaded": loaded, "reinitialised": reinitialised, "unused": unused}


def describe(card: dict[str, Any]) -> dict[str, Any]:
    """A short summary for `mis models info`."""
    return {
        "task": card.get("task"),
        "family": card.get("family"),
        "config": card.get("config"),
        "labels": card.get("labels"),
        "preprocessing": card.get("preprocessing"),
        "metrics": card.get("metrics"),
        "training": card.get("training"),
        "versions": card.get("versions"),
        "storage_dtype": card.get("storage_dtype"),
        "sha256": card.get("sha256"),
    }


def init_provenance(path: str | Path | None) -> dict | None:
    """How the starting checkpoint was trained (its command and seconds), so that a fine-tuned model's card holds
    its whole recipe."""
    if path is None:
        return None
    card = read_card(path)
    return {"command": card.get("training", {}).get("command"), "seconds": card.get("metrics", {}).get("seconds")}
