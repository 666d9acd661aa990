"""Battery pipeline contract: checkpoint round trip, batch == single, determinism, baseline, CLI end to end."""
from __future__ import annotations

import csv
import json
from dataclasses import replace

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import shared_file
from mis.checkpoints import load_checkpoint, read_card, save_checkpoint
from mis.cli.main import app
from mis.io.battery import read_cells
from mis.pipelines.battery.baseline import VarianceModel, rmse_mape
from mis.pipelines.battery.features import cell_window, summary_features
from mis.pipelines.battery.pipeline import BatteryLifePipeline
from mis.pipelines.battery.preprocess import stack_cells
from mis.pipelines.battery.synthetic import as_npz_arrays, synthetic_cell, synthetic_cells

runner = CliRunner()


def _arrays(n_cycles=20, count=5, seed=7):
    return stack_cells(synthetic_cells(count, seed=seed, n_cycles=n_cycles), n_cycles, synthetic_cell(0).voltage)


def test_checkpoint_round_trip_gives_identical_predictions(tiny_battery_checkpoint, tmp_path):
    pipeline = BatteryLifePipeline.from_checkpoint(tiny_battery_checkpoint)
    arrays = _arrays()
    first = pipeline(arrays.curves, arrays.summary)
    model, card = load_checkpoint(tiny_battery_checkpoint)
    copy = tmp_path / "copy.safetensors"
    save_checkpoint(copy, model, card)
    again = BatteryLifePipeline.from_checkpoint(copy)(arrays.curves, arrays.summary)
    np.testing.assert_array_equal(first.fpnn, again.fpnn)
    np.testing.assert_array_equal(first.variance, again.variance)
    assert read_card(copy)["preprocessing"]["n_cycles"] == 20


def test_batch_equals_single(tiny_battery_checkpoint):
    pipeline = BatteryLifePipeline.from_checkpoint(tiny_battery_checkpoint)
    arrays = _arrays()
    batch = pipeline(arrays.curves, arrays.summary).fpnn
    single = [pipeline(arrays.curves[i:i + 1], arrays.summary[i:i + 1]).fpnn[0] for i in range(len(arrays))]
    np.testing.assert_allclose(batch, single, rtol=1e-5)
    assert np.all(batch > 0)


def test_same_seed_same_weights(tmp_path):
    from mis.models.fpnn import FPNNConfig
    from mis.pipelines.battery.train import BatteryTrainOptions, train_battery

    cells = synthetic_cells(6, n_cycles=12)
    cards = []
    for run in ("a", "b"):
        options = BatteryTrainOptions(out=tmp_path / run, n_cycles=12, members=1, steps=3, batch_size=3,
                                      config=FPNNConfig(channels=4, hidden=8), progress=False)
        cards.append(read_card(train_battery(cells, options)["checkpoint"]))
    assert cards[0]["sha256"] == cards[1]["sha256"]


def test_unusable_cells_get_an_error_row_and_the_rest_are_predicted(tiny_battery_checkpoint):
    pipeline = BatteryLifePipeline.from_checkpoint(tiny_battery_checkpoint)
    cells = [synthetic_cell(1, n_cycles=30), synthetic_cell(2, n_cycles=12), synthetic_cell(3, n_cycles=25)]
    rows = pipeline.predict_cells(cells)
    assert [r.error is None for r in rows] == [True, False, True]
    assert "needs the first 20 cycles" in rows[1].error
    assert rows[0].fpnn > 0 and rows[0].variance > 0


def test_a_capacity_the_model_never_saw_is_refused(tiny_battery_checkpoint):
    """mAh read as Ah, or a 2.5 Ah cell, would otherwise get a confident, meaningless life."""
    pipeline = BatteryLifePipeline.from_checkpoint(tiny_battery_checkpoint)
    cell = synthetic_cell(1, n_cycles=30)
    rows = pipeline.predict_cells([cell, replace(cell, qd=cell.qd * 1000.0, nominal_capacity=1100.0),
                                   replace(cell, qd=cell.qd * 2.3, nominal_capacity=2.5)])
    assert rows[0].error is None
    assert "is the file in mAh?" in rows[1].error and "another cell type" in rows[2].error


def test_variance_model_reproduces_severson_on_the_real_cells():
    cells = read_cells(shared_file("battery/mit_severson_qdlin_train_test1_cycles2-100.npz"))
    feature = np.array([summary_features(cell_window(c, 100, c.voltage), 100)[0] for c in cells])
    life = np.array([c.cycle_life for c in cells], dtype=float)
    train = np.array([c.split == "train" for c in cells])
    model = VarianceModel.fit(feature[train], life[train])
    train_rmse, train_mape = rmse_mape(model.predict(feature[train]), life[train])
    test_rmse, test_mape = rmse_mape(model.predict(feature[~train]), life[~train])
    # Severson et al. 2019, Table 1: 103 / 14.1 % train, 138 / 14.7 % primary test.
    assert abs(train_rmse - 103) < 3 and abs(train_mape - 14.1) < 0.3
    assert abs(test_rmse - 138) < 3 and abs(test_mape - 14.7) < 0.3


def _write_npz(path, cells):
    np.savez(path, **as_npz_arrays(cells))


def test_cli_predict_writes_table_csv_plots_and_continues_past_bad_files(tiny_battery_checkpoint, tmp_path):
    data = tmp_path / "cells.npz"
    _write_npz(data, synthetic_cells(3, seed=5, n_cycles=30, split="test1"))
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    out_csv, plots = tmp_path / "pred.csv", tmp_path / "plots"
    missing = tmp_path / "missing.csv"
    result = runner.invoke(app, ["--json", "battery", "predict", str(data), str(empty), str(missing), "--model",
                                 str(tiny_battery_checkpoint), "--csv", str(out_csv), "--plot", str(plots)])
    assert result.exit_code == 1
    document = json.loads(result.stdout)
    ok = [c for c in document["cells"] if c["error"] is None]
    assert len(ok) == 3 and all(c["fpnn_cycle_life"] > 0 and c["variance_model_cycle_life"] > 0 for c in ok)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 2 and "empty.csv" in errors[0] and "empty" in errors[0]
    assert "missing.csv: no such file" in errors[1]  # a missing path is one row, not the end of the batch
    assert "Traceback" not in result.output
    rows = list(csv.DictReader(out_csv.open()))
    assert len(rows) == 5 and rows[0]["fpnn_cycle_life"]
    assert len(list(plots.glob("*.png"))) == 3


def test_report_files_never_replace_inputs(tiny_battery_checkpoint, tmp_path):
    data = tmp_path / "cells.npz"
    _write_npz(data, synthetic_cells(1, n_cycles=30))
    original = data.read_bytes()
    for option in ("--csv", "--plot"):
        result = runner.invoke(app, ["battery", "predict", str(data), "--model", str(tiny_battery_checkpoint),
                                     option, str(data)])
        assert result.exit_code == 2 and data.read_bytes() == original, result.output


def test_cli_rejects_a_window_the_model_does_not_use(tiny_battery_checkpoint, tmp_path):
    data = tmp_path / "cells.npz"
    _write_npz(data, synthetic_cells(2, n_cycles=30))
    result = runner.invoke(app, ["battery", "predict", str(data), "--model", str(tiny_battery_checkpoint),
                                 "--cycles", "40"])
    assert result.exit_code == 2 and "first 20 cycles" in result.output


def test_cli_train_then_evaluate(tmp_path):
    data = tmp_path / "cells.npz"
    cells = synthetic_cells(8, seed=2, n_cycles=15) + synthetic_cells(4, seed=3, n_cycles=15, split="test1")
    _write_npz(data, cells)
    out = tmp_path / "run"
    result = runner.invoke(app, ["--quiet", "train", "battery", str(data), "--cycles", "15", "--members", "1",
                                 "--steps", "3", "--batch", "4", "-o", str(out)])
    assert result.exit_code == 0, result.output
    card = read_card(out / "model.safetensors")
    assert card["training"]["cells"] == 8 and card["extra"]["baseline"]["slope"] < 0
    result = runner.invoke(app, ["--json", "evaluate", "battery", str(data), "--model", str(out / "model.safetensors")])
    assert result.exit_code == 0, result.output
    splits = json.loads(result.stdout)["splits"]
    assert splits["train"]["cells"] == 8 and splits["test1"]["cells"] == 4 and splits["all"]["cells"] == 12
    assert splits["test1"]["variance_rmse"] > 0


def test_temperature_and_charge_time_from_raw_exports(tmp_path):
    from mis.models.fpnn import FPNNConfig
    from mis.pipelines.battery.synthetic import write_arbin_csv
    from mis.pipelines.battery.train import BatteryTrainOptions, train_battery

    cells = []
    for seed in range(6):
        path = tmp_path / f"arbin{seed}.csv"
        write_arbin_csv(synthetic_cell(seed, n_cycles=12), path, points=120)
        cell = read_cells(path)[0]
        cell.cycle_life = synthetic_cell(seed, n_cycles=12).cycle_life
        cells.append(cell)
    options = BatteryTrainOptions(out=tmp_path / "run", n_cycles=12, members=1, steps=2, batch_size=3,
                                  temperature=True, charge_time=True, config=FPNNConfig(channels=4, hidden=8),
                                  progress=False)
    checkpoint = train_battery(cells, options)["checkpoint"]
    card = read_card(checkpoint)
    assert card["preprocessing"]["channels"][-1] == "temperature" and card["config"]["in_channels"] == 4
    assert card["preprocessing"]["summary_features"][-1] == "charge_time_s"
    pipeline = BatteryLifePipeline.from_checkpoint(checkpoint)
    rows = pipeline.predict_cells(cells[:2] + [synthetic_cell(9, n_cycles=12)])  # the last has no temperature
    assert rows[0].error is None and rows[1].error is None
    assert "uses temperature" in rows[2].error


def test_take_selects_the_same_cells_by_mask_or_position():
    arrays = _arrays(n_cycles=30, count=6, seed=3)
    mask = np.array([True, False, True, False, False, True])
    by_mask, by_position = arrays.take(mask), arrays.take(np.array([0, 2, 5]))
    assert by_mask.names == by_position.names == [arrays.names[i] for i in (0, 2, 5)]
    np.testing.assert_array_equal(by_mask.curves, arrays.curves[[0, 2, 5]])
    np.testing.assert_array_equal(by_position.summary, arrays.summary[[0, 2, 5]])
    np.testing.assert_array_equal(by_mask.life, arrays.life[[0, 2, 5]])


def test_training_refuses_cells_without_anything_to_learn(tmp_path):
    from mis.errors import UsageError
    from mis.pipelines.battery.train import training_cells

    cells = synthetic_cells(3, n_cycles=30)
    with pytest.raises(UsageError, match="within the first 30 cycles"):
        training_cells([replace(cells[0], cycle_life=25), *cells[1:]], None, 30)
    with pytest.raises(UsageError, match="two cells with different cycle lives"):
        training_cells([replace(c, cycle_life=500) for c in cells], None, 30)


def test_a_prediction_far_from_the_observed_life_is_flagged(tiny_battery_checkpoint):
    from mis.pipelines.battery.pipeline import FAR_FROM_OBSERVED

    pipeline = BatteryLifePipeline.from_checkpoint(tiny_battery_checkpoint)
    cell = synthetic_cell(1, n_cycles=30)
    predicted = pipeline.predict_cells([replace(cell, cycle_life=None)])[0].fpnn
    close = replace(cell, cycle_life=int(predicted * 1.1))
    far = replace(cell, cycle_life=int(predicted / (1 + 2 * FAR_FROM_OBSERVED)))
    rows = pipeline.predict_cells([close, far])
    assert not any("observed" in w for w in rows[0].warnings)
    assert any("unlike the cells the model was trained on" in w for w in rows[1].warnings)
