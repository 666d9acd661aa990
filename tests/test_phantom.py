"""Tests of the synthetic CT phantom generator (mis.pipelines.ct_segmentation.phantom).

World-space convention checked here: nibabel's world space is RAS+ (x grows towards the
subject's Right, y Anterior, z Superior; https://nipy.org/nibabel/coordinate_systems.html),
so the liver (patient's right) must have a LARGER world x than the spleen, and the lungs a
larger world z than the kidneys, whatever the storage orientation of the array.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import importlib.util
import math
import time
from functools import lru_cache
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from mis.pipelines.ct_segmentation import phantom as phantom_mod
from mis.pipelines.ct_segmentation.phantom import PHANTOM_LABELS, Phantom, make_phantom, phantom_batch

REPO = Path(__file__).resolve().parents[1]
NAME_TO_ID = {v: k for k, v in PHANTOM_LABELS.items()}

# plausible organ volumes (ml) of a default phantom
VOLUME_RANGES = {
    "liver": (1000.0, 2500.0),
    "spleen": (100.0, 400.0),
    "kidney_right": (100.0, 250.0),
    "kidney_left": (100.0, 250.0),
    "lung": (50.0, 6000.0),
    "spine": (100.0, 1500.0),
}
# median HU per organ over native / portal-venous / arterial phases (with partial volume)
HU_RANGES = {
    "liver": (25.0, 160.0),
    "spleen": (10.0, 170.0),
    "kidney_right": (0.0, 260.0),
    "kidney_left": (0.0, 260.0),
    "lung": (-950.0, -650.0),
    "spine": (120.0, 700.0),
}


@lru_cache(maxsize=None)
def _ph(seed: int, **kw) -> Phantom:
    return make_phantom(seed, **kw)


def ph(seed: int, **kw) -> Phantom:
    return _ph(seed, **kw)


def world_centroid(p: Phantom, label: int) -> np.ndarray:
    idx = np.argwhere(p.labels == label)
    assert idx.size, f"label {label} absent"
    return nib.affines.apply_affine(p.affine, idx).mean(axis=0)


def volume_ml(p: Phantom, label: int) -> float:
    return float((p.labels == label).sum() * abs(np.linalg.det(p.affine[:3, :3])) / 1000.0)


# --------------------------------------------------------------------------- API / types


def test_label_table():
    assert PHANTOM_LABELS == {1: "liver", 2: "spleen", 3: "kidney_right", 4: "kidney_left", 5: "lung", 6: "spine"}
    assert list(PHANTOM_LABELS) == [1, 2, 3, 4, 5, 6]


def test_types_and_geometry():
    p = ph(0)
    assert isinstance(p, Phantom)
    assert p.image.dtype == np.float32 and p.labels.dtype == np.uint8
    assert p.image.ndim == 3 and p.image.shape == p.labels.shape
    assert p.affine.shape == (4, 4) and p.affine.dtype == np.float64
    np.testing.assert_array_equal(p.affine[3], [0, 0, 0, 1])
    assert isinstance(p.spacing, tuple) and len(p.spacing) == 3
    np.testing.assert_allclose(np.linalg.norm(p.affine[:3, :3], axis=0), p.spacing, rtol=1e-9)
    assert set(np.unique(p.labels)) <= {0, *PHANTOM_LABELS}
    assert np.isfinite(p.image).all()
    assert -1024.0 <= p.image.min() and p.image.max() <= 3071.0
    # moderate default size
    assert 2e5 < p.image.size < 1.5e6


def test_deterministic_and_seed_dependent():
    shape = (64, 56, 48)  # random orientation / obliquity / FOV, fixed array shape
    a = make_phantom(3, shape=shape)
    b = make_phantom(3, shape=shape)
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_array_equal(a.affine, b.affine)
    assert a.spacing == b.spacing
    c = make_phantom(4, shape=shape)
    assert not np.array_equal(a.image, c.image)
    assert not np.array_equal(a.labels, c.labels)
    # fixed geometry: still different anatomy / noise
    d = make_phantom(3, shape=(64, 56, 48), oblique=False, orientation="RAS")
    e = make_phantom(4, shape=(64, 56, 48), oblique=False, orientation="RAS")
    assert not np.array_equal(d.image, e.image)
    assert not np.array_equal(d.labels, e.labels)


def test_phantom_batch():
    out = phantom_batch([5, 6], shape=(48, 40, 40))
    assert [p.seed for p in out] == [5, 6]
    np.testing.assert_array_equal(out[0].labels, ph(5, shape=(48, 40, 40)).labels)


# --------------------------------------------------------------------------- anatomy


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_all_labels_present_with_plausible_volumes(seed):
    p = ph(seed)
    for name, (lo, hi) in VOLUME_RANGES.items():
        v = volume_ml(p, NAME_TO_ID[name])
        assert lo <= v <= hi, f"seed {seed}: {name} volume {v:.0f} ml not in [{lo}, {hi}]"


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_hu_statistics(seed):
    p = ph(seed)
    for name, (lo, hi) in HU_RANGES.items():
        med = float(np.median(p.image[p.labels == NAME_TO_ID[name]]))
        assert lo <= med <= hi, f"seed {seed}: median HU of {name} = {med:.0f}"
    # air around the body (the volume corners), fat present in the body wall
    corners = [p.image[i, j, k] for i in (0, -1) for j in (0, -1) for k in (0, -1)]
    assert np.median(corners) < -900
    assert np.mean((p.image > -150) & (p.image < -60)) > 0.03  # fat
    assert (p.image[p.labels == NAME_TO_ID["spine"]] > 300).any()  # cortical bone
    # organs differ from each other but are not trivially separable by a threshold
    liver = p.image[p.labels == 1]
    spleen = p.image[p.labels == 2]
    assert np.percentile(liver, 95) > np.percentile(spleen, 5)


GEOM_SPACING = (4.5, 4.5, 4.5)


@pytest.mark.parametrize(
    "orientation, oblique",
    [("RAS", False), ("LPS", False), ("PIL", False), ("RAS", True), ("LAS", True), ("SLP", True)],
)
def test_world_space_anatomy_any_storage_orientation(orientation, oblique):
    p = ph(11, spacing=GEOM_SPACING, oblique=oblique, orientation=orientation)
    assert "".join(nib.aff2axcodes(p.affine)) == orientation
    c = {name: world_centroid(p, i) for i, name in PHANTOM_LABELS.items()}
    # RAS+: larger x = patient's right
    assert c["liver"][0] > c["spleen"][0] + 50.0
    assert c["kidney_right"][0] > c["kidney_left"][0] + 60.0
    assert c["liver"][0] > c["spine"][0] > c["spleen"][0]
    # larger z = superior: lungs above kidneys, liver above the right kidney
    assert c["lung"][2] > c["kidney_right"][2] + 50.0 and c["lung"][2] > c["kidney_left"][2] + 50.0
    assert c["liver"][2] > c["kidney_right"][2]
    # larger y = anterior: spine posterior to the liver
    assert c["spine"][1] < c["liver"][1]
    if oblique:
        rot = p.affine[:3, :3] / np.asarray(p.spacing)
        perm = np.zeros((3, 3))
        for a in range(3):
            w = int(np.argmax(np.abs(rot[:, a])))
            perm[w, a] = np.sign(rot[w, a])
        r = rot @ perm.T
        angle = math.degrees(math.acos(np.clip((np.trace(r) - 1.0) / 2.0, -1.0, 1.0)))
        assert 1.0 < angle <= 15.0 + 1e-6
    else:
        m = np.abs(p.affine[:3, :3])
        assert np.count_nonzero(m > 1e-9) == 3  # signed permutation x spacing


def test_same_anatomy_whatever_the_geometry():
    """The anatomy depends on the seed only: orientation / obliquity change the sampling."""
    ras = ph(11, spacing=GEOM_SPACING, oblique=False, orientation="RAS")
    for code in ("LPS", "PIL"):
        other = ph(11, spacing=GEOM_SPACING, oblique=False, orientation=code)
        canon = nib.as_closest_canonical(nib.Nifti1Image(other.labels, other.affine))
        np.testing.assert_allclose(canon.affine, ras.affine, atol=1e-6)
        np.testing.assert_array_equal(np.asarray(canon.dataobj), ras.labels)
    # an oblique grid (whose default field of view is a little larger) samples the same
    # world anatomy; compare the organs that lie entirely inside both fields of view
    # (lungs and spine are cut by the field of view)
    obl = ph(11, spacing=GEOM_SPACING, oblique=True, orientation="RAS")
    for name in ("liver", "spleen", "kidney_right", "kidney_left"):
        i = NAME_TO_ID[name]
        assert np.linalg.norm(world_centroid(obl, i) - world_centroid(ras, i)) < 4.5, name
        assert abs(volume_ml(obl, i) / volume_ml(ras, i) - 1.0) < 0.12, name


# --------------------------------------------------------------------------- arguments


def test_shape_and_spacing_arguments():
    p = ph(7, shape=(60, 50, 40), oblique=False, orientation="LPS")
    assert p.image.shape == (60, 50, 40)
    assert all(5.0 < s < 10.0 for s in p.spacing)  # field of view kept: ~330-380 mm / 60 etc.
    q = ph(7, spacing=(3.5, 3.5, 4.5), oblique=False, orientation="RAS")
    assert q.spacing == (3.5, 3.5, 4.5)
    assert 330 / 3.5 - 1 <= q.image.shape[0] <= 380 / 3.5 + 1
    assert 200 / 4.5 - 1 <= q.image.shape[2] <= 420 / 4.5 + 1
    r = ph(7, shape=(40, 30, 50), spacing=(5.0, 5.0, 4.0), orientation="PIL", oblique=False)
    assert r.image.shape == (40, 30, 50) and r.spacing == (5.0, 5.0, 4.0)
    assert "".join(nib.aff2axcodes(r.affine)) == "PIL"
    with pytest.raises(ValueError):
        make_phantom(1, orientation="RAR")
    with pytest.raises(ValueError):
        make_phantom(1, orientation="XYZ")
    with pytest.raises(ValueError):
        make_phantom(1, spacing=(0.0, 1.0, 1.0))


def test_defaults_vary_orientation_and_obliquity():
    codes, obliques, spacings = set(), [], []
    for s in range(8):
        p = make_phantom(s, shape=(24, 24, 20))  # tiny: only the geometry matters here
        codes.add(p.orientation)
        obliques.append(p.meta["oblique"])
    assert len(codes) >= 3
    assert any(obliques) and not all(obliques)
    for s in range(3):
        sp = ph(s).spacing
        spacings.append(sp)
        assert all(2.5 - 1e-9 <= v <= 5.5 for v in sp)


def test_speed_of_a_default_phantom():
    ph(1)  # warm-up (normally already cached by the volume tests)
    best = _cpu_time(lambda: make_phantom(1))
    if best >= 1.0:  # one retry, in case of a busy machine
        best = min(best, _cpu_time(lambda: make_phantom(1)))
    assert best < 1.0, f"default phantom took {best:.2f} s of CPU time"


def _cpu_time(fn) -> float:
    t = time.process_time()
    fn()
    return time.process_time() - t


def test_module_imports_only_numpy_and_scipy():
    # the phantom is a package: check every one of its modules (relative imports stay inside it)
    files = sorted(Path(phantom_mod.__file__).parent.glob("*.py"))
    assert len(files) > 1
    roots = set()
    for tree in (ast.parse(f.read_text()) for f in files):
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                roots.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                roots.add(node.module.split(".")[0])
    # "mis" only for the torch-free I/O metadata class (mis.io imports no torch)
    assert roots <= {"__future__", "numpy", "scipy", "itertools", "math", "dataclasses", "types", "typing", "mis"}, roots
    code = ("import sys; from mis.pipelines.ct_segmentation.phantom import make_phantom; "
            "make_phantom(0).volume_meta(); assert 'torch' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


# --------------------------------------------------------------------------- sample data


def _load_script():
    spec = importlib.util.spec_from_file_location("make_sample_data", REPO / "sample_data" / "make_sample_data.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_sample_data_script(tmp_path):
    mod = _load_script()
    assert mod.main(["--out", str(tmp_path)]) == 0
    ct = tmp_path / "ct"
    img = nib.load(str(ct / "phantom_abdomen.nii.gz"))
    lab = nib.load(str(ct / "phantom_abdomen_labels.nii.gz"))
    obl = nib.load(str(ct / "phantom_oblique_lps.nii.gz"))
    assert img.get_data_dtype() == np.int16 and obl.get_data_dtype() == np.int16
    assert lab.get_data_dtype() == np.uint8
    assert nib.aff2axcodes(img.affine) == ("R", "A", "S")
    assert nib.aff2axcodes(obl.affine) == ("L", "P", "S")
    np.testing.assert_allclose(img.header.get_zooms(), (3.0, 3.0, 3.0))
    off_diag = obl.affine[:3, :3] - np.diag(np.diag(obl.affine[:3, :3]))
    assert np.abs(off_diag).max() > 0.05  # oblique
    np.testing.assert_array_equal(np.unique(np.asarray(lab.dataobj)), [0, 1, 2, 3, 4, 5, 6])
    from mis.pipelines.ct_segmentation.sample_data import ABDOMEN_SHAPE

    assert img.shape == lab.shape == ABDOMEN_SHAPE
    hu = np.asarray(img.dataobj)
    liver = np.asarray(lab.dataobj) == 1
    assert HU_RANGES["liver"][0] <= np.median(hu[liver]) <= HU_RANGES["liver"][1]
    for f in ct.iterdir():
        assert f.stat().st_size < 1_000_000, f


def test_committed_sample_files():
    ct = REPO / "sample_data" / "ct"
    names = ["phantom_abdomen.nii.gz", "phantom_abdomen_labels.nii.gz", "phantom_oblique_lps.nii.gz"]
    if not all((ct / n).exists() for n in names):
        pytest.skip("sample data not generated")
    for n in names:
        assert (ct / n).stat().st_size < 1_000_000
    lab = nib.load(str(ct / "phantom_abdomen_labels.nii.gz"))
    assert set(np.unique(np.asarray(lab.dataobj))) == {0, *PHANTOM_LABELS}
