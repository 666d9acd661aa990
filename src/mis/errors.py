"""Errors that carry a user-facing message; importing this module imports no torch."""
from __future__ import annotations

from pathlib import Path


class MisError(Exception):
    """Base class for errors that are reported as one clear line (no traceback)."""


class InputError(MisError):
    """A bad input file: names the file and what is wrong with it."""

    def __init__(self, path: str | Path, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class UsageError(MisError):
    """Bad command-line usage (exit code 2)."""


class CheckpointError(MisError):
    """A checkpoint that cannot be loaded (bad card, missing keys, refused pickle)."""
