"""Head-point readers (mis.io.points): every format round trip, the real ShanghaiTech annotation in
../shared/data/crowd (skipped when absent), bad files as one-line InputErrors naming the file."""
from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.io

from conftest import shared_file
from mis.errors import InputError
from mis.io.points import check_points_in_image, points_file_for, read_points, write_points_json

POINTS = np.array([[10.5, 20.25], [0.0, 0.0], [319.9, 255.1], [100.0, 3.5]])


def _shanghaitech_mat(path, points):
    record = np.empty((1, 1), dtype=[("location", "O"), ("number", "O")])
    record[0, 0] = (points, np.array([[len(points)]], dtype=np.uint16))
    cell = np.empty((1, 1), dtype=object)
    cell[0, 0] = record
    scipy.io.savemat(path, {"image_info": cell})


def _v73_mat(path, arrays, userblock=True):
    import h5py

    with h5py.File(path, "w", userblock_size=512 if userblock else 0) as handle:
        for name, value in arrays.items():
            handle.create_dataset(name, data=np.asarray(value).T)  # MATLAB is column-major
    if userblock:
        with open(path, "r+b") as handle:
            handle.write(b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2024 HDF5 schema")


def test_real_shanghaitech_annotation():
    points, meta = read_points(shared_file("crowd/SHTA_test_GT_IMG_4.mat"))
    assert points.shape == (170, 2) and points.dtype == np.float64
    assert meta["format"] == "shanghaitech_mat" and meta["stored_count"] == 170
    kept, dropped = check_points_in_image(points, (334, 500))
    assert dropped == 0 and len(kept) == 170
    assert points_file_for(shared_file("crowd/SHTA_test_IMG_4.jpg")) == shared_file("crowd/SHTA_test_GT_IMG_4.mat")


def test_shanghaitech_round_trip(tmp_path):
    _shanghaitech_mat(tmp_path / "GT_IMG_1.mat", POINTS)
    points, meta = read_points(tmp_path / "GT_IMG_1.mat")
    np.testing.assert_array_equal(points, POINTS)
    assert meta["stored_count"] == 4


@pytest.mark.parametrize("name", ["annPoints", "pts"])
def test_mat_arrays(tmp_path, name):
    scipy.io.savemat(tmp_path / "a.mat", {name: POINTS, "other": np.zeros((3, 5))})
    points, meta = read_points(tmp_path / "a.mat")
    np.testing.assert_array_equal(points, POINTS)
    assert meta["format"] == ("annpoints_mat" if name == "annPoints" else "mat_array")


@pytest.mark.parametrize("userblock", [True, False])
def test_mat_v73(tmp_path, userblock):
    _v73_mat(tmp_path / "b.mat", {"annPoints": POINTS, "number": [[4.0]]}, userblock)
    points, meta = read_points(tmp_path / "b.mat")
    np.testing.assert_array_equal(points, POINTS)
    assert meta["format"] == "mat_v73" and meta["stored_count"] == 4


def test_json_layouts(tmp_path):
    layouts = {"list.json": POINTS.tolist(),
               "dicts.json": [{"x": x, "y": y, "label": "head"} for x, y in POINTS.tolist()],
               "nwpu.json": {"img_id": "0001.jpg", "human_num": 4, "points": POINTS.tolist()}}
    for name, document in layouts.items():
        (tmp_path / name).write_text(json.dumps(document))
        points, _ = read_points(tmp_path / name)
        np.testing.assert_array_equal(points, POINTS)
    assert read_points(tmp_path / "nwpu.json")[1]["stored_count"] == 4


def test_csv_and_txt(tmp_path):
    rows = "\n".join(f"{x},{y}" for x, y in POINTS.tolist())
    (tmp_path / "plain.csv").write_text(rows + "\n")
    (tmp_path / "header.csv").write_text("id,y,x,note\n" + "\n".join(
        f"{k},{y},{x},n" for k, (x, y) in enumerate(POINTS.tolist())))
    (tmp_path / "p2p.txt").write_text("\n".join(f"{x} {y}" for x, y in POINTS.tolist()))
    (tmp_path / "jhu.txt").write_text("\n".join(f"{x} {y} 12 14 1 0" for x, y in POINTS.tolist()))
    for name in ("plain.csv", "header.csv", "p2p.txt", "jhu.txt"):
        np.testing.assert_array_equal(read_points(tmp_path / name)[0], POINTS)


def test_empty_scenes_are_valid(tmp_path):
    (tmp_path / "e.txt").write_text("")
    (tmp_path / "e.csv").write_text("x,y\n")
    (tmp_path / "e.json").write_text('{"points": []}')
    scipy.io.savemat(tmp_path / "e.mat", {"annPoints": np.zeros((0, 2))})
    _shanghaitech_mat(tmp_path / "GT_e.mat", np.zeros((0, 2)))
    for name in ("e.txt", "e.csv", "e.json", "e.mat", "GT_e.mat"):
        assert read_points(tmp_path / name)[0].shape == (0, 2), name


def test_write_points_json_round_trip(tmp_path):
    path = write_points_json(tmp_path / "out" / "p.json", POINTS, {"source": "test"})
    points, meta = read_points(path)
    np.testing.assert_array_equal(points, POINTS)
    assert meta["stored_count"] == 4 and json.loads(path.read_text())["meta"] == {"source": "test"}
    with pytest.raises(ValueError):
        write_points_json(tmp_path / "bad.json", np.array([[1.0, np.nan]]))


def _bad(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(InputError) as caught:
        read_points(path)
    message = str(caught.value)
    assert str(path) in message and "\n" not in message
    return message


def test_bad_files(tmp_path):
    real = tmp_path / "ok.mat"
    scipy.io.savemat(real, {"annPoints": POINTS})
    assert "truncated" in _bad(tmp_path, "cut.mat", real.read_bytes()[:150])
    assert "no head points" in _bad(tmp_path, "none.json", '{"boxes": []}')
    assert "not valid JSON" in _bad(tmp_path, "cut.json", '[[1, 2], [3,')
    assert "not a number" in _bad(tmp_path, "words.csv", "x,y\n1,2\n3,abc\n")
    assert "NaN" in _bad(tmp_path, "nan.txt", "1 2\nnan 4\n")
    assert "NaN" in _bad(tmp_path, "nan.csv", "1,2\n3,inf\n")
    assert "[x, y]" in _bad(tmp_path, "three.json", "[[1, 2, 3]]")
    assert "header" in _bad(tmp_path, "header.csv", "a,b\n1,2\n")
    assert "expected x and y" in _bad(tmp_path, "one.txt", "1 2\n3\n")
    assert "empty" in _bad(tmp_path, "empty.mat", b"")
    assert "not a head-point" in _bad(tmp_path, "points.xml", "<points/>")


def test_mat_without_points(tmp_path):
    scipy.io.savemat(tmp_path / "no.mat", {"boxes": np.zeros((5, 4))})
    with pytest.raises(InputError, match="no head points found"):
        read_points(tmp_path / "no.mat")
    scipy.io.savemat(tmp_path / "two.mat", {"a": POINTS, "b": POINTS})
    with pytest.raises(InputError, match="several"):
        read_points(tmp_path / "two.mat")
    scipy.io.savemat(tmp_path / "nan.mat", {"annPoints": np.array([[1.0, np.nan]])})
    with pytest.raises(InputError, match="NaN"):
        read_points(tmp_path / "nan.mat")
    _v73_mat(tmp_path / "v73.mat", {"boxes": np.zeros((5, 4))})
    with pytest.raises(InputError, match="no head points found"):
        read_points(tmp_path / "v73.mat")


def test_points_file_for_layouts(tmp_path):
    images, gt = tmp_path / "images", tmp_path / "ground_truth"
    images.mkdir(), gt.mkdir()
    (images / "IMG_4.jpg").touch()
    assert points_file_for(images / "IMG_4.jpg") is None
    (gt / "GT_IMG_4.mat").touch()
    assert points_file_for(images / "IMG_4.jpg") == gt / "GT_IMG_4.mat"
    (tmp_path / "img_0001_ann.mat").touch()
    assert points_file_for(tmp_path / "img_0001.jpg") == tmp_path / "img_0001_ann.mat"
    (tmp_path / "scene.json").touch()
    assert points_file_for(tmp_path / "scene.png") == tmp_path / "scene.json"


def test_check_points_in_image():
    points = np.array([[0, 0], [9.99, 4.99], [10, 2], [-0.1, 1], [3, 5]])
    kept, dropped = check_points_in_image(points, (5, 10, 3))
    np.testing.assert_array_equal(kept, points[:2])
    assert dropped == 3
