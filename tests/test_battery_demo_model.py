"""The shipped battery models: load, run on the sample data and on real MIT/BEEP files, keep their accuracy."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import shared_file
from mis.checkpoints import read_card
from mis.cli.main import app
from mis.registry import WEIGHTS_DIR

runner = CliRunner()
SAMPLE = Path(__file__).resolve().parents[1] / "sample_data" / "battery"
MIT_NPZ = "battery/mit_severson_qdlin_train_test1_cycles2-100.npz"


@pytest.mark.parametrize("n_cycles", [100, 40])
def test_shipped_cards_describe_window_grid_and_baseline(n_cycles):
    card = read_card(WEIGHTS_DIR / f"battery_fpnn_n{n_cycles}.safetensors")
    assert card["task"] == "battery_life" and card["storage_dtype"] == "float16"
    assert card["preprocessing"]["n_cycles"] == n_cycles
    assert card["preprocessing"]["voltage_grid"] == {"start": 3.5, "stop": 2.0, "points": 1000}
    assert card["training"]["cells"] == 41 and card["config"]["ensemble_size"] == 5
    assert card["extra"]["baseline"]["slope"] < 0


def test_sample_data_runs_with_both_models():
    result = runner.invoke(app, ["--json", "battery", "predict", str(SAMPLE / "synthetic_cells.npz")])
    assert result.exit_code == 0, result.output
    cells = json.loads(result.stdout)["cells"]
    assert len(cells) == 3 and all(c["fpnn_cycle_life"] > 100 for c in cells)
    result = runner.invoke(app, ["--json", "battery", "predict", "--cycles", "40", str(SAMPLE / "synthetic_arbin.csv")])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["n_cycles"] == 40


def test_real_files_predict_or_fail_with_one_line():
    csv_cell = shared_file("battery/revisit_severson_raw/test1_cell1.csv")
    beep = shared_file("battery/beep_test_files/PreDiag_000233_00021F_truncated_structure.json")
    result = runner.invoke(app, ["--json", "battery", "predict", str(csv_cell), str(beep)])
    assert result.exit_code == 1
    cells = {c["cell"]: c for c in json.loads(result.stdout)["cells"]}
    assert cells["test1_cell1"]["observed_cycle_life"] == 1852 and cells["test1_cell1"]["fpnn_cycle_life"] > 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "PreDiag_000233" in errors[0] and "no complete discharge curves" in errors[0]


def test_shipped_n100_model_keeps_its_measured_accuracy_on_the_primary_test():
    result = runner.invoke(app, ["--json", "evaluate", "battery", str(shared_file(MIT_NPZ))])
    assert result.exit_code == 0, result.output
    test = json.loads(result.stdout)["splits"]["test1"]
    assert test["cells"] == 43
    # Measured when the model was trained (README): FPNN 115 cycles / 8.8 %, variance model 138 / 14.7 %.
    assert test["variance_rmse"] == pytest.approx(138, abs=1.5)
    assert test["fpnn_rmse"] < 119 and test["fpnn_mape"] < 9.3
