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

Modules: `cell` (the record and the MIT constants), `curves` (cycle cutting, interpolation on the grid),
`text` (first lines and field separator of text exports), one per source format (`mit`, `beep`, `arbin`,
`maccor`); this one chooses the reader for a file.
"""
from __future__ import annotations

import re
from pathlib import Path

from mis.errors import InputError
from mis.io.battery.arbin import has_arbin_columns, read_arbin_csv
from mis.io.battery.beep import read_beep_json
from mis.io.battery.cell import MAH_FACTOR, MIT_FIRST_CYCLE, MIT_NOMINAL_CAPACITY, MIT_VOLTAGE_GRID, Cell
from mis.io.battery.maccor import MACCOR_HEADER_LINES, is_maccor_suffix, looks_like_maccor, read_maccor
from mis.io.battery.mit import read_mit_csv, read_mit_npz
from mis.io.battery.text import head_lines

__all__ = ["MAH_FACTOR", "MIT_FIRST_CYCLE", "MIT_NOMINAL_CAPACITY", "MIT_VOLTAGE_GRID", "Cell", "is_battery_name",
           "read_cells"]

# Companion files that sit beside cell files and are not cells themselves.
_COMPANION = re.compile(r".*(_metadata\.csv|_cycle_lives\.csv|si_table9\.csv|provenance\.md)$", re.IGNORECASE)


def is_battery_name(path: Path) -> bool:
    """Cell files a folder expands to: .npz, .csv, .json, Maccor's numbered exports (.000-.999) and Maccor exports
    saved as .txt (those only when a Maccor header is in their first lines: a folder's notes.txt is not a cell)."""
    name = Path(path).name
    if name.startswith(".") or _COMPANION.fullmatch(name):
        return False
    suffix = Path(name).suffix.lower()
    if suffix == ".txt":
        return _has_maccor_header(Path(path))
    return suffix in (".npz", ".csv", ".json") or is_maccor_suffix(suffix)


def _has_maccor_header(path: Path) -> bool:
    try:
        return looks_like_maccor(".txt", head_lines(path, MACCOR_HEADER_LINES))
    except InputError:   # unreadable: not listed (given by name, the reader says why)
        return False


def read_cells(path: str | Path) -> list[Cell]:
    """Read every cell in one file (format chosen by content, not only by suffix)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "file not found")
    if path.stat().st_size == 0:
        raise InputError(path, "file is empty")
    try:
        return _read_by_format(path)
    except OSError as exc:   # permission denied, a disappearing file, an I/O error: the file named, one line
        raise InputError(path, f"cannot be read ({(exc.strerror or type(exc).__name__).lower()})") from None
    except UnicodeDecodeError as exc:
        raise InputError(path, f"is not text in UTF-8 ({exc.reason} at byte {exc.start})") from None


def _read_by_format(path: Path) -> list[Cell]:
    suffix = path.suffix.lower()
    if suffix == ".npz":
        return read_mit_npz(path)
    if suffix == ".json":
        return [read_beep_json(path)]
    head = head_lines(path, MACCOR_HEADER_LINES)
    if looks_like_maccor(suffix, head):
        return [read_maccor(path)]
    if suffix == ".csv":
        if has_arbin_columns(head[0]):
            return [read_arbin_csv(path)]
        return [read_mit_csv(path)]
    raise InputError(path, f"unknown battery data format {suffix or '(no suffix)'}; expected an MIT Q(V) .npz/.csv, "
                     "a BEEP structured .json, an Arbin .csv or a Maccor text export")
