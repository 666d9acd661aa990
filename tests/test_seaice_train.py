"""Sea-ice training on synthetic scenes: the scores, the crops' alignment between grids, and a tiny run of each
ablation arm."""
from __future__ import annotations

import numpy as np
import pytest

from mis.pipelines.seaice.train import (SeaIceTrainOptions, _crop_pair, ablation, batch_sampler, demo_network,
                                        f1_scores, scene_pool)


def test_scores_count_ice_as_the_positive_class():
    truth = np.array([1, 1, 0, 0])
    assert f1_scores(truth, truth) == {"f1": 1.0, "iou": 1.0, "accuracy": 1.0}
    scores = f1_scores(np.array([1, 0, 1, 0]), truth)
    assert scores["f1"] == pytest.approx(0.5) and scores["iou"] == pytest.approx(1 / 3)
    assert scores["accuracy"] == 0.5


@pytest.mark.parametrize("finer", ["msi", "sar"])
def test_crops_cover_the_same_ground_on_both_grids(finer):
    rng = np.random.default_rng(0)
    ratio, size = 4, 16
    coarse = np.arange(size * size, dtype=np.float32).reshape(1, size, size)
    fine = np.kron(coarse, np.ones((1, ratio, ratio), np.float32))      # each coarse value repeated on the fine grid
    sar, msi = (fine, coarse) if finer == "sar" else (coarse, fine)
    s, m, ice = _crop_pair(sar, msi, coarse[0], 8, ratio, finer, rng)
    fine_crop, coarse_crop = (s, m) if finer == "sar" else (m, s)
    np.testing.assert_array_equal(fine_crop[0, ::ratio, ::ratio], coarse_crop[0])
    np.testing.assert_array_equal(coarse_crop[0], ice)


def test_a_batch_has_the_grids_the_network_expects(tmp_path):
    options = SeaIceTrainOptions(out=tmp_path, network=demo_network(), scenes=2, scene_size=32, crop=16, batch_size=3)
    batch = batch_sampler(scene_pool(options, 0, 2), options)(np.random.default_rng(1), 0)
    assert batch["sar"].shape == (3, 2, 16, 16) and batch["msi"].shape == (3, 4, 64, 64)
    assert batch["ice"].shape == (3, 1, 16, 16) and set(np.unique(batch["ice"].numpy())) <= {0.0, 1.0}


def test_every_ablation_arm_trains_and_is_scored_on_the_same_scenes(tmp_path):
    rows = ablation(tmp_path, steps=2, test_scenes=1, scenes=2, scene_size=32, crop=16, batch_size=2, val_scenes=1,
                    validate_every=2, log=lambda _: None)
    assert [r["mode"] for r in rows] == ["dual", "stacked", "sar", "msi"]
    for row in rows:
        assert 0 <= row["f1"] <= 1 and 0 <= row["accuracy"] <= 1
    assert rows[0]["parameters"] > rows[2]["parameters"]          # two encoders vs one
    assert (tmp_path / "dual" / "model.safetensors").exists()
