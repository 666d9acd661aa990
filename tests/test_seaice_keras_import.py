"""`mis models import --task seaice` on upstream-style Keras `.h5` weights (both HDF5 layouts), written here from a
seeded torch model with Keras names, Keras tensor layouts and Keras' auto-naming counters."""
from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from mis.checkpoints import load_checkpoint
from mis.cli.main import app
from mis.models.visual_iced import VisualIced, VisualIcedConfig

runner = CliRunner()
# upstream's layout (SAR 3x finer, 2-channel head) with narrow widths so the test is fast
SMALL = VisualIcedConfig(sar_channels=3, msi_channels=3, widths=(4, 8, 8, 16, 16), ratio=3, finer="sar",
                         classes=2)


def keras_layers(model: VisualIced, bn_offset: int = 3, conv_offset: int = 5) -> dict[str, list[np.ndarray]]:
    """Our weights under upstream's Keras layer names; the auto-named counters start above 0, as they do when a
    Keras session built other layers first."""
    state = {k: v.numpy() for k, v in model.state_dict().items()}
    layers = {}

    def conv(ours: str) -> list[np.ndarray]:
        return [state[f"{ours}.weight"].transpose(2, 3, 1, 0), state[f"{ours}.bias"]]

    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Conv2d) and not name.startswith("decoder."):
            if name == "output_layer":
                layers["output_layer"] = conv(name)
            else:
                branch, layer = name.split(".")
                layers[layer + ("_sar" if branch == "sar" else "")] = conv(name)
    bns = [n for n, m in model.named_modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for k, name in enumerate(bns):
        keras = "batch_normalization" if k + bn_offset == 0 else f"batch_normalization_{k + bn_offset}"
        layers[keras] = [state[f"{name}.{p}"] for p in ("weight", "bias", "running_mean", "running_var")]
    decoder_convs = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d) and n.startswith("decoder.")]
    for k, name in enumerate(decoder_convs):
        layers[f"conv2d_{k + conv_offset}"] = conv(name)
    return layers


def write_keras2(path, layers: dict[str, list[np.ndarray]], under_model_weights: bool) -> None:
    parts = {4: ("kernel:0", "bias:0")}
    names = list(layers)[::-1]                     # graph order is not creation order
    with h5py.File(path, "w") as f:
        root = f.create_group("model_weights") if under_model_weights else f
        root.attrs["layer_names"] = [n.encode() for n in names + ["max_pooling2d", "dropout_2"]]
        for name in names:
            group = root.create_group(name)
            weights = layers[name]
            labels = parts[4] if weights[0].ndim == 4 else ("gamma:0", "beta:0", "moving_mean:0", "moving_variance:0")
            full = [f"{name}/{label}" for label in labels]
            group.attrs["weight_names"] = [w.encode() for w in full]
            for label, value in zip(full, weights):
                group.create_dataset(label, data=value)
        for empty in ("max_pooling2d", "dropout_2"):
            root.create_group(empty).attrs["weight_names"] = []


def write_keras3(path, layers: dict[str, list[np.ndarray]]) -> None:
    with h5py.File(path, "w") as f:
        for name, weights in layers.items():
            group = f.create_group(f"layers/{name}/vars")
            for k, value in enumerate(weights):
                group.create_dataset(str(k), data=value)


def seeded_model(config: VisualIcedConfig = SMALL) -> VisualIced:
    torch.manual_seed(0)
    model = VisualIced(config)
    with torch.no_grad():                          # non-trivial BN statistics, so a swapped BN would show
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
    return model.eval()


def inputs(config: VisualIcedConfig = SMALL):
    torch.manual_seed(1)
    return torch.randn(1, config.sar_channels, 48, 48), torch.randn(1, config.msi_channels, 16, 16)


def import_h5(source, out, config: dict):
    return runner.invoke(app, ["models", "import", str(source), "--task", "seaice", "-o", str(out),
                               "--config", json.dumps(config)])


@pytest.mark.parametrize("layout", ["keras2", "keras2_model", "keras3"])
def test_keras_weights_import_to_the_same_network(tmp_path, layout):
    model = seeded_model()
    source = tmp_path / "visual_iced.h5"
    layers = keras_layers(model)
    if layout == "keras3":
        write_keras3(source, layers)
    else:
        write_keras2(source, layers, under_model_weights=layout == "keras2_model")
    result = import_h5(source, tmp_path / "ours.safetensors", SMALL.to_dict())
    assert result.exit_code == 0, result.output
    imported, card = load_checkpoint(tmp_path / "ours.safetensors")
    assert card["training"]["imported_from"] == "visual_iced.h5"
    sar, msi = inputs()
    with torch.no_grad():
        torch.testing.assert_close(imported.eval()(sar, msi), model(sar, msi))


def test_one_channel_import_sums_the_sar_kernel_and_reads_hh(tmp_path):
    model = seeded_model()
    write_keras2(tmp_path / "w.h5", keras_layers(model), under_model_weights=False)
    config = {**SMALL.to_dict(), "sar_channels": 1}
    assert import_h5(tmp_path / "w.h5", tmp_path / "one.safetensors", config).exit_code == 0
    imported, card = load_checkpoint(tmp_path / "one.safetensors")
    assert card["preprocessing"]["sar_bands"] == "HH"
    sar, msi = inputs()
    hh = sar[:, :1]
    with torch.no_grad():
        torch.testing.assert_close(imported.eval()(hh, msi), model(hh.expand(-1, 3, -1, -1), msi),
                                   rtol=1e-4, atol=1e-5)


def test_swapped_shapes_and_missing_layers_are_refused(tmp_path):
    layers = keras_layers(seeded_model())
    del layers["batch_normalization_5"]
    write_keras2(tmp_path / "short.h5", layers, under_model_weights=False)
    result = import_h5(tmp_path / "short.h5", tmp_path / "x.safetensors", SMALL.to_dict())
    assert result.exit_code == 1
    assert "short.h5" in result.output and "batch_normalization" in result.output
    assert not (tmp_path / "x.safetensors").exists()
    wider = {**SMALL.to_dict(), "widths": [8, 8, 8, 16, 16]}
    write_keras2(tmp_path / "w.h5", keras_layers(seeded_model()), under_model_weights=False)
    result = import_h5(tmp_path / "w.h5", tmp_path / "y.safetensors", wider)
    assert result.exit_code == 1 and "wrong shape" in result.output
    assert not (tmp_path / "y.safetensors").exists()


def test_hdf5_without_keras_weights_and_truncated_files_get_one_line(tmp_path):
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f.create_dataset("x", data=np.zeros(3))
    result = import_h5(tmp_path / "other.h5", tmp_path / "x.safetensors", SMALL.to_dict())
    assert result.exit_code == 1 and "other.h5" in result.output and "Keras" in result.output
    write_keras2(tmp_path / "w.h5", keras_layers(seeded_model()), under_model_weights=False)
    data = (tmp_path / "w.h5").read_bytes()
    (tmp_path / "cut.h5").write_bytes(data[: len(data) // 3])
    result = import_h5(tmp_path / "cut.h5", tmp_path / "x.safetensors", SMALL.to_dict())
    assert result.exit_code == 1 and "cut.h5" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "x.safetensors").exists()


def test_families_without_a_reader_refuse_hdf5(tmp_path):
    with h5py.File(tmp_path / "w.h5", "w") as f:
        f.create_dataset("x", data=np.zeros(3))
    result = runner.invoke(app, ["models", "import", str(tmp_path / "w.h5"), "--task", "bwe", "-o",
                                 str(tmp_path / "x.safetensors")])
    assert result.exit_code == 1 and "PyTorch checkpoints only" in result.output
