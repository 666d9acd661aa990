"""Raw Arbin CSV exports: MITS 7 and BEEP spell `Cycle_Index`, MITS Pro `Cycle Index`, `Current(A)`, ..."""
from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mis.errors import InputError
from mis.io.battery.cell import Cell
from mis.io.battery.curves import TimeSeries, cell_from_series
from mis.io.battery.text import delimiter

ARBIN_COLUMNS = ("Cycle_Index", "Current", "Voltage", "Discharge_Capacity")
ARBIN_OPTIONAL = ("Test_Time", "Temperature")
# Other spellings of a column that normalising does not catch (MITS Pro logs temperature on an auxiliary channel).
ARBIN_ALIASES = {"auxtemperature1": "Temperature"}
# Units (lower case) that the reader converts to A, Ah, V: a factor 1/1000.
MILLI_UNITS = ("ma", "mah", "mv")


@dataclass(frozen=True)
class _ArbinColumn:
    """Where a file keeps one Arbin quantity: its spelling of the column, and the factor to A, Ah or V."""

    field_name: str
    factor: float


@dataclass(frozen=True)
class _Heading:
    """A column heading without its spelling: the name squeezed to lower case, and its unit ('' when none)."""

    key: str
    unit: str


def has_arbin_columns(header_line: str) -> bool:
    """Whether a CSV's first line names any of the Arbin columns (in any of their spellings)."""
    return bool(set(_arbin_columns(_split_header(header_line))) & set(ARBIN_COLUMNS))


def read_arbin_csv(path: Path) -> Cell:
    with open(path, newline="", encoding="utf-8-sig", errors="replace") as handle:
        separator = delimiter(handle.readline())
        handle.seek(0)
        reader = csv.DictReader(handle, delimiter=separator)
        columns = _arbin_columns(reader.fieldnames or [])
        missing = [c for c in ARBIN_COLUMNS if c not in columns]
        if missing:
            raise InputError(path, f"Arbin CSV is missing column(s) {', '.join(missing)}")
        rows = list(reader)
    if not rows:
        raise InputError(path, "Arbin CSV has a header but no data rows")
    # European exports separate fields with ';' because ',' is their decimal mark
    series = _time_series(path, rows, columns, comma_decimals=separator == ";")
    meta = _arbin_metadata(path)
    if np.isnan(series.cycle).all():  # e.g. contact tests logged without a cycle counter
        series.cycle = np.ones_like(series.cycle)
        meta["cycle_index"] = "column empty: all rows taken as cycle 1"
    return cell_from_series(path, series, meta)


def _time_series(path: Path, rows: list[dict], columns: dict[str, _ArbinColumn], comma_decimals: bool) -> TimeSeries:
    def numbers(name: str) -> np.ndarray | None:
        if name not in columns:
            return None
        column = columns[name]
        return column.factor * _column(path, rows, column.field_name, comma_decimals)

    return TimeSeries(cycle=numbers("Cycle_Index"), current=numbers("Current"), voltage=numbers("Voltage"),
                      discharge_q=numbers("Discharge_Capacity"), time=numbers("Test_Time"),
                      temperature=numbers("Temperature"))


def _split_header(header_line: str) -> list[str]:
    return next(csv.reader([header_line], delimiter=delimiter(header_line)), [])


def _arbin_columns(header: list[str]) -> dict[str, _ArbinColumn]:
    """Arbin column name -> where the file keeps it, matched after normalising.

    Arbin's exports spell the same column `Cycle_Index` (MITS 7, BEEP) or `Cycle Index`, `Current(A)`,
    `Discharge Capacity(mAh)` (MITS Pro): case, spaces/underscores and a trailing unit are ignored, and
    the unit, when it says milli, scales the values. The first matching column wins.
    """
    wanted = {_normalised(name).key: name for name in ARBIN_COLUMNS + ARBIN_OPTIONAL} | ARBIN_ALIASES
    columns: dict[str, _ArbinColumn] = {}
    for field_name in header:
        heading = _normalised(field_name)
        name = wanted.get(heading.key)
        if name and name not in columns:
            columns[name] = _ArbinColumn(field_name, 1e-3 if heading.unit in MILLI_UNITS else 1.0)
    return columns


def _normalised(field_name: str) -> _Heading:
    """`Discharge Capacity (mAh)` or `Discharge_Capacity [mAh]` -> ("dischargecapacity", "mah")."""
    # DOTALL: a quoted heading may hold a line break
    match = re.fullmatch(r"(.*?)\s*(?:[(\[]([^()\[\]]*)[)\]])?\s*", field_name or "", flags=re.DOTALL)
    name, unit = match.groups() if match else (field_name or "", "")
    return _Heading(key=re.sub(r"[\s_]+", "", name).lower(), unit=(unit or "").strip().lower())


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
