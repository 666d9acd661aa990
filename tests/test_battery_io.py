"""Battery readers and features: real MIT/BEEP files from ../shared/data, synthetic raw cycler files."""
from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import shared_file
from mis.errors import InputError
from mis.io.battery import MIT_VOLTAGE_GRID, read_cells
from mis.pipelines.battery.features import cell_window, curves, dq_dv, reference_cycle, summary_features
from mis.pipelines.battery.synthetic import (as_npz_arrays, synthetic_cell, synthetic_cells, write_arbin_csv,
                                            write_maccor_text)

MIT_NPZ = "battery/mit_severson_qdlin_train_test1_cycles2-100.npz"
KNOWN_GLITCHES = {("train_cell2", 12), ("train_cell9", 13), ("train_cell16", 73),
                  ("test1_cell1", 12), ("test1_cell3", 12), ("test1_cell9", 13)}


def test_mit_npz_reads_the_severson_split_and_repairs_the_six_known_glitches():
    cells = read_cells(shared_file(MIT_NPZ))
    assert len(cells) == 84
    assert sum(c.split == "train" for c in cells) == 41 and sum(c.split == "test1" for c in cells) == 43
    found = set()
    for cell in cells:
        window = cell_window(cell, 100, cell.voltage)
        assert np.abs(window.qd).max() < 1.3
        for warning in window.warnings:
            cycle = int(warning.split("cycle ")[1].split()[0])
            found.add((cell.name, cycle))
    assert found == KNOWN_GLITCHES


def test_mit_csv_matches_the_npz_and_takes_its_life_from_the_sibling_file():
    csv_cell = read_cells(shared_file("battery/revisit_severson_raw/train_cell1.csv"))[0]
    npz_cell = next(c for c in read_cells(shared_file(MIT_NPZ)) if c.name == "train_cell1")
    assert csv_cell.cycle_life == npz_cell.cycle_life == 2160
    np.testing.assert_allclose(csv_cell.qd, npz_cell.qd, atol=1e-6)
    np.testing.assert_array_equal(csv_cell.cycles, np.arange(2, 101))


def test_real_beep_and_cycler_files_parse():
    folder = "battery/beep_test_files/"
    trajectory = read_cells(shared_file(folder + "PreDiag_000233_00021F_truncated_structure.json"))[0]
    assert len(trajectory.capacity) == 1612 and len(trajectory.cycles) == 0  # summary only, no Q(V)
    short = read_cells(shared_file(folder + "PredictionDiagnostics_000107_0001B9_structure_short.json"))[0]
    assert short.nominal_capacity == pytest.approx(4.84)
    arbin = read_cells(shared_file(folder + "FastCharge_000025_CH8.csv"))[0]
    assert arbin.meta["barcode"] == "EL150800453116"
    read_cells(shared_file(folder + "maccor_test_file_4267-66-6519.041"))
    with pytest.raises(InputError, match="no complete discharge curves"):
        cell_window(trajectory, 100, MIT_VOLTAGE_GRID)


@pytest.mark.parametrize("writer, suffix", [(write_arbin_csv, ".csv"), (write_maccor_text, ".041")])
def test_raw_cycler_exports_round_trip_to_the_same_curves(tmp_path, writer, suffix):
    cell = synthetic_cell(3, n_cycles=12)
    path = tmp_path / f"cell{suffix}"
    writer(cell, path)
    back = read_cells(path)[0]
    np.testing.assert_array_equal(back.cycles, cell.cycles)
    np.testing.assert_allclose(back.qd, cell.qd, atol=3e-3)
    assert back.capacity[5] == pytest.approx(cell.qd[3, -1], abs=3e-3)


def test_features_follow_the_documented_definitions():
    cell = synthetic_cell(1)
    window = cell_window(cell, 100, cell.voltage)
    x = curves(window, cell.voltage, 100)
    assert x.shape == (3, 99, 250) and x.dtype == np.float32
    delta = cell.curve(100) - cell.curve(reference_cycle(100))
    assert reference_cycle(100) == 10 and reference_cycle(40) == 4 and reference_cycle(10) == 2
    np.testing.assert_allclose(x[1, -1], delta.reshape(250, 4).mean(1), atol=1e-6)  # 4-point bins
    np.testing.assert_allclose(curves(window, cell.voltage, 100, points=1000)[1, -1], delta, atol=1e-6)
    assert summary_features(window, 100)[0] == pytest.approx(np.log10(np.var(delta)))
    # dQ/dV of a linear Q(V) is its slope
    linear = np.tile(2.0 * (3.5 - MIT_VOLTAGE_GRID), (2, 1))
    np.testing.assert_allclose(dq_dv(linear, MIT_VOLTAGE_GRID)[:, 20:-20], 2.0, rtol=1e-6)


def test_bad_inputs_get_one_clear_error(tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(InputError, match="empty"):
        read_cells(empty)
    arbin = tmp_path / "arbin.csv"
    arbin.write_text("Data_Point,Cycle_Index,Current,Discharge_Capacity\n0,1,1.0,0.0\n")
    with pytest.raises(InputError, match="missing column.*Voltage"):
        read_cells(arbin)
    truncated = tmp_path / "cells.npz"
    buffer = tmp_path / "full.npz"
    np.savez(buffer, **as_npz_arrays(synthetic_cells(2, n_cycles=12)))
    truncated.write_bytes(buffer.read_bytes()[:2000])
    with pytest.raises(InputError, match="npz"):
        read_cells(truncated)
    short = synthetic_cell(0, n_cycles=30)
    with pytest.raises(InputError, match="needs the first 40 cycles"):
        cell_window(short, 40, short.voltage)
    with_nan = synthetic_cell(0, n_cycles=20)
    with_nan.qd[5, 100] = np.nan
    with pytest.raises(InputError, match="NaN values .* cycle\\(s\\) 7"):
        cell_window(with_nan, 20, with_nan.voltage)
    beep = tmp_path / "beep.json"
    beep.write_text(json.dumps({"summary": {"cycle_index": [1, 2]}}))
    with pytest.raises(InputError, match="discharge_capacity"):
        read_cells(beep)


def test_beep_interpolated_curves_ordered_by_rising_voltage_read_back(tmp_path):
    cell = synthetic_cell(4, n_cycles=12)
    rising = cell.voltage[::-1]
    table = {"voltage": [], "discharge_capacity": [], "cycle_index": [], "step_type": []}
    for cycle, curve in zip(cell.cycles, cell.qd):
        table["voltage"] += rising.tolist()
        table["discharge_capacity"] += curve[::-1].tolist()
        table["cycle_index"] += [int(cycle)] * len(rising)
        table["step_type"] += ["discharge"] * len(rising)
    document = {"summary": {"cycle_index": cell.cycles.tolist(), "discharge_capacity": cell.qd[:, -1].tolist()},
                "cycles_interpolated": table, "structuring_parameters": {"v_range": [2.0, 3.5], "resolution": 1000}}
    path = tmp_path / "beep.json"
    path.write_text(json.dumps(document))
    back = read_cells(path)[0]
    np.testing.assert_allclose(back.qd, cell.qd, atol=1e-6)


def test_cells_without_a_life_yet_and_damaged_members(tmp_path):
    arrays = as_npz_arrays(synthetic_cells(2, n_cycles=12))
    arrays["cycle_life"] = np.array([np.nan, 800.0])
    np.savez(tmp_path / "running.npz", **arrays)
    assert [c.cycle_life for c in read_cells(tmp_path / "running.npz")] == [None, 800]
    arrays["split"] = np.array(["train"])
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(InputError, match="'split' has shape"):
        read_cells(tmp_path / "bad.npz")
    beep = tmp_path / "text.json"
    beep.write_text(json.dumps({"summary": {"cycle_index": [1, "x"], "discharge_capacity": [1.0, 1.0]}}))
    with pytest.raises(InputError, match="non-numeric"):
        read_cells(beep)
