"""Raw Maccor text exports: tab-separated `Rec#  Cyc#  Step  TestTime ... Amps  Volts  State` lines."""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mis.errors import InputError
from mis.io.battery.cell import Cell
from mis.io.battery.curves import TimeSeries, cell_from_series

MACCOR_COLUMNS = ("Cyc#", "Amps", "Volts", "State")
# The Maccor header ('Rec#...') may follow a few preamble lines; the sniffing and the reader share this window.
MACCOR_HEADER_LINES = 5


@dataclass(frozen=True)
class _MaccorTable:
    """The data lines of an export split into fields, and which field each header column is."""

    path: Path
    rows: list[list[str]]
    position: dict[str, int]

    def numbers(self, name: str) -> np.ndarray:
        out = np.empty(len(self.rows))
        for i, row in enumerate(self.rows):
            try:
                out[i] = float(row[self.position[name]])
            except (ValueError, IndexError):
                raise InputError(self.path, f"data line {i + 1}: column {name} is not a number") from None
        return out

    def states(self) -> np.ndarray:
        """The State column ('C', 'D', 'R', ...); '' where a line stops short of it."""
        at = self.position["State"]
        return np.asarray([row[at].strip() if len(row) > at else "" for row in self.rows])


def is_maccor_suffix(suffix: str) -> bool:
    """Maccor numbers its exports: .000-.999."""
    return bool(re.fullmatch(r"\.\d{3}", suffix))


def looks_like_maccor(suffix: str, head: list[str]) -> bool:
    """A numbered suffix, or a Maccor header among the first lines."""
    # the numbered suffix is Maccor's own: a file without a header gets the Maccor reader's message
    return is_maccor_suffix(suffix) or any(line.startswith("Rec#") or "\tCyc#\t" in line for line in head)


def read_maccor(path: Path) -> Cell:
    table = _read_table(path)
    discharging = table.states() == "D"
    amps = table.numbers("Amps")
    current = np.where(discharging, -np.abs(amps), amps)  # Maccor logs magnitudes; the state says the sign
    capacity = table.numbers("Amp-hr") if "Amp-hr" in table.position else np.zeros(len(table.rows))
    series = TimeSeries(cycle=table.numbers("Cyc#"), current=current, voltage=table.numbers("Volts"),
                        discharge_q=np.where(discharging, capacity, 0.0),
                        time=_maccor_seconds(table.rows, table.position.get("TestTime")),
                        temperature=table.numbers("Temp 1") if "Temp 1" in table.position else None)
    return cell_from_series(path, series, {})


def _read_table(path: Path) -> _MaccorTable:
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
    return _MaccorTable(path=path, rows=rows, position={name: header.index(name) for name in header})


def _maccor_seconds(rows: list[list[str]], index: int | None) -> np.ndarray | None:
    """`  0d 00:00:01.0000` -> seconds; None when the column is absent or any line is not in that form."""
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
