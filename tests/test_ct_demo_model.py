"""The shipped demo CT model: sensible on fresh phantoms, the sample data and the real example CT."""
from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import ROOT, shared_file
from mis.io.volume import read_volume
from mis.pipelines.ct_segmentation.labels import apply_labels_map, read_labels_map
from mis.pipelines.ct_segmentation.metrics import dice_hd95
from mis.pipelines.ct_segmentation.phantom import PHANTOM_LABELS, make_phantom
from mis.pipelines.ct_segmentation.pipeline import CTSegmentationPipeline
from mis.registry import resolve_checkpoint
from mis.runtime.config import RuntimeConfig

CHECKPOINT = resolve_checkpoint("ct_segmentation", None)


@pytest.fixture(scope="module")
def pipeline():
    return CTSegmentationPipeline.from_checkpoint(CHECKPOINT, RuntimeConfig(device="cpu", precision="fp32"))


def test_shipped_weights_are_small_fp16_and_carry_their_card():
    from mis.checkpoints import read_card

    card = read_card(CHECKPOINT)
    assert CHECKPOINT.stat().st_size < 20 * 2**20
    assert card["storage_dtype"] == "float16"
    assert card["labels"] == {str(k): v for k, v in PHANTOM_LABELS.items()}
    assert card["preprocessing"]["spacing"] == [4.0, 4.0, 4.0]


def test_fresh_phantoms_in_any_orientation(pipeline):
    """Seeds never used in training; random storage orientation and obliquity."""
    means = []
    for seed in (97_001, 97_002, 97_003):
        phantom = make_phantom(seed)
        meta = phantom.volume_meta()
        labels = pipeline(phantom.image, meta).labels
        scores = dice_hd95(labels, phantom.labels, sorted(PHANTOM_LABELS), meta.spacing, hd95=False)
        means.append(np.mean([s["dice"] for s in scores.values()]))
    assert np.mean(means) >= 0.85, means


def test_cli_on_sample_data(tmp_path):
    sample = ROOT / "sample_data" / "ct" / "phantom_abdomen.nii.gz"
    result = CliRunner().invoke(__import__("mis.cli.main", fromlist=["app"]).app,
                                ["--json", "segment", str(sample), "-o", str(tmp_path), "--statistics"])
    assert result.exit_code == 0, result.output
    pred = nib.load(tmp_path / "phantom_abdomen_seg.nii.gz")
    ref = nib.load(sample.with_name("phantom_abdomen_labels.nii.gz"))
    assert pred.shape == ref.shape
    scores = dice_hd95(np.asarray(pred.dataobj), np.asarray(ref.dataobj), sorted(PHANTOM_LABELS),
                       pred.header.get_zooms()[:3], hd95=False)
    assert np.mean([s["dice"] for s in scores.values()]) >= 0.85, scores
    stats = json.loads((tmp_path / "phantom_abdomen_seg_statistics.json").read_text())
    assert 800 < stats["liver"]["volume_ml"] < 3000


def test_real_example_ct_keeps_geometry_and_finds_the_organs(pipeline, tmp_path):
    """Real abdominal CT (in the demo's training set, with TotalSegmentator labels as reference)."""
    from mis.io.nifti import read_nifti, write_nifti

    image, meta = read_volume(shared_file("ct/totalsegmentator/example_ct.nii.gz"))
    result = pipeline(image, meta)
    write_nifti(tmp_path / "seg.nii.gz", result.labels, meta)
    labels, out_meta = read_nifti(tmp_path / "seg.nii.gz")
    assert labels.shape == image.shape
    np.testing.assert_allclose(out_meta.affine, meta.affine, atol=1e-6)
    reference, _ = read_volume(shared_file("ct/totalsegmentator/example_seg_fast_force_split.nii.gz"))
    mapping = read_labels_map(ROOT / "configs" / "labelmaps" / "totalsegmentator_to_phantom.json")
    ref = apply_labels_map(np.rint(reference).astype(np.int64), mapping)
    scores = dice_hd95(result.labels, ref, sorted(PHANTOM_LABELS), meta.spacing, hd95=False)
    assert scores[1]["dice"] >= 0.8, scores  # liver


def test_real_oblique_ct_keeps_geometry(pipeline):
    image, meta = read_volume(shared_file("ct/niivue-images/CT_pitch.nii.gz"))
    result = pipeline(image, meta)
    assert result.labels.shape == image.shape


def test_a_40_mm_slab_is_segmented_like_the_full_volume(pipeline):
    """The shipped model is trained on partial scans: a slab through the liver finds it as the full volume does
    (the demo before this training found no liver voxel in such a slab)."""
    from mis.io.volume import VolumeMeta

    phantom = make_phantom(93_000)
    meta = phantom.volume_meta()
    full = pipeline(phantom.image, meta).labels
    axis = int(np.argmax(np.abs(meta.affine[2, :3])))
    liver_per_slice = (full == 1).sum(axis=tuple(a for a in range(3) if a != axis))
    count = int(round(40 / meta.spacing[axis]))
    start = max(0, int(np.argmax(liver_per_slice)) - count // 2)
    index = [slice(None)] * 3
    index[axis] = slice(start, start + count)
    shift = np.eye(4)
    shift[axis, 3] = start
    slab = np.ascontiguousarray(phantom.image[tuple(index)])
    labels = pipeline(slab, VolumeMeta(affine=meta.affine @ shift, shape=slab.shape, spacing=meta.spacing,
                                       source="slab", kind="nifti")).labels
    reference = full[tuple(index)]
    dice = 2 * np.logical_and(labels == 1, reference == 1).sum() / ((labels == 1).sum() + (reference == 1).sum())
    assert dice >= 0.85, dice
