"""The lazy top-level API: every advertised name resolves, and `import mis` alone imports no torch."""
from __future__ import annotations

import subprocess
import sys

import mis


def test_every_public_name_resolves():
    for name in mis.__all__:
        assert getattr(mis, name) is not None, name


def test_import_mis_imports_no_torch():
    code = "import sys, mis; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"
