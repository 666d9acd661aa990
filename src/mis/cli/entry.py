"""The `mis` console script: a repeated `--help` is answered from a cache before Typer is imported.

Rendering help costs Typer, Click and Rich imports plus Rich's layout (about 0.2-0.3 s on a 2-core
CPU, most of `mis --help`). The text is a pure function of the CLI source, the installed libraries,
the terminal and a few environment variables, so the first request renders it through the real app
and stores exactly what was printed, keyed by all of those; later requests print the stored text.
Every other command line goes straight to the Typer app.
"""
from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

HELP_FLAGS = ("--help", "-h")
# Environment variables whose names contain one of these can change how Rich/Click lay out or colour help.
LAYOUT_ENV_WORDS = ("COLOR", "TERM", "COLUMNS", "LINES", "TTY", "TYPER", "RICH", "CLICK", "JUPYTER", "LANG", "LC_")
LIBRARIES = ("typer", "click", "rich")


def run_app() -> None:
    from mis.cli.main import app

    app(prog_name="mis")


def is_help_request(args: list[str]) -> bool:
    """`mis --help`, `mis train vocoder -h`, ...: command words then one help flag, no options."""
    return bool(args) and args[-1] in HELP_FLAGS and not any(a.startswith("-") for a in args[:-1])


def _source_stats(root: Path) -> list[str]:
    """Name, size and mtime of every file below `root` (stat only: no file is read)."""
    stats = []
    for folder, _, files in os.walk(root):
        for name in sorted(files):
            if name.endswith((".pyc", ".pyo")):
                continue
            info = os.stat(os.path.join(folder, name))
            stats.append(f"{os.path.relpath(os.path.join(folder, name), root)}:{info.st_size}:{info.st_mtime_ns}")
    return sorted(stats)


def _library_versions() -> list[str]:
    """The dist-info folder names (they carry the versions) of Typer, Click and Rich on sys.path."""
    found = []
    for entry in sys.path:
        if not entry or not os.path.isdir(entry):
            continue
        found += [name for name in os.listdir(entry) if name.endswith(".dist-info")
                  and name.split("-")[0].lower() in LIBRARIES]
    return sorted(found)


def _terminal() -> str:
    try:
        size = os.get_terminal_size(sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        size = None
    return f"tty={sys.stdout.isatty()} size={size} encoding={getattr(sys.stdout, 'encoding', None)}"


def cache_key(args: list[str]) -> str:
    digest = hashlib.sha256()
    environment = sorted(f"{k}={v}" for k, v in os.environ.items() if any(w in k for w in LAYOUT_ENV_WORDS))
    for part in (args, [sys.version, _terminal()], environment, _library_versions(),
                 _source_stats(Path(__file__).resolve().parents[1])):
        digest.update("\0".join(part).encode("utf-8", "surrogateescape") + b"\1")
    return digest.hexdigest()[:32]


def cache_dir() -> Path:
    if os.environ.get("MIS_CACHE_DIR"):
        return Path(os.environ["MIS_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mis"


class _Recorder:
    """Passes writes through to the real stdout and keeps a copy (everything else is delegated)."""

    def __init__(self, stream):
        self._stream = stream
        self.parts: list[str] = []

    def write(self, text: str | bytes) -> int:
        # Click sometimes writes (empty) bytes here; keep the copy as text either way.
        self.parts.append(text.decode("utf-8") if isinstance(text, bytes) else text)
        return self._stream.write(text)

    def __getattr__(self, name: str):
        return getattr(self._stream, name)


def _store(path: Path, text: str) -> None:
    # A plain temp-then-rename: mis.io.atomic would import numpy, which is what this module avoids.
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        temporary.write_text(text, encoding="utf-8")
        os.replace(temporary, path)
    except OSError:
        pass  # no writable cache: help is simply rendered every time


def main() -> None:
    # when this process started, for the one-time "slow first start" notice (cli/common.py: model_option)
    os.environ.setdefault("MIS_STARTED_AT", repr(__import__("time").time()))
    args = sys.argv[1:]
    if not is_help_request(args):
        return run_app()
    path = cache_dir() / f"help-{cache_key(args)}.txt"
    if path.is_file():
        sys.stdout.write(path.read_text(encoding="utf-8"))
        sys.stdout.flush()
        return None
    recorder = _Recorder(sys.stdout)
    sys.stdout = recorder
    try:
        run_app()
    except SystemExit as exc:
        sys.stdout = recorder._stream
        if exc.code in (0, None) and recorder.parts:
            _store(path, "".join(recorder.parts))
        raise
    finally:
        sys.stdout = recorder._stream
    return None
