"""The task packages' specs drive the registry, the CLI and `mis models`: everything they name exists."""
from __future__ import annotations

import json
import subprocess
import sys

from typer.testing import CliRunner

from mis.cli.main import app, hoist_root_options
from mis.registry import WEIGHTS_DIR, shipped_models, task_specs
from mis.spec import resolve
from mis.tasks import TASK_PACKAGES

runner = CliRunner()


def test_every_task_package_declares_a_spec_whose_targets_resolve():
    specs = task_specs()
    assert len(specs) == len(TASK_PACKAGES)
    for spec in specs.values():
        resolve(spec.pipeline)
        for command in spec.commands:
            assert callable(resolve(command.target)), command
        for target in (spec.demo, spec.sample_data, *(f.import_preprocessing for f in spec.families)):
            if target:
                assert callable(resolve(target)), target
        for family in spec.families:
            resolve(f"{family.module}:{family.network}")
            resolve(f"{family.module}:{family.config}")
        assert spec.default_model is None or spec.model(spec.default_model) is not None
        for model in spec.models:
            assert (WEIGHTS_DIR / model.file).is_file(), model.file


def test_models_list_shows_every_shipped_model_and_info_takes_the_names_it_prints():
    result = runner.invoke(app, ["--json", "models", "list"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert {r["model"] for r in rows} >= {m.name for _, m in shipped_models()}
    assert "battery_fpnn_n40" in {r["model"] for r in rows}
    for name in {r["model"] for r in rows} | {r["task"] for r in rows}:
        info = runner.invoke(app, ["--json", "models", "info", name])
        assert info.exit_code == 0, (name, info.output)
        assert json.loads(info.stdout)["sha256"]


def test_root_options_may_follow_the_command():
    assert hoist_root_options(["segment", "x.nii.gz", "--json", "--device", "cpu", "-o", "out"]) == [
        "--json", "--device", "cpu", "segment", "x.nii.gz", "-o", "out"]
    assert hoist_root_options(["vocode", "--precision=bf16", "--", "--json"]) == ["--precision=bf16", "vocode",
                                                                                  "--", "--json"]
    result = runner.invoke(app, ["models", "list", "--json"])
    assert result.exit_code == 0 and json.loads(result.stdout)[0]["task"] == "ct_segmentation"


def test_io_imports_run_one_way():
    """The readers import the geometry, never the dispatching volume module (no import cycle)."""
    code = ("import sys; import mis.io.dicom, mis.io.nifti; "
            "assert 'mis.io.volume' not in sys.modules, 'a reader imported the dispatcher'")
    subprocess.run([sys.executable, "-c", code], check=True)
