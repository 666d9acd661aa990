"""The MIT/Severson Q(V) layouts: an NPZ of many cells and the one-cell Qdlin CSV."""
from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mis.errors import InputError
from mis.io.battery.cell import MAH_FACTOR, MIT_FIRST_CYCLE, MIT_NOMINAL_CAPACITY, MIT_VOLTAGE_GRID, Cell
from mis.io.battery.text import delimiter, head_lines

# The arrays every MIT NPZ has, and the optional ones that hold one value per cell.
NPZ_ARRAYS = ("qdlin", "voltage", "cycles")
NPZ_PER_CELL = ("cycle_life", "split", "cell_index", "barcode", "charging_policy", "batch_date")
# The per-cell values that are only carried along, in Cell.meta.
NPZ_META = ("barcode", "charging_policy", "batch_date")


@dataclass(frozen=True)
class _QdlinArrays:
    """An MIT NPZ read into memory: every cell's curves and the optional per-cell columns."""

    qdlin: np.ndarray                 # [cells, cycles, points] Ah
    voltage: np.ndarray               # [points]
    cycles: np.ndarray                # [cycles]
    per_cell: dict[str, np.ndarray]   # those of NPZ_PER_CELL the file has

    @property
    def count(self) -> int:
        return self.qdlin.shape[0]


@dataclass(frozen=True)
class _MitCellId:
    """What a Qdlin CSV's name and folder say about the cell: its split (train, test1, ...) and number."""

    split: str | None
    index: int | None


# ---------------------------------------------------------------------------------------------- NPZ

def read_mit_npz(path: Path) -> list[Cell]:
    arrays = _load_npz(path)
    _check_npz_shapes(path, arrays)
    names = _npz_cell_names(arrays.per_cell, arrays.count)
    return [_npz_cell(path, arrays, i, names[i]) for i in range(arrays.count)]


def _load_npz(path: Path) -> _QdlinArrays:
    try:
        data = np.load(path, allow_pickle=False)
        keys = set(data.files)
    except Exception as exc:  # zipfile/numpy raise several types for truncated or foreign files
        raise InputError(path, f"not a readable .npz ({type(exc).__name__}: {exc})") from None
    with data:   # closes the archive's file handle whatever happens below
        missing = [k for k in NPZ_ARRAYS if k not in keys]
        if missing:
            raise InputError(path, f"missing array(s) {', '.join(missing)} (expected the MIT Q(V) layout: qdlin "
                             "[cells, cycles, points], voltage [points], cycles [cycles])")
        try:
            return _QdlinArrays(qdlin=np.asarray(data["qdlin"], dtype=np.float64),
                                voltage=np.asarray(data["voltage"], dtype=np.float64),
                                cycles=np.asarray(data["cycles"], dtype=np.int64),
                                per_cell={key: np.asarray(data[key]) for key in NPZ_PER_CELL if key in keys})
        except Exception as exc:  # zlib/zipfile/numpy errors for damaged members
            raise InputError(path, f"array data is corrupt ({type(exc).__name__}: {exc})") from None


def _check_npz_shapes(path: Path, arrays: _QdlinArrays) -> None:
    qdlin, voltage, cycles = arrays.qdlin, arrays.voltage, arrays.cycles
    if voltage.ndim != 1 or cycles.ndim != 1:
        raise InputError(path, f"voltage and cycles must be 1-D, got shapes {voltage.shape} and {cycles.shape}")
    if qdlin.ndim != 3 or qdlin.shape[1:] != (len(cycles), len(voltage)):
        raise InputError(path, f"qdlin has shape {qdlin.shape}; expected [cells, {len(cycles)}, {len(voltage)}]")
    if arrays.count == 0:
        raise InputError(path, "no cells in the file")
    _check_ah(path, qdlin)
    for key, values in arrays.per_cell.items():
        if values.ndim != 1 or len(values) != arrays.count:
            raise InputError(path, f"'{key}' has shape {values.shape}; expected one value per cell ({arrays.count})")


def _check_ah(path: Path, qdlin: np.ndarray) -> None:
    """Refuse curves in mAh here: further on every curve would be taken for a glitch ("corrupted cycles")."""
    ends = qdlin[..., -1][np.isfinite(qdlin[..., -1])]
    if ends.size and np.median(ends) > MAH_FACTOR * MIT_NOMINAL_CAPACITY:
        raise InputError(path, f"capacities look like mAh (median discharge capacity {np.median(ends):.0f}; the MIT "
                         f"cells hold about {MIT_NOMINAL_CAPACITY} Ah): store qdlin in Ah")


def _npz_cell_names(per_cell: dict[str, np.ndarray], count: int) -> list[str]:
    if "split" in per_cell and "cell_index" in per_cell:
        return [f"{per_cell['split'][i]}_cell{int(per_cell['cell_index'][i])}" for i in range(count)]
    if "barcode" in per_cell:
        return [str(b) for b in per_cell["barcode"]]
    return [f"cell{i + 1}" for i in range(count)]


def _npz_cell(path: Path, arrays: _QdlinArrays, i: int, name: str) -> Cell:
    per_cell = arrays.per_cell
    meta = {key: str(per_cell[key][i]) for key in NPZ_META if key in per_cell}
    qd = arrays.qdlin[i]
    return Cell(name=name, source=str(path), voltage=arrays.voltage, cycles=arrays.cycles, qd=qd,
                capacity=_end_capacities(arrays.cycles, qd),
                cycle_life=_life_or_none(per_cell["cycle_life"][i]) if "cycle_life" in per_cell else None,
                split=str(per_cell["split"][i]) if "split" in per_cell else None,
                nominal_capacity=MIT_NOMINAL_CAPACITY, meta=meta)


def _life_or_none(value) -> int | None:
    """A cell still cycling may have no life yet (NaN, negative or 0)."""
    try:
        life = float(value)
    except (TypeError, ValueError):
        return None
    return int(round(life)) if np.isfinite(life) and life > 0 else None


def _end_capacities(cycles: np.ndarray, qd: np.ndarray) -> dict[int, float]:
    """Each cycle's discharge capacity: where its curve ends, at the bottom of the grid."""
    return {int(c): float(q[-1]) for c, q in zip(cycles, qd)}


# ---------------------------------------------------------------------------------------------- Qdlin CSV

def read_mit_csv(path: Path) -> Cell:
    qd = _load_qdlin_matrix(path).T
    cycles = np.arange(MIT_FIRST_CYCLE, MIT_FIRST_CYCLE + qd.shape[0])
    cell_id = _mit_cell_id(path)
    return Cell(name=path.stem, source=str(path), voltage=MIT_VOLTAGE_GRID.copy(), cycles=cycles, qd=qd,
                capacity=_end_capacities(cycles, qd), cycle_life=_sibling_cycle_life(path, cell_id),
                split=cell_id.split, nominal_capacity=MIT_NOMINAL_CAPACITY)


def _load_qdlin_matrix(path: Path) -> np.ndarray:
    """The CSV as [voltage points, cycles]."""
    separator = delimiter(head_lines(path, 1)[0])
    # ';' means comma decimals (a European spreadsheet); utf-8-sig: spreadsheets often save a byte-order mark
    decimal = {"converters": lambda text: float(text.replace(",", "."))} if separator == ";" else {}
    try:
        with warnings.catch_warnings():  # an empty file is reported below, not as a numpy warning
            warnings.simplefilter("ignore")
            matrix = np.loadtxt(path, delimiter=separator, dtype=np.float64, ndmin=2, encoding="utf-8-sig", **decimal)
    except ValueError as exc:
        raise InputError(path, f"not a numeric Q(V) matrix and no Arbin header ({str(exc).splitlines()[0]})") from None
    if matrix.size == 0:
        raise InputError(path, "file has no data rows")
    if matrix.shape[0] != len(MIT_VOLTAGE_GRID):
        raise InputError(path, f"Q(V) matrix has {matrix.shape[0]} rows; the MIT layout has "
                         f"{len(MIT_VOLTAGE_GRID)} (voltage points 3.5 -> 2.0 V), one column per cycle")
    return matrix


def _mit_cell_id(path: Path) -> _MitCellId:
    """`train_cell12.csv` (the revisit-severson names, flattened) or `train/cell12.csv` -> ("train", 12).

    In the upstream layout (`data/train/cell12.csv`, `data/cycle_lives/train_cycle_lives.csv`) the folder is
    the split; it is taken as one only when its cycle-lives file exists, not for any folder a cell sits in.
    """
    match = re.fullmatch(r"(?:(\w+?)_)?cell(\d+)", path.stem)
    if not match:
        return _MitCellId(split=None, index=None)
    split, index = match.group(1), int(match.group(2))
    if split is None and any(f.is_file() for f in _cycle_lives_files(path, path.parent.name)):
        split = path.parent.name
    return _MitCellId(split=split, index=index)


def _cycle_lives_files(path: Path, split: str) -> tuple[Path, Path]:
    """Where `<split>_cycle_lives.csv` may sit: beside the cell, or in ../cycle_lives/ (the upstream layout)."""
    return (path.parent / f"{split}_cycle_lives.csv", path.parent.parent / "cycle_lives" / f"{split}_cycle_lives.csv")


def _sibling_cycle_life(path: Path, cell_id: _MitCellId) -> int | None:
    """The life of cell i is line i of `<split>_cycle_lives.csv`."""
    split, index = cell_id.split, cell_id.index
    if split is None or index is None:
        return None
    for candidate in _cycle_lives_files(path, split):
        if candidate.is_file():
            try:
                text = candidate.read_text(encoding="utf-8-sig")
            except UnicodeDecodeError:
                raise InputError(path, f"its cycle lives file {candidate} is not UTF-8 text") from None
            lines = [line.strip() for line in text.splitlines() if line.strip()]
            if 1 <= index <= len(lines):
                try:
                    return int(round(float(lines[index - 1])))
                except ValueError:
                    raise InputError(path, f"line {index} of its cycle lives file {candidate} is not a cycle life: "
                                     f"{lines[index - 1]!r}") from None
    return None
