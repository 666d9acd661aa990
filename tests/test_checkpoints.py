"""Checkpoint card round trip, strict loading, corruption detection, and refusal of pickled code."""
from __future__ import annotations

import json
import pickle

import pytest
import torch

from mis.checkpoints import build_card, load_checkpoint, read_card, save_checkpoint
from mis.errors import CheckpointError
from mis.models.pctnet import PCTNet, fast_config


def tiny_model():
    torch.manual_seed(1)
    return PCTNet(fast_config(3, (16, 32, 32), resolution_mode=0, feature_chns=(4, 8, 16, 16, 32),
                              num_heads=(2, 2, 2)))


def test_round_trip_rebuilds_the_model_from_the_card_alone(tmp_path):
    model = tiny_model().eval()
    card = build_card("pctnet", model.config.to_dict(), task="ct_segmentation",
                      labels={1: "a", 2: "b"}, preprocessing={"spacing": [4, 4, 4]})
    path = tmp_path / "m.safetensors"
    saved = save_checkpoint(path, model, card)
    loaded, loaded_card = load_checkpoint(path)
    assert loaded_card["sha256"] == saved["sha256"]
    assert loaded_card["labels"] == {"1": "a", "2": "b"}
    assert loaded_card["versions"]["torch"]
    x = torch.randn(1, 1, 16, 32, 32)
    with torch.inference_mode():
        assert torch.equal(model(x), loaded(x))


def test_half_storage_keeps_outputs_close(tmp_path):
    model = tiny_model().eval()
    card = build_card("pctnet", model.config.to_dict(), task="ct_segmentation")
    save_checkpoint(tmp_path / "h.safetensors", model, card, half=True)
    loaded, card = load_checkpoint(tmp_path / "h.safetensors")
    assert card["storage_dtype"] == "float16"
    x = torch.randn(1, 1, 16, 32, 32)
    with torch.inference_mode():
        torch.testing.assert_close(model(x), loaded(x), atol=5e-2, rtol=5e-2)


def test_edited_weights_fail_the_sha256_check(tmp_path):
    model = tiny_model()
    path = tmp_path / "m.safetensors"
    save_checkpoint(path, model, build_card("pctnet", model.config.to_dict(), task="ct_segmentation"))
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF  # flip bits inside the last tensor
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="sha256"):
        load_checkpoint(path)


def test_card_must_match_the_weights(tmp_path):
    model = tiny_model()
    path = tmp_path / "m.safetensors"
    config = model.config.to_dict() | {"class_num": 5}
    save_checkpoint(path, model, build_card("pctnet", config, task="ct_segmentation"))
    with pytest.raises(CheckpointError, match="do not fit"):
        load_checkpoint(path)


def test_non_checkpoint_files_give_clear_errors(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match="not a safetensors"):
        read_card(bad)
    with pytest.raises(CheckpointError, match="not found"):
        read_card(tmp_path / "missing.safetensors")


class RunsCode:
    """Unpickling this calls a function: what a malicious .pth does."""

    def __reduce__(self):
        return (exec, ("open(__import__('os').environ['MIS_PWNED'], 'w').write('pwned')",))


def test_import_refuses_a_pickle_that_would_run_code(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from mis.cli.main import app

    marker = tmp_path / "pwned.txt"
    monkeypatch.setenv("MIS_PWNED", str(marker))
    evil = tmp_path / "evil.pth"
    with open(evil, "wb") as handle:
        pickle.dump({"state_dict": {"w": RunsCode()}}, handle)
    out = tmp_path / "out.safetensors"
    result = CliRunner().invoke(app, ["models", "import", str(evil), "-o", str(out)])
    assert result.exit_code == 1
    assert "refused" in result.output
    assert not marker.exists(), "the pickled code ran"
    assert not out.exists()


def test_import_maps_upstream_keys_and_loads_strictly(tmp_path):
    from typer.testing import CliRunner

    from mis.cli.main import app

    model = tiny_model()
    upstream = {"iteration": 100, "model_state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}
    source = tmp_path / "upstream.pt"
    torch.save(upstream, source)
    out = tmp_path / "imported.safetensors"
    config = json.dumps(model.config.to_dict())
    result = CliRunner().invoke(app, ["models", "import", str(source), "-o", str(out), "--config", config])
    assert result.exit_code == 0, result.output
    loaded, _ = load_checkpoint(out)
    x = torch.randn(1, 1, 16, 32, 32)
    with torch.inference_mode():
        assert torch.equal(model.eval()(x), loaded(x))
    # a state dict with a missing tensor is rejected with the key named
    del upstream["model_state_dict"][next(iter(upstream["model_state_dict"]))]
    torch.save(upstream, source)
    result = CliRunner().invoke(app, ["models", "import", str(source), "-o", str(tmp_path / "x.safetensors"),
                                      "--config", config])
    assert result.exit_code == 1 and "missing" in result.output
