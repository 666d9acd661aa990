#!/usr/bin/env python
"""Write the small synthetic sample inputs shipped with the project: every task package's own writer
(its spec's `sample_data`), bit-for-bit reproducible.

    python sample_data/make_sample_data.py --out sample_data

CT phantoms (sample_data/ct), synthetic battery cells (sample_data/battery) and synthetic vowel speech with
its mel (sample_data/audio); each task's writer documents its files.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

try:
    import mis  # noqa: F401
except ImportError:  # running from a source checkout without an installed package
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from mis.registry import task_specs  # noqa: E402
from mis.spec import resolve  # noqa: E402


def write_samples(out: Path) -> list[Path]:
    written: list[Path] = []
    for spec in task_specs().values():
        if spec.sample_data:
            written += resolve(spec.sample_data)(Path(out))
    return written


def describe(path: Path) -> str:
    if not path.name.endswith(".nii.gz"):
        return f"{path}  {path.stat().st_size / 1024:.0f} KiB"
    import nibabel as nib

    img = nib.load(str(path))
    return (f"{path}  shape={img.shape}  zooms={tuple(round(float(z), 3) for z in img.header.get_zooms())}  "
            f"axcodes={''.join(nib.aff2axcodes(img.affine))}  dtype={img.get_data_dtype()}  "
            f"{path.stat().st_size / 1024:.0f} KiB")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="sample_data", help="output directory (default: %(default)s)")
    args = ap.parse_args(argv)
    for path in write_samples(Path(args.out)):
        print(describe(path))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
