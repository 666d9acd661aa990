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


# ---------------------------------------------------------------------------------------------- reader fixes

def _arbin_text(tmp_path, header=None, delimiter=",", decimal=".", edit_row=None, name="cell.csv"):
    """A synthetic Arbin export with its header, separators or rows changed (edit_row: list of str -> same)."""
    cell = synthetic_cell(3, n_cycles=12)
    plain = tmp_path / "plain.csv"
    write_arbin_csv(cell, plain)
    lines = plain.read_text().splitlines()
    rows = [row.split(",") for row in lines[1:]]
    rows = [edit_row(row) for row in rows] if edit_row else rows
    text = [delimiter.join(header or lines[0].split(","))]
    text += [delimiter.join(field.replace(".", decimal) for field in row) for row in rows if row]
    path = tmp_path / name
    path.write_text("\n".join(text) + "\n")
    return cell, path


def test_arbin_mits_pro_column_names_and_milli_units(tmp_path):
    header = ["Data Point", "Test Time(s)", "Cycle Index", "Current(mA)", "Voltage(V)", "Discharge Capacity(mAh)",
              "Aux_Temperature_1(C)"]
    milli = lambda row: row[:3] + [str(1000 * float(row[3])), row[4], str(1000 * float(row[5])), row[6]]
    cell, path = _arbin_text(tmp_path, header=header, edit_row=milli)
    back = read_cells(path)[0]
    np.testing.assert_array_equal(back.cycles, cell.cycles)
    np.testing.assert_allclose(back.qd, cell.qd, atol=3e-3)
    assert back.temperature is not None and back.charge_time


@pytest.mark.parametrize("decimal", [".", ","])
def test_arbin_semicolon_and_comma_decimal_exports(tmp_path, decimal):
    cell, path = _arbin_text(tmp_path, delimiter=";", decimal=decimal)
    np.testing.assert_allclose(read_cells(path)[0].qd, cell.qd, atol=3e-3)


def test_mit_csv_with_a_byte_order_mark_or_european_separators(tmp_path):
    cell = synthetic_cell(2, n_cycles=12)
    text = "\n".join(",".join(f"{q:.6f}" for q in row) for row in cell.qd.T) + "\n"
    (tmp_path / "bom_cell1.csv").write_text(text, encoding="utf-8-sig")
    (tmp_path / "euro_cell1.csv").write_text(text.replace(",", ";").replace(".", ","))
    for name in ("bom_cell1.csv", "euro_cell1.csv"):
        np.testing.assert_allclose(read_cells(tmp_path / name)[0].qd, cell.qd, atol=1e-6)


def test_maccor_header_after_three_preamble_lines_and_a_numbered_file_without_one(tmp_path):
    cell = synthetic_cell(3, n_cycles=12)
    path = tmp_path / "cell.041"
    write_maccor_text(cell, path)
    lines = path.read_text().splitlines()
    text = tmp_path / "cell.txt"  # no numbered suffix: found by its header, which is on line 4
    text.write_text("\n".join(lines[:1] + ["Procedure: x", "Comment: y"] + lines[1:]) + "\n")
    np.testing.assert_allclose(read_cells(text)[0].qd, cell.qd, atol=3e-3)
    path.write_text("\n".join(lines[:1] + lines[2:]) + "\n")
    with pytest.raises(InputError, match="no 'Rec#' header line in its first 5 lines"):
        read_cells(path)


def test_a_folder_lists_maccor_text_exports_but_not_other_text_files(tmp_path):
    from mis.io.files import resolve_inputs

    write_maccor_text(synthetic_cell(3, n_cycles=12), tmp_path / "cell_a.txt")
    (tmp_path / "numbered").mkdir()
    write_maccor_text(synthetic_cell(3, n_cycles=12), tmp_path / "numbered" / "cell_a.041")
    (tmp_path / "notes.txt").write_text("cells from the March batch\n")
    (tmp_path / "empty.txt").write_text("")
    listed = resolve_inputs([tmp_path], kinds=("battery",))
    assert [p.name for p in listed] == ["cell_a.txt"]
    np.testing.assert_array_equal(read_cells(listed[0])[0].qd, read_cells(tmp_path / "numbered" / "cell_a.041")[0].qd)


def test_upstream_revisit_severson_layout_finds_the_cycle_life(tmp_path):
    cell = synthetic_cell(2, n_cycles=12)
    for folder in ("data/train", "data/cycle_lives", "other"):
        (tmp_path / folder).mkdir(parents=True)
    for path in (tmp_path / "data/train/cell2.csv", tmp_path / "other/cell2.csv"):
        np.savetxt(path, cell.qd.T, delimiter=",")
    (tmp_path / "data/cycle_lives/train_cycle_lives.csv").write_text("700\n812\n")
    upstream = read_cells(tmp_path / "data/train/cell2.csv")[0]
    assert (upstream.cycle_life, upstream.split) == (812, "train")
    alone = read_cells(tmp_path / "other/cell2.csv")[0]  # a folder without lives is not a split
    assert (alone.cycle_life, alone.split) == (None, None)


def _beep(summary=None, interpolated=None, parameters=None):
    document = {"summary": {"cycle_index": [1, 2], "discharge_capacity": [1.0, 1.0]} if summary is None else summary}
    curve = {"voltage": [3.0] * 20, "discharge_capacity": [0.5] * 20, "cycle_index": [1] * 20}
    document["cycles_interpolated"] = {**curve, **(interpolated or {})}
    if parameters is not None:
        document["structuring_parameters"] = parameters
    return document


@pytest.mark.parametrize("document, message", [
    (_beep(interpolated={"discharge_capacity": [0.5] * 19}), "cycles_interpolated columns have different lengths"),
    (_beep(interpolated={"voltage": ["x"] * 20}), "'cycles_interpolated/voltage' holds non-numeric"),
    (_beep(interpolated={"cycle_index": 1}), "'cycles_interpolated/cycle_index' is not an array"),
    (_beep(parameters={"v_range": "abc"}), "'v_range' is not \\[low, high\\] volts"),
    (_beep(parameters={"resolution": "x"}), "'resolution' is not a number"),
    (_beep(parameters={"nominal_capacity": "4.8 Ah"}), "'nominal_capacity' is not a number"),
    (_beep(parameters=[1]), "'structuring_parameters' is not a JSON object"),
    (_beep(summary=[1, 2]), "'summary' is not a JSON object \\(found an array\\)"),
])
def test_malformed_beep_json_gets_a_plain_message(tmp_path, document, message):
    path = tmp_path / "beep.json"
    path.write_text(json.dumps(document))
    with pytest.raises(InputError, match=message):
        read_cells(path)


def test_raw_discharges_over_another_voltage_window_are_named(tmp_path):
    def shifted(row):  # an NMC-like cell: 4.22 -> 2.69 V instead of 3.52 -> 1.99 V
        return row[:4] + [f"{float(row[4]) + 0.7:.5f}"] + row[5:]

    _, path = _arbin_text(tmp_path, edit_row=shifted)
    nmc = read_cells(path)[0]
    with pytest.raises(InputError, match="cover 4.2.-2.6. V; the model's grid is 3.5-2.0 V: another chemistry"):
        cell_window(nmc, 10, MIT_VOLTAGE_GRID)

    def cut_short(row):  # discharges stopped at 3.0 V: same window, partial data
        return row if float(row[3]) > 0 or float(row[4]) > 3.0 else []

    _, path = _arbin_text(tmp_path, edit_row=cut_short, name="short.csv")
    with pytest.raises(InputError, match="cover 3.5.-3.0. V, only part of the model's 3.5-2.0 V grid"):
        cell_window(read_cells(path)[0], 10, MIT_VOLTAGE_GRID)


def test_npz_capacities_in_mah_are_named(tmp_path):
    arrays = as_npz_arrays(synthetic_cells(2, n_cycles=12))
    arrays["qdlin"] = arrays["qdlin"] * 1000.0
    np.savez(tmp_path / "mah.npz", **arrays)
    with pytest.raises(InputError, match="capacities look like mAh"):
        read_cells(tmp_path / "mah.npz")
