"""sample_data/ct: two synthetic CT phantoms (and one's reference labels), bit-for-bit reproducible.

* ``ct/phantom_abdomen.nii.gz``         seed 12345, RAS storage, not oblique, 3 mm, int16 HU
* ``ct/phantom_abdomen_labels.nii.gz``  its reference labels (uint8, ids of PHANTOM_LABELS)
* ``ct/phantom_oblique_lps.nii.gz``     seed 777, LPS storage, oblique grid, 3.5 x 3.5 x 4.5 mm, int16 HU
"""
from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np

from mis.pipelines.ct_segmentation.phantom import PHANTOM_LABELS, Phantom, make_phantom

#: fixed field of view of the RAS sample (array shape at 3 mm: 312 x 264 x 216 mm), small
#: enough for the gzipped int16 file to stay well under 1 MB
ABDOMEN_SHAPE = (104, 88, 72)
#: voxel size of the oblique sample (its field of view is the generator's default one)
OBLIQUE_SPACING = (3.5, 3.5, 4.5)


def _nifti(data: np.ndarray, affine: np.ndarray, description: str) -> nib.Nifti1Image:
    img = nib.Nifti1Image(data, affine)
    hdr = img.header
    hdr.set_data_dtype(data.dtype)
    hdr.set_xyzt_units("mm", "sec")
    img.set_qform(affine, code=1)  # scanner-based
    img.set_sform(affine, code=1)
    hdr["descrip"] = description.encode("ascii")[:79]
    return img


def _hu_int16(ph: Phantom) -> np.ndarray:
    return np.clip(np.rint(ph.image), -1024, 3071).astype(np.int16)


def _save(img: nib.Nifti1Image, path: Path) -> None:
    # gzip level 6 (nibabel's default is 1) and a fixed mtime: small, byte-reproducible files
    path.write_bytes(gzip.compress(img.to_bytes(), compresslevel=6, mtime=0))


def write_sample_data(out: Path) -> list[Path]:
    ct_dir = Path(out) / "ct"
    ct_dir.mkdir(parents=True, exist_ok=True)
    written = []

    ph = make_phantom(12345, shape=ABDOMEN_SHAPE, spacing=(3.0, 3.0, 3.0), oblique=False, orientation="RAS")
    p = ct_dir / "phantom_abdomen.nii.gz"
    _save(_nifti(_hu_int16(ph), ph.affine, "mis synthetic CT phantom seed 12345 (HU)"), p)
    written.append(p)
    p = ct_dir / "phantom_abdomen_labels.nii.gz"
    names = " ".join(f"{k}={v}" for k, v in PHANTOM_LABELS.items())
    _save(_nifti(ph.labels.astype(np.uint8), ph.affine, f"labels {names}"), p)
    written.append(p)

    ph = make_phantom(777, oblique=True, orientation="LPS", spacing=OBLIQUE_SPACING)
    p = ct_dir / "phantom_oblique_lps.nii.gz"
    _save(_nifti(_hu_int16(ph), ph.affine, "mis synthetic CT phantom seed 777, oblique LPS (HU)"), p)
    written.append(p)
    return written
