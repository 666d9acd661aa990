"""Volume Fusion transform: labels and alpha agree voxel by voxel, 70% of full blocks fused,
shapes, determinism, and both crops from the same scan."""
from __future__ import annotations

import numpy as np
import pytest

from mis.pipelines.ct_segmentation.volume_fusion import (
    VolumeFusionConfig, crop_pair, fuse, random_resized_crop, volume_fusion_sample)

CONFIG = VolumeFusionConfig(patch_size=(16, 32, 32), block_min=(4, 4, 4), block_max=(8, 16, 16))


def scan(seed: int, shape=(40, 60, 60)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.normal(size=shape).astype(np.float32)


@pytest.mark.parametrize("seed", range(5))
def test_label_k_iff_alpha_k_over_4_and_fused_image(seed):
    rng = np.random.default_rng(seed)
    fg, bg = crop_pair(scan(seed), rng, CONFIG)
    sample = fuse(fg, bg, rng, CONFIG)
    assert sample.image.shape == sample.labels.shape == CONFIG.patch_size
    assert sample.labels.dtype == np.uint8 and sample.labels.max() <= 4
    np.testing.assert_array_equal(sample.alpha, sample.labels.astype(np.float32) / 4)
    expected = (sample.alpha * fg + (1 - sample.alpha) * bg) * 2 - 1
    np.testing.assert_allclose(sample.image, expected, atol=1e-6)
    # where alpha is 0 the image is the background crop, where it is 1 the foreground crop
    assert np.allclose(sample.image[sample.labels == 0], bg[sample.labels == 0] * 2 - 1, atol=1e-6)
    assert np.allclose(sample.image[sample.labels == 4], fg[sample.labels == 4] * 2 - 1, atol=1e-6)


@pytest.mark.parametrize("seed", range(5))
def test_seventy_percent_of_full_blocks_are_fused_and_the_border_stays_zero(seed):
    rng = np.random.default_rng(100 + seed)
    fg, bg = crop_pair(scan(seed), rng, CONFIG)
    sample = fuse(fg, bg, rng, CONFIG)
    (od, oh, ow), (bd, bh, bw), (gd, gh, gw) = sample.offset, sample.block_size, sample.grid
    blocks = sample.labels[od:od + gd * bd, oh:oh + gh * bh, ow:ow + gw * bw]
    blocks = blocks.reshape(gd, bd, gh, bh, gw, bw)
    # every block is uniform, and exactly int(0.7 * n) blocks carry a class in 1..4
    assert (blocks.min(axis=(1, 3, 5)) == blocks.max(axis=(1, 3, 5))).all()
    per_block = blocks[:, 0, :, 0, :, 0]
    assert int((per_block > 0).sum()) == int(gd * gh * gw * 0.7) == sample.fused_blocks
    border = np.ones(CONFIG.patch_size, bool)
    border[od:od + gd * bd, oh:oh + gh * bh, ow:ow + gw * bw] = False
    assert (sample.labels[border] == 0).all()
    assert all(lo <= b <= hi for b, lo, hi in zip(sample.block_size, CONFIG.block_min, CONFIG.block_max))


def test_same_seed_same_sample_different_seed_different_sample():
    volume = scan(0)
    a = volume_fusion_sample(volume, np.random.default_rng(7), CONFIG)
    b = volume_fusion_sample(volume, np.random.default_rng(7), CONFIG)
    c = volume_fusion_sample(volume, np.random.default_rng(8), CONFIG)
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert not np.array_equal(a.labels, c.labels)


def test_crops_stay_inside_the_scan_value_range_and_both_come_from_one_scan():
    """Two scans with disjoint value ranges: every crop of a pair lies in one scan's range."""
    from mis.pipelines.ct_segmentation.pretrain import FusionBatches

    low, high = np.zeros((40, 60, 60), np.float32), np.full((40, 60, 60), 10.0, np.float32)
    low[::2] = 1.0
    high[::2] = 11.0
    rng = np.random.default_rng(0)
    for volume, (lo, hi) in ((low, (0, 1)), (high, (10, 11))):
        crop = random_resized_crop(volume, CONFIG.patch_size, rng, CONFIG.scale_range)
        assert crop.shape == CONFIG.patch_size and crop.min() >= lo - 1e-5 and crop.max() <= hi + 1e-5
    seen = []
    import mis.pipelines.ct_segmentation.pretrain as pretrain

    original = pretrain.volume_fusion_sample

    def recording(volume, rng, config):
        seen.append(id(volume))
        return original(volume, rng, config)

    pretrain.volume_fusion_sample = recording
    try:
        x, y = FusionBatches([low, high], CONFIG, 4)(np.random.default_rng(1), 0)
    finally:
        pretrain.volume_fusion_sample = original
    assert x.shape == (4, 1, *CONFIG.patch_size) and y.shape == (4, *CONFIG.patch_size)
    assert len(seen) == 4 and set(seen) <= {id(low), id(high)}


def test_contrast_mapping_range_and_inversion_probability():
    rng = np.random.default_rng(3)
    volume = scan(1)
    inverted = 0
    for _ in range(400):
        fg, bg = crop_pair(volume, rng, VolumeFusionConfig(patch_size=(4, 8, 8)))
        assert 0.0 <= fg.min() and fg.max() <= 1.0
    # inversion is applied to both patches together with p = 0.25: measure it on a ramp
    ramp = np.broadcast_to(np.arange(40, dtype=np.float32)[:, None, None], (40, 8, 8)).copy()
    config = VolumeFusionConfig(patch_size=(8, 4, 4), flip_probability=0.0)
    for _ in range(800):
        fg, bg = crop_pair(ramp, rng, config)
        fg_up, bg_up = fg[-1].mean() > fg[0].mean(), bg[-1].mean() > bg[0].mean()
        assert fg_up == bg_up  # never only one of them
        inverted += not fg_up
    assert 0.2 < inverted / 800 < 0.3
