"""Atomic writes: write to a temporary file in the target's folder, fsync, then rename.

An interrupted or failing write never leaves a half-written target behind, and an existing
target is only ever replaced by a complete file (``os.replace`` is atomic on POSIX and Windows
within one file system).
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

_COMPRESSION_SUFFIXES = {".gz", ".bz2", ".xz", ".zst", ".lz4"}


def split_suffix(name: str) -> tuple[str, str]:
    """Split ``name`` into (stem, suffix), keeping compound suffixes such as ``.nii.gz``.

    Only the last suffix is taken, plus the one before it when the last is a compression suffix
    (so ``case.001.nii.gz`` -> ``("case.001", ".nii.gz")``, ``a.json`` -> ``("a", ".json")``).
    """
    p = Path(name)
    suffix = p.suffix
    if not suffix or suffix == name:
        return name, ""
    stem = name[: -len(suffix)]
    if suffix.lower() in _COMPRESSION_SUFFIXES:
        inner = Path(stem).suffix
        if inner and inner != stem:
            suffix = inner + suffix
            stem = name[: -len(suffix)]
    return stem, suffix


def temp_path_for(target: Path) -> Path:
    """A fresh hidden temporary path next to ``target`` with the same (compound) suffix."""
    target = Path(target)
    stem, suffix = split_suffix(target.name)
    return target.with_name(f".{stem}.tmp-{secrets.token_hex(4)}{suffix}")


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    if os.name != "posix":
        return
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_output(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path to write to; on success rename it onto ``target``.

    The temporary file lives in the target's folder (created if missing) and is named
    ``.{stem}.tmp-{random}{suffix}`` so writers that look at the extension (``.nii.gz``)
    still work. On normal exit it is fsynced and ``os.replace``d onto ``target``; on any
    exception (KeyboardInterrupt included) it is deleted and the exception re-raised.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path_for(target)
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"atomic_output: nothing was written to {tmp} for {target}")
        _fsync_file(tmp)
        os.replace(tmp, target)
        _fsync_dir(target.parent)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def atomic_write_bytes(target: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``target`` atomically; returns the target path."""
    target = Path(target)
    with atomic_output(target) as tmp:
        with open(tmp, "xb") as fh:
            fh.write(data)
    return target


def atomic_write_text(target: str | Path, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``target`` atomically; returns the target path."""
    return atomic_write_bytes(target, text.encode(encoding))


def to_jsonable(obj: Any) -> Any:
    """Convert numpy scalars/arrays, paths, dataclasses, sets and tuples to JSON types.

    Non-finite floats (NaN, inf) become ``None`` so the output is strict JSON.
    """
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return to_jsonable(dataclasses.asdict(obj))
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        items = sorted(obj, key=str) if isinstance(obj, (set, frozenset)) else obj
        return [to_jsonable(v) for v in items]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return to_jsonable(obj.item())
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    return obj


def atomic_write_json(target: str | Path, obj: Any, indent: int | None = 2) -> Path:
    """Write ``obj`` as strict JSON (UTF-8, trailing newline) atomically; returns the target."""
    text = json.dumps(to_jsonable(obj), indent=indent, ensure_ascii=False, allow_nan=False)
    return atomic_write_text(target, text + "\n")
