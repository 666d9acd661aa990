"""Things a run should tell its user once: a demo model is in use, an option that cannot apply here.

Library code calls `notice(text)`; each distinct text is kept once per process, printed on stderr as
`note: ...` when somebody reads the terminal (not under --quiet/--json, only on rank 0), and listed
in the run's JSON report (`notices`), so scripts see the same facts as people.
"""
from __future__ import annotations

import os
import sys

_NOTICES: list[str] = []


def _printing() -> bool:
    return os.environ.get("MIS_QUIET", "") in ("", "0") and os.environ.get("RANK", "0") in ("", "0")


def notice(text: str) -> None:
    """Record `text` (once) and show it to a person at the terminal."""
    text = " ".join(str(text).split())
    if text in _NOTICES:
        return
    _NOTICES.append(text)
    if _printing():
        print(f"note: {text}", file=sys.stderr, flush=True)


def notices() -> list[str]:
    """Every notice of this process so far, in order."""
    return list(_NOTICES)


def clear() -> None:
    _NOTICES.clear()
