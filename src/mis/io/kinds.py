"""What a folder or a glob expands to, per input kind: a table instead of if-chains. Imports no torch.

An `InputKind` says which files of a folder are inputs of that kind (`file_test`) and, for kinds whose input
is a folder (a DICOM series), which folders are (`folder_test`). Tests are "module:function" strings loaded
on first use, so expanding `*.npy` never imports pydicom or soundfile. A task package that reads a new kind
defines its `InputKind` next to its reader (e.g. `io/image.py`) and passes the object itself to the
planners; the built-in kinds are also known by name.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from mis.errors import InputError


@dataclass(frozen=True)
class InputKind:
    name: str                      # "nifti"
    label: str                     # how messages name it: "NIfTI"
    file_test: str | None = None   # "module:function(path) -> bool": is this file an input of this kind?
    folder_test: str | None = None # "module:function(folder) -> bool": is this folder one input (a series)?
    reader: str = ""               # "module:function": its reader, for documentation and `mis models list`

    def is_file(self, path: Path) -> bool:
        return self.file_test is not None and bool(_load(self.file_test)(path))

    def is_folder(self, folder: Path) -> bool:
        return self.folder_test is not None and bool(_load(self.folder_test)(folder))


def _load(target: str):
    from mis.spec import resolve

    return resolve(target)


def has_suffix(*suffixes: str):
    """A file test on the name alone (no module to load)."""
    lowered = tuple(s.lower() for s in suffixes)
    return lambda path: Path(path).name.lower().endswith(lowered)


KINDS: dict[str, InputKind] = {kind.name: kind for kind in (
    InputKind("nifti", "NIfTI", "mis.io.geometry:is_nifti_name", reader="mis.io.nifti:read_nifti"),
    InputKind("dicom", "DICOM", folder_test="mis.io.volume:dir_has_dicom", reader="mis.io.dicom:read_dicom_series"),
    InputKind("battery", "battery data", "mis.io.battery:is_battery_name", reader="mis.io.battery:read_cells"),
    InputKind("audio", "audio", "mis.io.audio:is_audio_name", reader="mis.io.audio:read_audio"),
    InputKind("mel", ".npy mel", "mis.io.kinds:is_npy_name", reader="mis.io.audio:read_mel"),
)}


def is_npy_name(path: Path) -> bool:
    return Path(path).suffix.lower() == ".npy"


def input_kind(kind: str | InputKind) -> InputKind:
    if isinstance(kind, InputKind):
        return kind
    if kind not in KINDS:
        raise ValueError(f"unknown input kind {kind!r}; known: {', '.join(KINDS)}")
    return KINDS[kind]


def natural_key(path: str | Path) -> list:
    """c1, c2, c10 (not c1, c10, c2): digit runs compare as numbers."""
    return [(0, int(part)) if part.isdigit() else (1, part.lower()) for part in re.split(r"(\d+)", str(path))]


def visible_children(folder: Path) -> list[Path]:
    """A folder's entries without hidden ones, sorted; a folder that cannot be listed is one clear error."""
    try:
        return sorted((c for c in folder.iterdir() if not c.name.startswith(".")), key=natural_key)
    except PermissionError as exc:
        raise InputError(folder, "permission denied") from exc
