"""The contract every pipeline keeps, run for every task package's case in tests/contract_cases/:

checkpoint round trip, batch == single, same input same output, output dtype and shape, the precision and
compile options reach the network (or the run says they cannot apply), a bad input is an InputError naming
its file, golden output slices (tests/golden/<case>.json, rewritten by `python tests/golden/regenerate.py`),
and the CLI end to end on sample data with the device and precision recorded in its JSON.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from contract_cases import all_cases

CASES = all_cases()
GOLDEN = Path(__file__).parent / "golden"
runner = CliRunner()


@pytest.fixture(scope="module", params=CASES, ids=[c.name for c in CASES])
def case(request, tmp_path_factory):
    """(case, its tiny checkpoint), built once per case."""
    folder = tmp_path_factory.mktemp(request.param.name)
    return request.param, request.param.make_checkpoint(folder)


def runtime(**options):
    from mis.runtime.config import RuntimeConfig

    return RuntimeConfig(device="cpu", **{"precision": "fp32", **options})


def first_compute_layer(model: torch.nn.Module) -> torch.nn.Module:
    """The first convolution or linear layer: where autocast must change the dtype."""
    return next(m for m in model.modules() if isinstance(m, (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d,
                                                              torch.nn.Linear)))


def test_checkpoint_round_trip_gives_identical_outputs(case, tmp_path):
    from mis.checkpoints import load_checkpoint, read_card, save_checkpoint

    spec, checkpoint = case
    item = spec.inputs(1)[0]
    first = spec.run(spec.load(checkpoint, runtime()), item)
    model, card = load_checkpoint(checkpoint)
    copy = tmp_path / "copy.safetensors"
    save_checkpoint(copy, model, card)
    assert read_card(copy)["sha256"] == read_card(checkpoint)["sha256"]
    np.testing.assert_array_equal(spec.run(spec.load(copy, runtime()), item), first)


def test_batch_equals_single(case):
    spec, checkpoint = case
    pipeline = spec.load(checkpoint, runtime())
    items = spec.inputs(3)
    for batched, item in zip(spec.run_batch(pipeline, items), items):
        np.testing.assert_allclose(batched, spec.run(pipeline, item), rtol=spec.batch_tolerance,
                                   atol=spec.batch_tolerance)


def test_same_input_same_output_and_its_dtype_and_shape(case):
    spec, checkpoint = case
    item = spec.inputs(1)[0]
    first = spec.run(spec.load(checkpoint, runtime(seed=3)), item)
    again = spec.run(spec.load(checkpoint, runtime(seed=3)), item)
    np.testing.assert_array_equal(first, again)
    spec.expect(item, first)


def test_precision_option_reaches_the_network(case):
    from mis.runtime.notices import notices

    spec, checkpoint = case
    pipeline = spec.load(checkpoint, runtime(precision="bf16"))
    if not spec.has_network:
        assert pipeline.run_info()["precision"] == "fp32"
        assert any("--precision bf16 does not apply" in n for n in notices())
        return
    assert pipeline.run_info()["precision"] == "bf16"
    seen = []
    handle = first_compute_layer(pipeline.model).register_forward_hook(lambda m, i, out: seen.append(out.dtype))
    try:
        output = spec.run(pipeline, spec.inputs(1)[0])
    finally:
        handle.remove()
    assert seen and set(seen) == {torch.bfloat16}, seen
    assert np.isfinite(output).all()


COMPILED_GRAPHS: list = []


def _counting_backend(graph_module, example_inputs):
    """A torch.compile backend that records each graph it is given and runs it eagerly."""
    COMPILED_GRAPHS.append(graph_module)
    return graph_module.forward


if "mis_counting" not in torch._dynamo.list_backends(exclude_tags=()):
    torch._dynamo.register_backend(_counting_backend, name="mis_counting")


def test_compile_option_reaches_the_network(case, monkeypatch):
    from mis.runtime.notices import notices

    spec, checkpoint = case
    torch._dynamo.reset()
    COMPILED_GRAPHS.clear()
    compiled_graphs = COMPILED_GRAPHS
    monkeypatch.setenv("MIS_COMPILE_BACKEND", "mis_counting")
    pipeline = spec.load(checkpoint, runtime(compile=True))
    item = spec.inputs(1)[0]
    output = spec.run(pipeline, item)
    if not spec.has_network:
        assert not pipeline.run_info()["compiled"] and any("--compile does not apply" in n for n in notices())
        return
    assert pipeline.run_info()["compiled"] and compiled_graphs, "the network never went through torch.compile"
    np.testing.assert_allclose(output, spec.run(spec.load(checkpoint, runtime()), item), rtol=1e-4, atol=1e-5)


def test_a_bad_input_is_an_input_error_naming_the_file(case, tmp_path):
    from mis.errors import InputError

    spec, checkpoint = case
    path = tmp_path / "bad_input.bin"
    with pytest.raises(InputError) as caught:
        spec.bad_input(spec.load(checkpoint, runtime()), path)
    assert str(path) in str(caught.value) and "\n" not in str(caught.value)


def test_golden_output_slice(case):
    spec, checkpoint = case
    golden = GOLDEN / f"{spec.name}.json"
    if not golden.exists():
        pytest.fail(f"{golden} is missing: run `python tests/golden/regenerate.py`")
    expected = json.loads(golden.read_text())["slice"]
    actual = spec.golden(spec.run(spec.load(checkpoint, runtime()), spec.inputs(1)[0]))
    np.testing.assert_allclose(actual, expected, rtol=1e-3, atol=1e-4)


def test_cli_end_to_end_records_device_and_precision(case, tmp_path):
    from mis.cli.main import app

    spec, checkpoint = case
    result = runner.invoke(app, ["--json", "--device", "cpu", "--precision", "bf16",
                                 *spec.cli(checkpoint, tmp_path / "out")])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["device"] == "cpu"
    assert report["precision"] == ("bf16" if spec.has_network else "fp32")
