#!/usr/bin/env python
"""Rewrite tests/golden/<case>.json: a small slice of each contract case's output for its tiny seeded
checkpoint and seeded input (CPU, fp32). Run after a deliberate change of a pipeline's numbers:

    python tests/golden/regenerate.py
"""
from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from contract_cases import all_cases  # noqa: E402


def main() -> int:
    from mis.runtime.config import RuntimeConfig

    runtime = RuntimeConfig(device="cpu", precision="fp32", quiet=True)
    with tempfile.TemporaryDirectory() as folder:
        for case in all_cases():
            checkpoint = case.make_checkpoint(Path(folder))
            output = case.run(case.load(checkpoint, runtime), case.inputs(1)[0])
            path = HERE / f"{case.name}.json"
            path.write_text(json.dumps({"case": case.name, "slice": case.golden(output)}, indent=1) + "\n")
            print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
