"""Battery cycling data: every cycler format to one per-cycle representation.

A :class:`Cell` holds, per cycle, the discharge capacity on a fixed voltage grid, Q_d(V) (the
"Qdlin" of Severson et al. and BEEP's `cycles_interpolated`), optionally the temperature on the same
grid, and per-cycle scalars (discharge capacity, charge time). Readers:

- MIT/Severson Q(V) NPZ (`qdlin` [cells, cycles, points], as in ../shared/data/battery) -> many cells;
- MIT/Severson Qdlin CSV (1000 rows = voltage points 3.5 -> 2.0 V, one column per cycle from cycle 2),
  with the life read from a sibling `<split>_cycle_lives.csv` when there is one;
- BEEP structured JSON (`summary` + `cycles_interpolated`);
- raw Arbin CSV exports (Cycle_Index, Current, Voltage, Discharge_Capacity, ... or MITS Pro's `Cycle Index`,
  `Current(A)`, ...; comma-, semicolon- or tab-separated);
- raw Maccor text exports (`Rec#  Cyc#  Step  TestTime ... Amps  Volts  State`).

Raw time series are cut into cycles and their discharge segment is interpolated on the voltage grid.
Imports no torch. Every problem with a file raises InputError naming the file.
"""
from __future__ import annotations

import csv
import json
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mis.errors import InputError

# The MIT/Severson convention (also BEEP's default for LFP): 1000 points from 3.5 V down to 2.0 V.
MIT_VOLTAGE_GRID = np.linspace(3.5, 2.0, 1000)
MIT_FIRST_CYCLE = 2          # the Qdlin matrices start at cycle 2 (cycle 1 is formation)
MIT_NOMINAL_CAPACITY = 1.1   # Ah, A123 APR18650M1A

ARBIN_COLUMNS = ("Cycle_Index", "Current", "Voltage", "Discharge_Capacity")
ARBIN_OPTIONAL = ("Test_Time", "Temperature")
# Other spellings of a column that normalising does not catch (MITS Pro logs temperature on an auxiliary channel).
ARBIN_ALIASES = {"auxtemperature1": "Temperature"}
# Units (lower case) that the reader converts to A, Ah, V: a factor 1/1000.
MILLI_UNITS = ("ma", "mah", "mv")
MACCOR_COLUMNS = ("Cyc#", "Amps", "Volts", "State")
# The Maccor header ('Rec#...') may follow a few preamble lines; the sniffing and the reader share this window.
MACCOR_HEADER_LINES = 5
# Companion files that sit beside cell files and are not cells themselves.
_COMPANION = re.compile(r".*(_metadata\.csv|_cycle_lives\.csv|si_table9\.csv|provenance\.md)$", re.IGNORECASE)


def is_battery_name(path: Path) -> bool:
    """Cell files a folder expands to: .npz, .csv, .json and Maccor's numbered exports (.000-.999)."""
    name = Path(path).name
    if name.startswith(".") or _COMPANION.fullmatch(name):
        return False
    suffix = Path(name).suffix.lower()
    return suffix in (".npz", ".csv", ".json") or bool(re.fullmatch(r"\.\d{3}", suffix))


@dataclass
class Cell:
    """One cell's per-cycle data.

    voltage: (P,) the grid, descending (charged -> discharged), volts.
    cycles: (K,) cycle numbers that have a discharge curve, ascending.
    qd: (K, P) discharge capacity in Ah at each grid voltage (0 at the top of the grid).
    temperature: (K, P) degC on the same grid, or None when the source has none.
    capacity: per-cycle discharge capacity {cycle number: Ah}, from curves or the cycler's summary
      (may cover many more cycles than `cycles`, e.g. a BEEP summary of 1612 cycles).
    charge_time: {cycle number: seconds} when the source has it.
    cycle_life: observed life (first cycle below 80 % of nominal) when known, else None.
    discharge_range: (low, high) volts a typical discharge of a raw time series spans, also when no cycle
      covers the grid (so a cell cycled over another window can be told apart from partial data).
    """

    name: str
    source: str
    voltage: np.ndarray
    cycles: np.ndarray
    qd: np.ndarray
    temperature: np.ndarray | None = None
    capacity: dict[int, float] = field(default_factory=dict)
    charge_time: dict[int, float] = field(default_factory=dict)
    cycle_life: int | None = None
    split: str | None = None
    nominal_capacity: float | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    discharge_range: tuple[float, float] | None = None

    def curve(self, cycle: int) -> np.ndarray:
        index = np.searchsorted(self.cycles, cycle)
        if index >= len(self.cycles) or self.cycles[index] != cycle:
            raise KeyError(cycle)
        return self.qd[index]

    @property
    def last_cycle(self) -> int:
        return int(self.cycles[-1]) if len(self.cycles) else 0


# ---------------------------------------------------------------------------------------------- dispatch

def read_cells(path: str | Path) -> list[Cell]:
    """Read every cell in one file (format chosen by content, not only by suffix)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "file not found")
    if path.stat().st_size == 0:
        raise InputError(path, "file is empty")
    suffix = path.suffix.lower()
    if suffix == ".npz":
        return _read_mit_npz(path)
    if suffix == ".json":
        return [_read_beep_json(path)]
    head = _head_lines(path, MACCOR_HEADER_LINES)
    # Maccor's numbered suffix (.000-.999) is its own: a file without a header gets the Maccor reader's message
    if re.fullmatch(r"\.\d{3}", suffix) or any(line.startswith("Rec#") or "\tCyc#\t" in line for line in head):
        return [_read_maccor(path)]
    if suffix == ".csv":
        fields = _split_header(head[0])
        if set(_arbin_columns(fields)) & set(ARBIN_COLUMNS):
            return [_read_arbin_csv(path)]
        return [_read_mit_csv(path)]
    raise InputError(path, f"unknown battery data format {suffix or '(no suffix)'}; expected an MIT Q(V) .npz/.csv, "
                     "a BEEP structured .json, an Arbin .csv or a Maccor text export")


def _head_lines(path: Path, count: int) -> list[str]:
    try:
        with open(path, encoding="utf-8-sig", errors="replace") as handle:
            return [handle.readline() for _ in range(count)]
    except OSError as exc:
        raise InputError(path, f"cannot read ({exc.strerror})") from None


# ---------------------------------------------------------------------------------------------- MIT layouts

def _read_mit_npz(path: Path) -> list[Cell]:
    try:
        data = np.load(path, allow_pickle=False)
        keys = set(data.files)
    except Exception as exc:  # zipfile/numpy raise several types for truncated or foreign files
        raise InputError(path, f"not a readable .npz ({type(exc).__name__}: {exc})") from None
    missing = [k for k in ("qdlin", "voltage", "cycles") if k not in keys]
    if missing:
        raise InputError(path, f"missing array(s) {', '.join(missing)} (expected the MIT Q(V) layout: qdlin "
                         "[cells, cycles, points], voltage [points], cycles [cycles])")
    try:
        qdlin = np.asarray(data["qdlin"], dtype=np.float64)
        voltage = np.asarray(data["voltage"], dtype=np.float64)
        cycles = np.asarray(data["cycles"], dtype=np.int64)
        members = {key: np.asarray(data[key]) for key in ("cycle_life", "split", "cell_index", "barcode",
                                                          "charging_policy", "batch_date") if key in keys}
    except Exception as exc:  # zlib/zipfile/numpy errors for damaged members
        raise InputError(path, f"array data is corrupt ({type(exc).__name__}: {exc})") from None
    if voltage.ndim != 1 or cycles.ndim != 1:
        raise InputError(path, f"voltage and cycles must be 1-D, got shapes {voltage.shape} and {cycles.shape}")
    if qdlin.ndim != 3 or qdlin.shape[1:] != (len(cycles), len(voltage)):
        raise InputError(path, f"qdlin has shape {qdlin.shape}; expected [cells, {len(cycles)}, {len(voltage)}]")
    if qdlin.shape[0] == 0:
        raise InputError(path, "no cells in the file")
    _check_ah(path, qdlin)
    count = qdlin.shape[0]
    for key, values in members.items():
        if values.ndim != 1 or len(values) != count:
            raise InputError(path, f"'{key}' has shape {values.shape}; expected one value per cell ({count})")
    life = members.get("cycle_life")
    split = members.get("split")
    names = _npz_cell_names(members, set(members), count)
    cells = []
    for i in range(count):
        meta = {key: str(members[key][i]) for key in ("barcode", "charging_policy", "batch_date") if key in members}
        qd = qdlin[i]
        cells.append(Cell(
            name=names[i], source=str(path), voltage=voltage, cycles=cycles, qd=qd,
            capacity={int(c): float(q[-1]) for c, q in zip(cycles, qd)},
            cycle_life=_life_or_none(life[i]) if life is not None else None,
            split=str(split[i]) if split is not None else None,
            nominal_capacity=MIT_NOMINAL_CAPACITY, meta=meta))
    return cells


# Typical capacities above this many times the nominal one are not Ah (mAh is 1000 x; glitches are single cycles).
MAH_FACTOR = 100


def _check_ah(path: Path, qdlin: np.ndarray) -> None:
    """Refuse curves in mAh here: further on every curve would be taken for a glitch ("corrupted cycles")."""
    ends = qdlin[..., -1][np.isfinite(qdlin[..., -1])]
    if ends.size and np.median(ends) > MAH_FACTOR * MIT_NOMINAL_CAPACITY:
        raise InputError(path, f"capacities look like mAh (median discharge capacity {np.median(ends):.0f}; the MIT "
                         f"cells hold about {MIT_NOMINAL_CAPACITY} Ah): store qdlin in Ah")


def _life_or_none(value) -> int | None:
    """A cell still cycling may have no life yet (NaN, negative or 0)."""
    try:
        life = float(value)
    except (TypeError, ValueError):
        return None
    return int(round(life)) if np.isfinite(life) and life > 0 else None


def _npz_cell_names(data, keys: set[str], count: int) -> list[str]:
    if "split" in keys and "cell_index" in keys:
        return [f"{data['split'][i]}_cell{int(data['cell_index'][i])}" for i in range(count)]
    if "barcode" in keys:
        return [str(b) for b in data["barcode"]]
    return [f"cell{i + 1}" for i in range(count)]


def _read_mit_csv(path: Path) -> Cell:
    delimiter = _delimiter(_head_lines(path, 1)[0])
    # ';' means comma decimals (a European spreadsheet); utf-8-sig: spreadsheets often save a byte-order mark
    decimal = {"converters": lambda text: float(text.replace(",", "."))} if delimiter == ";" else {}
    try:
        with warnings.catch_warnings():  # an empty file is reported below, not as a numpy warning
            warnings.simplefilter("ignore")
            matrix = np.loadtxt(path, delimiter=delimiter, dtype=np.float64, ndmin=2, encoding="utf-8-sig", **decimal)
    except ValueError as exc:
        raise InputError(path, f"not a numeric Q(V) matrix and no Arbin header ({str(exc).splitlines()[0]})") from None
    if matrix.size == 0:
        raise InputError(path, "file has no data rows")
    if matrix.shape[0] != len(MIT_VOLTAGE_GRID):
        raise InputError(path, f"Q(V) matrix has {matrix.shape[0]} rows; the MIT layout has "
                         f"{len(MIT_VOLTAGE_GRID)} (voltage points 3.5 -> 2.0 V), one column per cycle")
    qd = matrix.T
    cycles = np.arange(MIT_FIRST_CYCLE, MIT_FIRST_CYCLE + qd.shape[0])
    split, index = _mit_split_and_index(path)
    return Cell(name=path.stem, source=str(path), voltage=MIT_VOLTAGE_GRID.copy(), cycles=cycles, qd=qd,
                capacity={int(c): float(q[-1]) for c, q in zip(cycles, qd)},
                cycle_life=_sibling_cycle_life(path, split, index), split=split,
                nominal_capacity=MIT_NOMINAL_CAPACITY)


def _mit_split_and_index(path: Path) -> tuple[str | None, int | None]:
    """`train_cell12.csv` (the revisit-severson names, flattened) or `train/cell12.csv` -> ("train", 12).

    In the upstream layout (`data/train/cell12.csv`, `data/cycle_lives/train_cycle_lives.csv`) the folder is
    the split; it is taken as one only when its cycle-lives file exists, not for any folder a cell sits in.
    """
    match = re.fullmatch(r"(?:(\w+?)_)?cell(\d+)", path.stem)
    if not match:
        return None, None
    split, index = match.group(1), int(match.group(2))
    if split is None and any(f.is_file() for f in _cycle_lives_files(path, path.parent.name)):
        split = path.parent.name
    return split, index


def _cycle_lives_files(path: Path, split: str) -> tuple[Path, Path]:
    """Where `<split>_cycle_lives.csv` may sit: beside the cell, or in ../cycle_lives/ (the upstream layout)."""
    return (path.parent / f"{split}_cycle_lives.csv", path.parent.parent / "cycle_lives" / f"{split}_cycle_lives.csv")


def _sibling_cycle_life(path: Path, split: str | None, index: int | None) -> int | None:
    """The life of cell i is line i of `<split>_cycle_lives.csv`."""
    if split is None or index is None:
        return None
    for candidate in _cycle_lives_files(path, split):
        if candidate.is_file():
            lines = [line.strip() for line in candidate.read_text(encoding="utf-8-sig").splitlines() if line.strip()]
            if 1 <= index <= len(lines):
                try:
                    return int(round(float(lines[index - 1])))
                except ValueError:
                    raise InputError(candidate, f"line {index} is not a cycle life: {lines[index - 1]!r}") from None
    return None


# ---------------------------------------------------------------------------------------------- BEEP JSON

def _read_beep_json(path: Path) -> Cell:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(path, f"not valid JSON ({exc})") from None
    if not isinstance(document, dict) or "summary" not in document:
        raise InputError(path, "not a BEEP structured file (no 'summary')")
    summary = _beep_object(path, document, "summary")
    for column in ("cycle_index", "discharge_capacity"):
        if column not in summary:
            raise InputError(path, f"BEEP summary has no '{column}' column")
    cycle_index = _numbers(path, summary["cycle_index"], "cycle_index")
    discharge = _numbers(path, summary["discharge_capacity"], "discharge_capacity")
    if len(cycle_index) != len(discharge):
        raise InputError(path, "BEEP summary columns have different lengths")
    capacity = {int(c): float(q) for c, q in zip(cycle_index, discharge) if np.isfinite(c) and np.isfinite(q)}
    charge_time = {}
    if "charge_duration" in summary:
        durations = _numbers(path, summary["charge_duration"], "charge_duration")
        charge_time = {int(c): float(t) for c, t in zip(cycle_index, durations) if np.isfinite(c) and np.isfinite(t)}
    parameters = _beep_object(path, document, "structuring_parameters")
    nominal = _beep_number(path, parameters, "nominal_capacity", float)
    voltage, cycles, qd, temperature = _beep_discharge_curves(
        path, _beep_object(path, document, "cycles_interpolated"), _beep_grid(path, parameters))
    return Cell(name=path.stem, source=str(path), voltage=voltage, cycles=cycles, qd=qd, temperature=temperature,
                capacity=capacity, charge_time=charge_time, nominal_capacity=nominal or None,
                meta={"barcode": str(document.get("barcode", "")), "protocol": str(document.get("protocol", ""))})


def _beep_object(path: Path, document: dict, key: str) -> dict:
    """A section of the file that must be a JSON object of columns or settings (absent or null: empty)."""
    value = document.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InputError(path, f"BEEP '{key}' is not a JSON object (found {_JSON_KINDS.get(type(value), 'a value')})")
    return value


_JSON_KINDS = {list: "an array", str: "a string", int: "a number", float: "a number", bool: "true/false"}


def _beep_number(path: Path, parameters: dict, key: str, kind: type):
    """One structuring parameter as `kind` (None when absent or null)."""
    value = parameters.get(key)
    if value is None:
        return None
    try:
        if isinstance(value, bool):
            raise TypeError
        return kind(value)
    except (TypeError, ValueError):
        raise InputError(path, f"BEEP structuring_parameters '{key}' is not a number ({value!r})") from None


def _beep_grid(path: Path, parameters: dict) -> np.ndarray:
    """The voltage grid BEEP interpolated on: `v_range` [low, high] with `resolution` points (MIT's by default)."""
    v_range = parameters.get("v_range") or [float(MIT_VOLTAGE_GRID[-1]), float(MIT_VOLTAGE_GRID[0])]
    resolution = _beep_number(path, parameters, "resolution", int) or len(MIT_VOLTAGE_GRID)
    try:
        low, high = sorted(float(v) for v in v_range)
    except (TypeError, ValueError):
        raise InputError(path, f"BEEP structuring_parameters 'v_range' is not [low, high] volts "
                         f"({v_range!r})") from None
    if resolution < 2 or not low < high:
        raise InputError(path, f"BEEP structuring_parameters give an empty voltage grid (v_range {v_range!r}, "
                         f"resolution {resolution})")
    return np.linspace(high, low, resolution)


def _numbers(path: Path, values, name: str) -> np.ndarray:
    """A JSON column as float64 (null -> NaN); anything else non-numeric is the file's problem."""
    if not isinstance(values, list):
        raise InputError(path, f"BEEP column '{name}' is not an array")
    try:
        return np.array([np.nan if v is None else float(v) for v in values], dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(path, f"BEEP column '{name}' holds non-numeric values") from None


BEEP_CURVE_COLUMNS = ("voltage", "discharge_capacity", "cycle_index")


def _beep_table(path: Path, table: dict) -> dict[str, np.ndarray]:
    """`cycles_interpolated` as numeric columns of one length (and `step_type`); {} when it has no Q(V) data."""
    if not all(key in table for key in BEEP_CURVE_COLUMNS):
        return {}
    columns = {key: _numbers(path, table[key], f"cycles_interpolated/{key}")
               for key in BEEP_CURVE_COLUMNS + ("temperature",) if key in table}
    if "step_type" in table:
        if not isinstance(table["step_type"], list):
            raise InputError(path, "BEEP column 'cycles_interpolated/step_type' is not an array")
        columns["step_type"] = np.asarray([str(step) for step in table["step_type"]])
    lengths = {key: len(values) for key, values in columns.items()}
    if len(set(lengths.values())) > 1:
        raise InputError(path, "BEEP cycles_interpolated columns have different lengths ("
                         + ", ".join(f"{key} {length}" for key, length in lengths.items()) + ")")
    return columns


def _beep_discharge_curves(path: Path, table: dict, grid: np.ndarray):
    """`cycles_interpolated` rows (one per voltage point and cycle) -> Q_d(V) per cycle."""
    empty = (grid, np.zeros(0, dtype=np.int64), np.zeros((0, len(grid))), None)
    columns = _beep_table(path, table)
    if not columns:
        return empty
    temps = columns.get("temperature")
    keep = columns["step_type"] == "discharge" if "step_type" in columns else np.ones(len(columns["voltage"]), bool)
    cycles, curves, temp_curves = [], [], []
    for cycle in np.unique(columns["cycle_index"][keep]):
        rows = keep & (columns["cycle_index"] == cycle)
        volts, charge = columns["voltage"][rows], columns["discharge_capacity"][rows]
        if rows.sum() < 10 or not np.isfinite(charge).any():
            continue  # BEEP leaves NaN rows for incomplete cycles (e.g. the last one)
        # BEEP orders these rows by voltage (rising), not by time: put them in discharge order first
        order_falling = np.argsort(-volts, kind="stable")
        cycles.append(int(cycle))
        curves.append(_on_grid(volts[order_falling], charge[order_falling], grid))
        if temps is not None:
            temp_curves.append(_on_grid(volts[order_falling], temps[rows][order_falling], grid))
    if not cycles:
        return empty
    order = np.argsort(cycles)
    temperature = np.asarray(temp_curves)[order] if temps is not None else None
    return grid, np.asarray(cycles, dtype=np.int64)[order], np.asarray(curves)[order], temperature


# ---------------------------------------------------------------------------------------------- raw cyclers

@dataclass
class _TimeSeries:
    cycle: np.ndarray
    current: np.ndarray      # A, discharge negative
    voltage: np.ndarray
    discharge_q: np.ndarray  # Ah, cumulative within the discharge step
    time: np.ndarray | None
    temperature: np.ndarray | None


def _read_arbin_csv(path: Path) -> Cell:
    with open(path, newline="", encoding="utf-8-sig", errors="replace") as handle:
        delimiter = _delimiter(handle.readline())
        handle.seek(0)
        reader = csv.DictReader(handle, delimiter=delimiter)
        columns = _arbin_columns(reader.fieldnames or [])
        missing = [c for c in ARBIN_COLUMNS if c not in columns]
        if missing:
            raise InputError(path, f"Arbin CSV is missing column(s) {', '.join(missing)}")
        rows = list(reader)
    if not rows:
        raise InputError(path, "Arbin CSV has a header but no data rows")
    # European exports separate fields with ';' because ',' is their decimal mark
    comma_decimals = delimiter == ";"

    def numbers(name: str) -> np.ndarray | None:
        if name not in columns:
            return None
        field_name, factor = columns[name]
        return factor * _column(path, rows, field_name, comma_decimals)

    series = _TimeSeries(cycle=numbers("Cycle_Index"), current=numbers("Current"), voltage=numbers("Voltage"),
                         discharge_q=numbers("Discharge_Capacity"), time=numbers("Test_Time"),
                         temperature=numbers("Temperature"))
    meta = _arbin_metadata(path)
    if np.isnan(series.cycle).all():  # e.g. contact tests logged without a cycle counter
        series.cycle = np.ones_like(series.cycle)
        meta["cycle_index"] = "column empty: all rows taken as cycle 1"
    return _cell_from_series(path, series, meta)


def _delimiter(header_line: str) -> str:
    """The field separator of a CSV, from its first line: ';' or TAB when it has one, else ','.

    Not the most frequent character: a European line of numbers (`-0,5;-0,3`) has more commas than
    semicolons, and neither ';' nor TAB is ever a decimal mark.
    """
    return next((mark for mark in (";", "\t") if mark in header_line), ",")


def _split_header(header_line: str) -> list[str]:
    return next(csv.reader([header_line], delimiter=_delimiter(header_line)), [])


def _arbin_columns(header: list[str]) -> dict[str, tuple[str, float]]:
    """Arbin column name -> (the file's spelling, factor to A/Ah/V), matched after normalising.

    Arbin's exports spell the same column `Cycle_Index` (MITS 7, BEEP) or `Cycle Index`, `Current(A)`,
    `Discharge Capacity(mAh)` (MITS Pro): case, spaces/underscores and a trailing unit are ignored, and
    the unit, when it says milli, scales the values. The first matching column wins.
    """
    wanted = {_normalised(name)[0]: name for name in ARBIN_COLUMNS + ARBIN_OPTIONAL} | ARBIN_ALIASES
    columns: dict[str, tuple[str, float]] = {}
    for field_name in header:
        key, unit = _normalised(field_name)
        name = wanted.get(key)
        if name and name not in columns:
            columns[name] = (field_name, 1e-3 if unit in MILLI_UNITS else 1.0)
    return columns


def _normalised(field_name: str) -> tuple[str, str]:
    """`Discharge Capacity (mAh)` or `Discharge_Capacity [mAh]` -> ("dischargecapacity", "mah")."""
    match = re.fullmatch(r"(.*?)\s*(?:[(\[]([^()\[\]]*)[)\]])?\s*", field_name or "")
    name, unit = match.groups()
    return re.sub(r"[\s_]+", "", name).lower(), (unit or "").strip().lower()


def _arbin_metadata(path: Path) -> dict[str, str]:
    sibling = path.with_name(path.stem + "_Metadata.csv")
    if not sibling.is_file():
        return {}
    with open(sibling, newline="", encoding="utf-8-sig", errors="replace") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        return {}
    return {"barcode": rows[0].get("item_id", ""), "protocol": rows[0].get("schedule_file_name", "")}


def _column(path: Path, rows: list[dict], name: str, comma_decimals: bool = False) -> np.ndarray:
    values = np.empty(len(rows))
    for i, row in enumerate(rows):
        text = (row.get(name) or "").strip()
        if comma_decimals:
            text = text.replace(",", ".")
        try:
            values[i] = float(text) if text else np.nan
        except ValueError:
            raise InputError(path, f"row {i + 2}: column {name} is not a number ({text!r})") from None
    return values


def _read_maccor(path: Path) -> Cell:
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    header_at = next((i for i, line in enumerate(lines[:MACCOR_HEADER_LINES]) if line.startswith("Rec#")), None)
    if header_at is None:
        raise InputError(path, f"Maccor export has no 'Rec#' header line in its first {MACCOR_HEADER_LINES} lines")
    header = [h.strip() for h in lines[header_at].split("\t")]
    missing = [c for c in MACCOR_COLUMNS if c not in header]
    if missing:
        raise InputError(path, f"Maccor export is missing column(s) {', '.join(missing)}")
    rows = [line.split("\t") for line in lines[header_at + 1:] if line.strip()]
    if not rows:
        raise InputError(path, "Maccor export has a header but no data rows")
    col = {name: header.index(name) for name in header}

    def numbers(name: str) -> np.ndarray:
        out = np.empty(len(rows))
        for i, row in enumerate(rows):
            try:
                out[i] = float(row[col[name]])
            except (ValueError, IndexError):
                raise InputError(path, f"data line {i + 1}: column {name} is not a number") from None
        return out

    state = np.asarray([row[col["State"]].strip() if len(row) > col["State"] else "" for row in rows])
    amps = numbers("Amps")
    current = np.where(state == "D", -np.abs(amps), amps)  # Maccor logs magnitudes; the state says the sign
    capacity_column = "Amp-hr" if "Amp-hr" in col else None
    discharge_q = numbers(capacity_column) if capacity_column else np.zeros(len(rows))
    discharge_q = np.where(state == "D", discharge_q, 0.0)
    series = _TimeSeries(cycle=numbers("Cyc#"), current=current, voltage=numbers("Volts"), discharge_q=discharge_q,
                         time=_maccor_seconds(path, rows, col.get("TestTime")),
                         temperature=numbers("Temp 1") if "Temp 1" in col else None)
    return _cell_from_series(path, series, {})


def _maccor_seconds(path: Path, rows: list[list[str]], index: int | None) -> np.ndarray | None:
    """`  0d 00:00:01.0000` -> seconds."""
    if index is None:
        return None
    out = np.empty(len(rows))
    for i, row in enumerate(rows):
        match = re.fullmatch(r"\s*(\d+)d\s+(\d+):(\d+):([\d.]+)\s*", row[index] if len(row) > index else "")
        if not match:
            return None
        days, hours, minutes, seconds = match.groups()
        out[i] = int(days) * 86400 + int(hours) * 3600 + int(minutes) * 60 + float(seconds)
    return out


# Part of the grid a discharge must cover to count as a full curve (a cycle cut short is skipped).
MIN_GRID_COVERAGE = 0.9


def _cell_from_series(path: Path, series: _TimeSeries, meta: dict[str, str],
                      grid: np.ndarray = MIT_VOLTAGE_GRID) -> Cell:
    """Cut a raw time series into cycles; interpolate each discharge segment on the voltage grid."""
    finite = np.isfinite(series.cycle) & np.isfinite(series.voltage) & np.isfinite(series.current)
    if not finite.any():
        raise InputError(path, "no rows with finite cycle index, current and voltage")
    cycles, curves, temps, capacity, charge_time, ranges = [], [], [], {}, {}, []
    span = grid.max() - grid.min()
    for cycle in np.unique(series.cycle[finite]):
        rows = finite & (series.cycle == cycle)
        discharging = rows & (series.current < 0)
        charging = rows & (series.current > 0)
        if series.time is not None and charging.sum() > 1:
            charge_time[int(cycle)] = float(series.time[charging].max() - series.time[charging].min())
        if discharging.sum() < 10:
            continue
        volts, charge = series.voltage[discharging], series.discharge_q[discharging]
        capacity[int(cycle)] = float(np.nanmax(charge))
        ranges.append((volts.min(), volts.max()))
        covered = (min(volts.max(), grid.max()) - max(volts.min(), grid.min())) / span
        if covered < MIN_GRID_COVERAGE:
            continue
        cycles.append(int(cycle))
        curves.append(_on_grid(volts, charge, grid))
        if series.temperature is not None:
            temps.append(_on_grid(volts, series.temperature[discharging], grid))
    cycles_array = np.asarray(cycles, dtype=np.int64)
    qd = np.asarray(curves).reshape(len(cycles), len(grid))
    temperature = np.asarray(temps).reshape(len(cycles), len(grid)) if series.temperature is not None else None
    discharge_range = tuple(float(v) for v in np.median(ranges, axis=0)) if ranges else None
    return Cell(name=path.stem, source=str(path), voltage=grid.copy(), cycles=cycles_array, qd=qd,
                temperature=temperature, capacity=capacity, charge_time=charge_time, meta=meta,
                discharge_range=discharge_range)


def _on_grid(volts: np.ndarray, values: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Interpolate values measured along a (noisy, falling) discharge voltage onto the grid.

    The voltage is made monotone (running minimum) so relaxation noise does not fold the curve;
    values outside the measured range are held at the nearest measured value.
    """
    keep = np.isfinite(volts) & np.isfinite(values)
    volts, values = volts[keep], values[keep]
    if len(volts) < 2:
        return np.full(len(grid), np.nan)
    monotone = np.minimum.accumulate(volts)
    order = np.argsort(monotone, kind="stable")
    x, y = monotone[order], values[order]
    x, first = np.unique(x, return_index=True)
    return np.interp(grid, x, y[first])
