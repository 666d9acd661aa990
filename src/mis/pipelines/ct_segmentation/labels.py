"""Label maps: translate another tool's label ids (e.g. TotalSegmentator's 117) into a model's classes.

A labels-map JSON is an object `{"liver": [5], "lung": [10, 11, 12, 13, 14], ...}`; its key order
gives the class ids 1..N, every id not listed becomes background.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from mis.errors import InputError


def read_labels_map(path: str | Path) -> dict[str, list[int]]:
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(path, f"cannot read labels map ({exc})") from None
    if not isinstance(data, dict) or not data:
        raise InputError(path, 'labels map must be a non-empty JSON object like {"liver": [5]}')
    mapping = {}
    for name, ids in data.items():
        ids = [ids] if isinstance(ids, int) else ids
        if not isinstance(ids, list) or not all(isinstance(i, int) and i > 0 for i in ids):
            raise InputError(path, f"labels map entry {name!r} must be a positive id or a list of them")
        mapping[str(name)] = ids
    return mapping


def apply_labels_map(labels: np.ndarray, mapping: dict[str, list[int]] | None) -> np.ndarray:
    """Source ids -> class ids 1..N in the map's order (identity when mapping is None)."""
    if mapping is None:
        return labels.astype(np.uint8, copy=False)
    lookup = np.zeros(max(int(labels.max()), max(i for ids in mapping.values() for i in ids)) + 1, np.uint8)
    for class_id, ids in enumerate(mapping.values(), start=1):
        lookup[ids] = class_id
    return lookup[labels.astype(np.int64)]


def class_names(mapping: dict[str, list[int]]) -> dict[int, str]:
    return {class_id: name for class_id, name in enumerate(mapping, start=1)}
