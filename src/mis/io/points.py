"""Head-point annotations for crowd counting: read, find next to an image, write. Imports no torch.

`read_points` returns ((N, 2) float64 array of head points as (x, y) pixels, meta dict). Pixel convention: the point
(x, y) lies in the pixel of column int(x), row int(y), as upstream's density code (SFANet, CSRNet) indexes it.

Formats (by suffix):

- `.mat` ShanghaiTech: `image_info[0, 0][0, 0]` holds `location` (N, 2) and `number` (the stored count).
- `.mat` UCF-QNRF / UCF_CC_50 / NWPU: `annPoints` (N, 2).
- `.mat` anything else holding exactly one numeric (N, 2) array.
- `.mat` MATLAB v7.3 (HDF5; read with h5py, imported only then): `annPoints`, or the `location` of an `image_info`
  struct, or the one (N, 2) array. MATLAB stores arrays column-major, so h5py sees an (N, 2) array as (2, N).
- `.json`: a list of [x, y], a list of {"x": .., "y": ..}, or an object with "points" (NWPU's layout: "points" and
  "human_num"); "count" / "human_num" / "number" are kept as the stored count.
- `.csv`: x, y columns, with or without a header; with a header the columns named x and y are taken (others are
  ignored), without one the first two columns.
- `.txt` (P2PNet, JHU-Crowd++): "x y" per line, separated by spaces, tabs or commas; only the first two columns are
  taken (JHU adds w h occlusion blur).

Empty scenes are legitimate (many crowd datasets have images with nobody in them): a valid structure with zero rows
(an empty txt or csv, `[]`, `{"points": []}`, an empty `location`) gives N = 0. A file with no points structure at
all (a .mat without any (N, 2) array, a JSON object without "points") is an InputError, as are truncated files,
non-numeric or NaN / infinite coordinates and arrays of the wrong shape: always one line naming the file.
"""
from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from mis.errors import InputError
from mis.io.atomic import atomic_write_json

POINT_SUFFIXES = (".mat", ".json", ".csv", ".txt")
_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_JSON_POINT_KEYS = ("points", "annPoints", "head_points", "location")
_JSON_COUNT_KEYS = ("count", "human_num", "number")
_MAT_EXPECTED = "expected ShanghaiTech image_info, UCF-QNRF annPoints or one (N, 2) x, y array"


def read_points(path: str | Path) -> tuple[np.ndarray, dict]:
    """Head points of one annotation file as ((N, 2) float64 (x, y) pixels, meta).

    meta: "path", "format" (shanghaitech_mat, annpoints_mat, mat_array, mat_v73, json, csv, txt), "stored_count"
    (the count the file states, or None) and, for a generic .mat, "array" (the variable name used).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in POINT_SUFFIXES:
        raise InputError(path, f"is not a head-point annotation file (expected {', '.join(POINT_SUFFIXES)})")
    data = _read_bytes(path)
    readers = {".mat": _read_mat, ".json": _read_json, ".csv": _read_csv, ".txt": _read_txt}
    points, meta = readers[suffix](path, data)
    points = _checked(path, points)
    return points, {"path": str(path), **meta}


def _read_bytes(path: Path) -> bytes:
    if not path.exists():
        raise InputError(path, "no such file or directory")
    if path.is_dir():
        raise InputError(path, "is a folder, not an annotation file")
    try:
        return path.read_bytes()
    except PermissionError:
        raise InputError(path, "permission denied") from None


def _checked(path: Path, points: Any) -> np.ndarray:
    """The points as a finite (N, 2) float64 array, or an InputError saying what is wrong."""
    try:
        array = np.asarray(points, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(path, "head points are not all numbers") from None
    if array.size == 0:
        return np.zeros((0, 2), dtype=np.float64)  # MATLAB writes empty arrays as (0, 0): still an empty scene
    if array.ndim != 2 or array.shape[1] != 2:
        raise InputError(path, f"head points have shape {array.shape}; expected (N, 2) x, y pixels")
    bad = int((~np.isfinite(array)).any(axis=1).sum())
    if bad:
        raise InputError(path, f"{bad} of {len(array)} head points have NaN or infinite coordinates")
    return np.ascontiguousarray(array)


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:160] if text else type(exc).__name__


# --------------------------------------------------------------------------- MATLAB


def _read_mat(path: Path, data: bytes) -> tuple[np.ndarray, dict]:
    if not data:
        raise InputError(path, "file is empty (0 bytes)")
    if data[:8] == _HDF5_SIGNATURE or data[512:520] == _HDF5_SIGNATURE:  # v7.3 keeps a 512-byte text header
        return _read_mat_v73(path, data)
    import scipy.io

    try:
        contents = scipy.io.loadmat(io.BytesIO(data))
    except Exception as exc:  # noqa: BLE001 - scipy raises OSError, ValueError, IndexError, TypeError ...
        raise InputError(path, f"is truncated or not a readable MATLAB file ({_short(exc)})") from None
    variables = {name: value for name, value in contents.items() if not name.startswith("__")}
    if "image_info" in variables:
        points, number = _shanghaitech(path, variables["image_info"])
        return points, {"format": "shanghaitech_mat", "stored_count": number}
    if "annPoints" in variables:
        return variables["annPoints"], {"format": "annpoints_mat", "stored_count": None}
    name = _single_point_array(path, {k: v for k, v in variables.items() if _is_numeric(v)})
    return variables[name], {"format": "mat_array", "stored_count": None, "array": name}


def _is_numeric(value: Any) -> bool:
    return isinstance(value, np.ndarray) and value.dtype.kind in "biuf"


def _shanghaitech(path: Path, info: Any) -> tuple[np.ndarray, int | None]:
    """image_info is a 1x1 cell holding a 1x1 struct with fields location (N, 2) and number."""
    try:
        record = info[0, 0][0, 0]
        names = record.dtype.names or ()
        location = record["location"] if "location" in names else record[0]
        number = record["number"] if "number" in names else (record[1] if len(names) > 1 else None)
    except (IndexError, KeyError, TypeError, ValueError):
        raise InputError(path, "has an image_info variable but not the ShanghaiTech layout "
                         "(image_info[0, 0][0, 0] with location and number)") from None
    return location, _stored_count(number)


def _stored_count(value: Any) -> int | None:
    try:
        number = float(np.asarray(value, dtype=np.float64).reshape(-1)[0])
    except (IndexError, TypeError, ValueError):
        return None
    return int(round(number)) if math.isfinite(number) else None


def _single_point_array(path: Path, arrays: dict[str, np.ndarray]) -> str:
    """The name of the one (N, 2) array, or an InputError saying what was found instead."""
    candidates = [name for name, value in arrays.items() if value.ndim == 2 and value.shape[1] == 2]
    if len(candidates) == 1:
        return candidates[0]
    if len(candidates) > 1:
        raise InputError(path, f"has several (N, 2) arrays ({', '.join(sorted(candidates))}): cannot tell which "
                         "holds the head points; keep one, or name it annPoints")
    found = ", ".join(f"{name} {tuple(value.shape)}" for name, value in sorted(arrays.items())) or "none"
    raise InputError(path, f"no head points found ({_MAT_EXPECTED}; numeric arrays found: {found})")


def _read_mat_v73(path: Path, data: bytes) -> tuple[np.ndarray, dict]:
    import h5py

    try:
        with h5py.File(io.BytesIO(data), "r") as handle:
            arrays = _hdf5_numeric_arrays(handle)
    except Exception as exc:  # noqa: BLE001 - h5py raises OSError, KeyError, ValueError on damaged files
        raise InputError(path, f"is truncated or not a readable MATLAB v7.3 (HDF5) file ({_short(exc)})") from None
    number = next((value for name, value in arrays.items() if name.rsplit("/", 1)[-1] == "number"), None)
    for wanted in ("annPoints", "location"):
        named = [name for name in arrays if name.rsplit("/", 1)[-1] == wanted]
        if len(named) == 1:
            return arrays[named[0]], {"format": "mat_v73", "stored_count": _stored_count(number), "array": named[0]}
    name = _single_point_array(path, arrays)
    return arrays[name], {"format": "mat_v73", "stored_count": None, "array": name}


def _hdf5_numeric_arrays(handle: Any) -> dict[str, np.ndarray]:
    """Every numeric dataset, transposed back to MATLAB's row/column order; MATLAB empties become (0, 2)."""
    import h5py

    arrays: dict[str, np.ndarray] = {}

    def visit(name: str, node: Any) -> None:
        if not isinstance(node, h5py.Dataset) or node.dtype.kind not in "biuf":
            return  # groups, and cell arrays / structs stored as object references
        if int(np.asarray(node.attrs.get("MATLAB_empty", 0)).reshape(-1)[0]):
            arrays[name] = np.zeros((0, 2))
            return
        value = node[()]
        arrays[name] = value.T if isinstance(value, np.ndarray) else np.asarray(value)

    handle.visititems(visit)
    return arrays


# --------------------------------------------------------------------------- JSON


def _read_json(path: Path, data: bytes) -> tuple[np.ndarray, dict]:
    try:
        document = json.loads(data.decode("utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(path, f"is truncated or not valid JSON ({_short(exc)})") from None
    stored = None
    if isinstance(document, dict):
        key = next((k for k in _JSON_POINT_KEYS if k in document), None)
        if key is None:
            raise InputError(path, 'no head points found (expected a list of [x, y], or an object with "points"; '
                             f"keys found: {', '.join(map(str, document)) or 'none'})")
        stored = next((_stored_count(document[k]) for k in _JSON_COUNT_KEYS if k in document), None)
        document = document[key]
    if not isinstance(document, list):
        raise InputError(path, f"head points must be a JSON list of [x, y] or {{\"x\", \"y\"}} items, "
                         f"got {type(document).__name__}")
    return np.array([_json_point(path, k, item) for k, item in enumerate(document)]).reshape(-1, 2), \
        {"format": "json", "stored_count": stored}


def _json_point(path: Path, index: int, item: Any) -> tuple[float, float]:
    if isinstance(item, dict) and "x" in item and "y" in item:
        pair = [item["x"], item["y"]]
    elif isinstance(item, list) and len(item) == 2:
        pair = item
    else:
        raise InputError(path, f"head point {index} is {json.dumps(item)[:60]}; expected [x, y] or "
                         '{"x": .., "y": ..}')
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in pair):
        raise InputError(path, f"head point {index} has a coordinate that is not a number: {json.dumps(pair)[:60]}")
    return float(pair[0]), float(pair[1])


# --------------------------------------------------------------------------- CSV and text


def _read_csv(path: Path, data: bytes) -> tuple[np.ndarray, dict]:
    lines = _text_lines(path, data)
    delimiter = next((d for d in (",", ";", "\t") if lines and d in lines[0][1]), ",")
    rows = [(number, [cell.strip() for cell in next(csv.reader([line], delimiter=delimiter))])
            for number, line in lines]
    return _table_points(path, rows), {"format": "csv", "stored_count": None}


def _read_txt(path: Path, data: bytes) -> tuple[np.ndarray, dict]:
    rows = [(number, line.replace(",", " ").split()) for number, line in _text_lines(path, data)]
    return _table_points(path, rows), {"format": "txt", "stored_count": None}


def _text_lines(path: Path, data: bytes) -> list[tuple[int, str]]:
    """(line number, text) of the lines that are neither blank nor # comments."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InputError(path, "is not a text file (not UTF-8)") from None
    lines = [(number, line.strip()) for number, line in enumerate(text.splitlines(), start=1)]
    return [(number, line) for number, line in lines if line and not line.startswith("#")]


def _table_points(path: Path, rows: list[tuple[int, list[str]]]) -> np.ndarray:
    """x, y from rows of cells: a header row picks the columns named x and y, otherwise columns 0 and 1."""
    columns = (0, 1)
    if rows and not _is_number(rows[0][1][0] if rows[0][1] else ""):
        names = [cell.lower() for cell in rows[0][1]]
        if "x" not in names or "y" not in names:
            raise InputError(path, f"header row has no x and y columns (found: {', '.join(rows[0][1])})")
        columns = (names.index("x"), names.index("y"))
        rows = rows[1:]
    points = np.zeros((len(rows), 2), dtype=np.float64)
    for k, (number, cells) in enumerate(rows):
        if len(cells) <= max(columns):
            raise InputError(path, f"line {number} has {len(cells)} value(s); expected x and y")
        for j, column in enumerate(columns):
            if not _is_number(cells[column]):
                raise InputError(path, f"line {number}: {cells[column][:40]!r} is not a number")
            points[k, j] = float(cells[column])
    return points


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


# --------------------------------------------------------------------------- finding, checking, writing


def points_file_for(image_path: str | Path) -> Path | None:
    """The annotation file of an image by the common dataset layouts, or None when there is none.

    Tried in order: ShanghaiTech (images/IMG_4.jpg -> ground_truth/GT_IMG_4.mat, also GT_IMG_4.mat next to the
    image and ..._IMG_4 -> ..._GT_IMG_4), UCF-QNRF (img_0001.jpg -> img_0001_ann.mat), the same stem with .mat,
    .json, .csv or .txt next to the image, then in a sibling annotation folder (ground_truth, gt, jsons, mats,
    annotations, labels: JHU-Crowd++ and NWPU layouts).
    """
    image_path = Path(image_path)
    stem, folder = image_path.stem, image_path.parent
    stems = [f"GT_{stem}", f"{stem}_ann"]
    if "IMG_" in stem:
        head, _, tail = stem.rpartition("IMG_")
        stems.append(f"{head}GT_IMG_{tail}")
    folders = [folder] + [folder.parent / name for name in
                          ("ground_truth", "ground-truth", "gt", "jsons", "mats", "annotations", "labels")]
    candidates = [where / f"{name}.mat" for where in folders for name in stems]
    candidates += [where / f"{stem}{suffix}" for where in folders for suffix in POINT_SUFFIXES]
    return next((path for path in candidates if path != image_path and path.is_file()), None)


def check_points_in_image(points: np.ndarray, shape: tuple[int, ...]) -> tuple[np.ndarray, int]:
    """(the points that fall inside an image of shape (H, W, ...), how many were dropped).

    Inside means 0 <= x < W and 0 <= y < H, so that int(x), int(y) index a pixel. Upstream drops the others
    silently; the count is returned so a caller can say so (annotation tools put a few points on the border).
    """
    points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    height, width = int(shape[0]), int(shape[1])
    inside = (points[:, 0] >= 0) & (points[:, 0] < width) & (points[:, 1] >= 0) & (points[:, 1] < height)
    return points[inside], int(len(points) - inside.sum())


def write_points_json(path: str | Path, points: np.ndarray, meta: dict | None = None) -> Path:
    """Write {"count", "points": [[x, y], ...], "meta"} atomically; `read_points` reads it back. Returns the path."""
    array = np.asarray(points, dtype=np.float64)
    if array.size == 0:
        array = array.reshape(0, 2)
    if array.ndim != 2 or array.shape[1] != 2:
        raise ValueError(f"points must be (N, 2) x, y pixels, got shape {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError("points must be finite (no NaN or infinite coordinates)")
    return atomic_write_json(path, {"count": len(array), "points": array.tolist(), "meta": meta or {}})
