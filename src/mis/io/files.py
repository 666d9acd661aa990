"""Input expansion (files, folders, globs) by input kind (`kinds.py`) and output naming for batch commands.
Imports no torch."""
from __future__ import annotations

import errno
import glob
import os
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

from mis.errors import InputError, UsageError
from mis.io.kinds import InputKind, input_kind, natural_key, visible_children

_GLOB_CHARS = set("*?[")


def _series_folders(root: Path, kind: InputKind) -> list[Path]:
    """Every folder at or below ``root`` (hidden ones skipped) that is itself one input of ``kind``."""
    found: list[Path] = []
    for dirpath, dirnames, _files in os.walk(root):
        dirnames[:] = sorted((d for d in dirnames if not d.startswith(".")), key=natural_key)
        d = Path(dirpath)
        if kind.is_folder(d):
            found.append(d)
    return sorted(found, key=natural_key)


def _expand_dir(folder: Path, kinds: Sequence[InputKind]) -> list[Path]:
    out: list[Path] = []
    children = visible_children(folder)
    for kind in kinds:
        if kind.file_test:
            out.extend(c for c in children if c.is_file() and kind.is_file(c))
        if kind.folder_test:
            if kind.is_folder(folder):
                out.append(folder)  # the folder itself is one input (a series)
            for sub in (c for c in children if c.is_dir()):
                out.extend(_series_folders(sub, kind))
    return out


def link_problem(path: str | Path) -> str | None:
    """Why a path that names something cannot be followed (a symbolic link loop, a broken link), or None."""
    try:
        os.stat(path)
    except FileNotFoundError:
        return "broken symbolic link (its target does not exist)" if os.path.islink(path) else None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "symbolic link loop"
        return (exc.strerror or type(exc).__name__).lower()
    return None


def real_path(path: str | Path) -> Path:
    """The canonical path, also for a link loop (Path.resolve raises RuntimeError on one in Python 3.11)."""
    return Path(os.path.realpath(path))


def _expand_one(arg: str | Path, kinds: Sequence[InputKind]) -> list[Path]:
    p = Path(arg)
    problem = link_problem(p)
    if problem:
        raise InputError(p, problem)
    if p.is_file():
        return [p]  # named explicitly: the reader says what is wrong with it, if anything
    if p.is_dir():
        found = _expand_dir(p, kinds)
        if not found:
            what = " or ".join(kind.label for kind in kinds)
            raise InputError(p, f"empty folder: no {what} files")
        return found
    if p.exists():
        raise InputError(p, "not a regular file or folder")
    s = str(arg)
    if _GLOB_CHARS & set(s):
        matches = sorted(glob.glob(os.path.expanduser(s), recursive=True), key=natural_key)
        if not matches:
            raise InputError(s, "no files match this pattern")
        out: list[Path] = []
        for m in matches:
            mp = Path(m)
            if link_problem(mp):
                continue  # a dangling link among many matches is not an input
            if mp.is_file():
                out.append(mp)
            elif mp.is_dir():
                out.extend(_expand_dir(mp, kinds))
        if not out:
            raise InputError(s, "the pattern matches no readable input files")
        return out
    raise InputError(p, "no such file or directory")


def resolve_inputs(args: Iterable[str | Path], kinds: Sequence[str | InputKind] = ("nifti", "dicom")) -> list[Path]:
    """Expand command-line inputs into a deterministic, de-duplicated list of volume paths.

    - a file -> itself (whatever it is; reading it reports a bad format);
    - a folder -> its NIfTI files (sorted, not recursive), the folder itself if it directly
      holds DICOM files (one series), and every subfolder at any depth that directly holds
      DICOM files (one series each);
    - a glob pattern (``*``, ``?``, ``[``; ``**`` recursive) -> each match, expanded as above.

    Order follows the arguments, sorted within each folder or pattern; repeated paths are
    kept once (first occurrence). A path that does not exist, a pattern with no match, or a
    folder with nothing to read raises InputError.
    """
    items = resolve_each(args, kinds)
    for item in items:
        if isinstance(item, InputError):
            raise item
    return items  # type: ignore[return-value]


def resolve_each(args: Iterable[str | Path], kinds: Sequence[str | InputKind]) -> list[Path | InputError]:
    """Like `resolve_inputs`, but an argument that does not resolve (missing path, empty folder, pattern
    without a match) stays in the list as its InputError, so a batch command reports it and goes on."""
    kinds = [input_kind(k) for k in kinds]
    seen: set[Path] = set()
    result: list[Path | InputError] = []
    for arg in args:
        try:
            found = _expand_one(arg, kinds)
        except InputError as exc:
            result.append(exc)
            continue
        for p in found:
            key = real_path(p)
            if key not in seen:
                seen.add(key)
                result.append(p)
    return result


def input_stem(path: str | Path) -> str:
    """The name an input is known by: file name without ``.nii.gz``/``.nii``/last suffix; a folder's name."""
    p = Path(path)
    name = p.name
    if not name:  # e.g. Path("/") or "."
        name = p.resolve().name or "volume"
    if p.is_dir():
        return name
    lower = name.lower()
    for suf in (".nii.gz", ".nii"):
        if lower.endswith(suf) and len(name) > len(suf):
            return name[: -len(suf)]
    stem = Path(name).stem
    return stem or name


def output_path_for(
    input: str | Path, out_dir: str | Path, suffix: str = ".nii.gz", stem_suffix: str = "_seg"
) -> Path:
    """``out_dir / (input_stem + stem_suffix + suffix)``; e.g. ``ct.nii.gz -> out/ct_seg.nii.gz``,
    DICOM folder ``.../CT_DICOM -> out/CT_DICOM_seg.nii.gz``."""
    return Path(out_dir) / f"{input_stem(input)}{stem_suffix}{suffix}"


def output_paths_for(
    inputs: Sequence[str | Path], out_dir: str | Path, suffix: str = ".nii.gz", stem_suffix: str = "_seg"
) -> list[Path]:
    """:func:`output_path_for` for many inputs, with name clashes resolved.

    Inputs that would share an output name (e.g. ``p1/CT`` and ``p2/CT`` DICOM folders) get
    their parent folder names prepended (``p1_CT_seg.nii.gz``) until the names are unique.
    """
    paths = [Path(p) for p in inputs]
    if suffix and len(paths) > 1 and Path(out_dir).name.lower().endswith(suffix.lower()):
        raise UsageError(f"-o {out_dir} names one {suffix} file but there are {len(paths)} inputs; give a folder")
    stems = [input_stem(p) for p in paths]
    depth = [0] * len(paths)
    for _ in range(64):
        counts = Counter(s.lower() for s in stems)
        clash = [i for i, s in enumerate(stems) if counts[s.lower()] > 1]
        if not clash:
            break
        progressed = False
        for i in clash:
            parents = [q.name for q in real_path(paths[i]).parents if q.name]
            if depth[i] < len(parents):
                depth[i] += 1
                stems[i] = "_".join([*reversed(parents[: depth[i]]), input_stem(paths[i])])
                progressed = True
        if not progressed:
            break
    return [Path(out_dir) / f"{s}{stem_suffix}{suffix}" for s in stems]  # the planner reports leftover clashes


def source_target_pairs(inputs: Sequence[str], output: str | Path, kinds: Sequence[str | InputKind] = ("nifti", "dicom"),
                        suffix: str = ".nii.gz", stem_suffix: str = "_seg",
                        file_suffixes: Sequence[str] | None = None) -> list[tuple[Path, Path, str | None]]:
    """(input, output file, problem or None) for every input of a batch command.

    `output` is a folder, or a file name (ending in one of `file_suffixes`, default `suffix`) when there is
    one input. An argument that does not resolve (missing, a pattern without a match) stays an item of its
    own whose problem says why, and the batch goes on; so does an item whose output would replace its input
    or would be written by another item too. Files in the inputs that are this
    command's own outputs for other inputs (a resumed run with -o pointing at the input folder) are left out.
    """
    resolved = resolve_each(inputs, kinds)
    sources = [Path(item.path) if isinstance(item, InputError) else item for item in resolved]
    output = Path(output)
    check_output_location(output)
    single_file = output.name.lower().endswith(tuple(s.lower() for s in (file_suffixes or (suffix,))))
    if output.is_file() and not single_file:
        raise UsageError(f"-o {output} is an existing file; give a folder or a file name ending in {suffix}")
    if len(sources) == 1 and single_file:
        targets = [output]
    else:
        targets = output_paths_for(sources, output, suffix=suffix, stem_suffix=stem_suffix)
    own_outputs = {path_key(t) for t in targets} if len(targets) > 1 else set()
    keep = [i for i, source in enumerate(sources) if path_key(source) not in own_outputs]
    counts = Counter(path_key(targets[i]) for i in keep)
    planned = []
    for i in keep:
        source, target, problem = sources[i], targets[i], None
        if isinstance(resolved[i], InputError):
            problem = str(resolved[i])   # e.g. "no files match this pattern", as resolving found it
        elif path_key(source) == path_key(target):
            problem = f"{source}: the output would replace the input; choose another -o"
        elif counts[path_key(target)] > 1:
            problem = f"{source}: another input would write the same output {target.name}; rename one of them"
        planned.append((source, target, problem))
    return planned


def check_output_location(output: Path) -> None:
    """-o must be reachable: no link loop, and no existing file where a folder on its path should be (that would
    only fail after all the computing, at the first write)."""
    for folder in reversed([output, *output.parents]):   # from the root down: name the first file in the way
        if folder != output and folder.is_file():
            raise UsageError(f"-o {output}: {folder} is a file, not a folder")
        problem = link_problem(folder)
        if problem:
            raise UsageError(f"-o {output}: {folder}: {problem}")


def path_key(path: Path) -> str:
    """Identity of a path for clash checks (case-folded: macOS and Windows file systems ignore case)."""
    return str(real_path(path)).lower()
