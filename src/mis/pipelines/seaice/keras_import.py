"""Upstream ViSual_IceD Keras weights (`.h5`) -> our state dict, by layer name (docs/visual_iced_keymap.md).

Upstream saves weights with Keras' HDF5 writer (`model.save_weights` / `ModelCheckpoint`, or `model.save` which puts
them under `model_weights`). Two layouts are read: Keras 2 (`<layer>/<weight_names attr>`: `kernel:0`, `bias:0`,
`gamma:0`, ...) and Keras 3 `.weights.h5` (`layers/<layer>/vars/0..n`, the same order). Named layers map by name;
the unnamed BatchNormalization and decoder Conv2D layers map by Keras' creation counter (`batch_normalization_7`),
which follows the order upstream builds them: SAR branch, MODIS branch, decoder, the order our modules are
registered in. Every shape is checked by the caller's strict load.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch

from mis.errors import InputError
from mis.models.visual_iced import VisualIced, VisualIcedConfig

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
CONV_PARTS = ("weight", "bias")                                       # kernel, bias
BN_PARTS = ("weight", "bias", "running_mean", "running_var")          # gamma, beta, moving_mean, moving_variance
_AUTO_NAME = re.compile(r"^(batch_normalization|conv2d)(?:_(\d+))?$")
_BLOCK_NAME = re.compile(r"^block(\d)_conv(\d)(_sar)?$")


def is_hdf5(path: Path) -> bool:
    with open(path, "rb") as handle:
        return handle.read(8) == HDF5_SIGNATURE


def read_keras_layers(path: Path) -> dict[str, list[np.ndarray]]:
    """Layer name -> its weights in Keras order, from either HDF5 layout."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            root = f["model_weights"] if "model_weights" in f else f
            if "layer_names" in root.attrs:                       # Keras 2
                layers = {}
                for name in (n.decode() if isinstance(n, bytes) else n for n in root.attrs["layer_names"]):
                    group = root[name]
                    weight_names = [w.decode() if isinstance(w, bytes) else w
                                    for w in group.attrs.get("weight_names", [])]
                    if weight_names:
                        layers[name] = [np.asarray(group[w]) for w in weight_names]
                return layers
            if "layers" in root:                                   # Keras 3 .weights.h5
                layers = {}
                for name, group in root["layers"].items():
                    if "vars" in group and len(group["vars"]):
                        layers[name] = [np.asarray(group["vars"][str(k)]) for k in range(len(group["vars"]))]
                return layers
    except OSError as exc:
        raise InputError(path, f"not a readable HDF5 file ({str(exc).splitlines()[0][:120]})") from None
    raise InputError(path, "an HDF5 file without Keras weights (no 'layer_names' attribute or 'layers' group)")


def _auto_index(name: str) -> tuple[str, int] | None:
    match = _AUTO_NAME.match(name)
    return (match.group(1), int(match.group(2) or 0)) if match else None


def _named_target(name: str) -> str | None:
    if name == "output_layer":
        return "output_layer"
    match = _BLOCK_NAME.match(name)
    if not match:
        return None
    branch = "sar" if match.group(3) else "msi"
    return f"{branch}.block{match.group(1)}_conv{match.group(2)}"


def _to_torch(weights: list[np.ndarray], parts: tuple[str, ...], target: str) -> dict[str, torch.Tensor]:
    out = {}
    for part, value in zip(parts, weights):
        tensor = torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32))
        if part == "weight" and tensor.ndim == 4:                 # Keras (kh, kw, in, out) -> torch (out, in, kh, kw)
            tensor = tensor.permute(3, 2, 0, 1).contiguous()
        out[f"{target}.{part}"] = tensor
    return out


def keras_state_dict(path: Path, config: dict) -> dict[str, torch.Tensor]:
    """Our state dict for `VisualIced(VisualIcedConfig.from_dict(config))` from upstream's `.h5`.

    A 1-channel SAR config takes upstream's 3-channel `block1_conv1_sar` summed over its input axis: upstream feeds
    HH replicated to three channels, so the sum is the same network on one HH channel."""
    layers = read_keras_layers(path)
    network = VisualIcedConfig.from_dict(config)
    model = VisualIced(network)
    own_bn = [n for n, m in model.named_modules() if isinstance(m, torch.nn.BatchNorm2d)]
    own_auto_conv = [n for n, m in model.named_modules()
                     if isinstance(m, torch.nn.Conv2d) and n.startswith("decoder.")]
    state: dict[str, torch.Tensor] = {}
    auto: dict[str, list[tuple[int, str]]] = {"batch_normalization": [], "conv2d": []}
    for name, weights in layers.items():
        target = _named_target(name)
        if target is not None:
            state.update(_to_torch(weights, CONV_PARTS, target))
        elif (kind := _auto_index(name)) is not None:
            auto[kind[0]].append((kind[1], name))
        # other weighted layers (none in upstream's model) are left out and reported by the strict load
    for kind, own, parts in (("batch_normalization", own_bn, BN_PARTS), ("conv2d", own_auto_conv, CONV_PARTS)):
        found = [name for _, name in sorted(auto[kind])]
        if len(found) != len(own):
            raise InputError(path, f"{len(found)} unnamed {kind} layers, the config has {len(own)} "
                                   f"(is the file upstream's ViSual_IceD with this --config?)")
        for keras_name, target in zip(found, own):
            state.update(_to_torch(layers[keras_name], parts, target))
    first = state.get("sar.block1_conv1.weight")
    if first is not None and network.sar_channels == 1 and first.shape[1] == 3:
        state["sar.block1_conv1.weight"] = first.sum(1, keepdim=True)
    for name, tensor in model.state_dict().items():               # BN counters have no Keras counterpart
        if name.endswith("num_batches_tracked"):
            state[name] = torch.zeros_like(tensor)
    return state
