"""CT segmentation pipeline contract: geometry preserved, batch == single, round trip, bad inputs."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from mis.io.volume import VolumeMeta, read_volume
from mis.pipelines.ct_segmentation.pipeline import CTSegmentationPipeline
from mis.runtime.config import RuntimeConfig

from conftest import shared_file


def pipeline_from(path, batch_size=0, **options):
    return CTSegmentationPipeline.from_checkpoint(
        path, RuntimeConfig(device="cpu", precision="fp32", batch_size=batch_size), **options)


def lps_meta(shape, spacing=(3.0, 3.0, 3.0)):
    affine = np.diag([-spacing[0], -spacing[1], spacing[2], 1.0])
    return VolumeMeta(affine=affine, shape=shape, spacing=spacing, source="memory", kind="nifti")


def test_output_has_the_input_shape_for_any_orientation(tiny_ct_checkpoint, phantom_file):
    pipeline = pipeline_from(tiny_ct_checkpoint)
    image, meta = read_volume(phantom_file)
    result = pipeline(image, meta)
    assert result.labels.shape == image.shape and result.labels.dtype == np.uint8
    # the same volume stored flipped and permuted (LPS-like) gives the same labels, flipped back
    flipped = np.ascontiguousarray(image[::-1, ::-1, :])
    affine = meta.affine @ np.array([[-1, 0, 0, image.shape[0] - 1], [0, -1, 0, image.shape[1] - 1],
                                     [0, 0, 1, 0], [0, 0, 0, 1]], dtype=float)
    meta2 = VolumeMeta(affine=affine, shape=flipped.shape, spacing=meta.spacing, source="flipped", kind="nifti")
    result2 = pipeline(flipped, meta2)
    assert np.array_equal(result2.labels[::-1, ::-1, :], result.labels)


def test_window_batch_does_not_change_the_result(tiny_ct_checkpoint, phantom_file):
    image, meta = read_volume(phantom_file)
    one = pipeline_from(tiny_ct_checkpoint, batch_size=1)
    four = pipeline_from(tiny_ct_checkpoint, batch_size=4)
    p1, _ = one.grid_probabilities(image, meta)
    p4, _ = four.grid_probabilities(image, meta)
    torch.testing.assert_close(p1, p4, atol=1e-5, rtol=1e-5)


def test_skipping_empty_windows_matches_running_them(tiny_ct_checkpoint, phantom_file):
    """Air windows skipped must not change organ voxels; the network's own output on air decides
    only background there, so we compare the argmax inside the body."""
    image, meta = read_volume(phantom_file)
    fast = pipeline_from(tiny_ct_checkpoint)
    full = pipeline_from(tiny_ct_checkpoint, skip_empty=False)
    p_fast, info = fast.grid_probabilities(image, meta)
    p_full, _ = full.grid_probabilities(image, meta)
    assert info["windows"] > 0
    from mis.pipelines.ct_segmentation.preprocess import image_to_grid
    grid, _ = image_to_grid(image, meta, fast.preprocessing)
    body = grid > -0.5
    agree = (p_fast.argmax(0)[body] == p_full.argmax(0)[body]).float().mean()
    assert agree > 0.98


def test_tta_runs_and_stays_a_distribution(tiny_ct_checkpoint, phantom_file):
    image, meta = read_volume(phantom_file)
    probs, _ = pipeline_from(tiny_ct_checkpoint, tta=True).grid_probabilities(image, meta)
    torch.testing.assert_close(probs.sum(0), torch.ones_like(probs[0]), atol=1e-4, rtol=0)


def test_same_input_same_output(tiny_ct_checkpoint, phantom_file):
    image, meta = read_volume(phantom_file)
    a = pipeline_from(tiny_ct_checkpoint)(image, meta).labels
    b = pipeline_from(tiny_ct_checkpoint)(image, meta).labels
    assert np.array_equal(a, b)


def test_probabilities_and_roi_subset(tiny_ct_checkpoint, phantom_file):
    pipeline = pipeline_from(tiny_ct_checkpoint)
    image, meta = read_volume(phantom_file)
    result = pipeline(image, meta, roi_subset=["liver"], return_probabilities=True)
    assert set(np.unique(result.labels)) <= {0, 1}
    assert result.probabilities.shape == (len(pipeline.labels) + 1, *image.shape)
    with pytest.raises(Exception, match="unknown label"):
        pipeline(image, meta, roi_subset=["brain"])


@pytest.mark.parametrize("bad", ["nan", "tiny", "2d"])
def test_bad_arrays_raise_input_errors(tiny_ct_checkpoint, bad):
    from mis.errors import InputError

    pipeline = pipeline_from(tiny_ct_checkpoint)
    image = np.zeros((40, 40, 30), np.float32)
    if bad == "nan":
        image[:] = np.nan
    elif bad == "tiny":
        image = np.zeros((3, 3, 3), np.float32)
    else:
        image = np.zeros((40, 40), np.float32)
    meta = lps_meta(image.shape if image.ndim == 3 else (*image.shape, 1))
    with pytest.raises(InputError):
        pipeline(image, meta)


def test_real_oblique_ct_keeps_shape_and_affine(tiny_ct_checkpoint, tmp_path):
    """The written label map has exactly the input's shape and affine (real oblique head CT)."""
    from mis.io.nifti import read_nifti, write_nifti

    path = shared_file("ct/niivue-images/CT_pitch.nii.gz")
    image, meta = read_volume(path)
    result = pipeline_from(tiny_ct_checkpoint)(image, meta)
    out = tmp_path / "seg.nii.gz"
    write_nifti(out, result.labels, meta, dtype=np.uint8)
    labels, out_meta = read_nifti(out)
    assert labels.shape == image.shape
    np.testing.assert_allclose(out_meta.affine, meta.affine, atol=1e-5)


def test_one_worker_per_device_keeps_order_and_isolates_failures(tiny_ct_checkpoint, phantom_file, tmp_path,
                                                                monkeypatch):
    """The multi-GPU path of the shared batch runner, exercised with two CPU 'devices': every item once, in
    input order, each device with its own copy of the network."""
    from mis.pipelines.ct_segmentation.run import SegmentOptions, plan_items, segment_files
    from mis.runtime import batch

    monkeypatch.setattr(batch, "visible_gpu_workers", lambda: ["cpu", "cpu"])
    bad = tmp_path / "bad.nii.gz"
    bad.write_text("not an image")
    items = plan_items([str(phantom_file), str(bad), str(phantom_file.with_name("case1_labels.nii.gz"))],
                       tmp_path / "out")
    summary = segment_files(pipeline_from(tiny_ct_checkpoint), items, SegmentOptions(),
                            RuntimeConfig(device="auto", quiet=True))
    assert [r.source for r in summary.results] == [str(i.source) for i in items]
    assert [r.status for r in summary.results] == ["done", "failed", "done"]
    assert summary.exit_code == 1


def test_training_labels_on_another_grid_or_with_odd_ids_are_refused(phantom_file, tmp_path):
    import nibabel as nib

    from mis.errors import InputError
    from mis.pipelines.ct_segmentation.preprocess import DEFAULT_PREPROCESSING
    from mis.pipelines.ct_segmentation.train import file_cases

    labels = nib.load(phantom_file.with_name("case1_labels.nii.gz"))
    ids = np.asanyarray(labels.dataobj).astype(np.float32)
    shifted = labels.affine.copy()
    shifted[0, 3] += 60.0
    variants = {"shifted": (ids, shifted, "affine differs"), "ignore": (np.where(ids == 0, -1, ids), labels.affine,
                "negative ids"), "float": (ids * 0.5, labels.affine, "non-integer")}
    for name, (data, affine, problem) in variants.items():
        path = tmp_path / f"{name}.nii.gz"
        nib.save(nib.Nifti1Image(data, affine), path)
        with pytest.raises(InputError, match=problem):
            file_cases([str(phantom_file)], [str(path)], None, DEFAULT_PREPROCESSING)


def test_two_training_images_with_one_case_name_are_refused(phantom_file, tmp_path):
    import shutil

    from mis.errors import InputError
    from mis.pipelines.ct_segmentation.preprocess import DEFAULT_PREPROCESSING
    from mis.pipelines.ct_segmentation.train import file_cases

    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        shutil.copy(phantom_file, tmp_path / folder / "case1.nii.gz")
    labels = phantom_file.with_name("case1_labels.nii.gz")
    with pytest.raises(InputError, match="also names"):
        file_cases([str(tmp_path / "a"), str(tmp_path / "b")], [str(labels)], None, DEFAULT_PREPROCESSING)


def test_a_scan_shorter_than_the_window_is_padded_with_air_and_reported(tiny_ct_checkpoint, phantom_file, tmp_path):
    """A slab is padded beyond its edges with what the scanner did not see (air, as training cuts patches), and
    the table, JSON and sidecar say that it is a partial scan."""
    import json

    import nibabel as nib
    from typer.testing import CliRunner

    from mis.cli.main import app

    image = nib.load(phantom_file)
    data = np.asarray(image.dataobj)
    axis = int(np.argmax(np.abs(image.affine[2, :3])))
    index = [slice(None)] * 3
    index[axis] = slice(10, 14)
    shift = np.eye(4)
    shift[axis, 3] = 10
    slab = tmp_path / "slab.nii.gz"
    nib.save(nib.Nifti1Image(np.ascontiguousarray(data[tuple(index)]), image.affine @ shift), slab)
    result = CliRunner().invoke(app, ["--json", "segment", str(slab), "-o", str(tmp_path / "out"), "--model",
                                      str(tiny_ct_checkpoint)])
    assert result.exit_code == 0, result.output
    warning = json.loads(result.stdout)["items"][0]["warning"]
    assert "partial scan: it covers" in warning and "head-foot" in warning
    assert "partial scan" in json.loads((tmp_path / "out" / "slab_seg.json").read_text())["warning"]

    # a slab of soft tissue only (no air inside its crop): what the windows see beyond it is air
    seen = []
    pipeline = pipeline_from(tiny_ct_checkpoint)
    original = pipeline._predict_windows
    pipeline._predict_windows = lambda windows: (seen.append(windows.clone()), original(windows))[1]
    tissue = np.full((30, 30, 3), 40.0, np.float32)
    pipeline(tissue, lps_meta(tissue.shape, spacing=(12.0, 12.0, 12.0)))
    values = torch.unique(torch.cat(seen))
    assert float(values.min()) == -1.0 and float(values.max()) == pytest.approx(0.04)   # air padding, 40 HU inside
