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


# ---- training on the user's paired rasters with masks ------------------------------------------------------------
def _write_training_csv(folder, seeds=(3, 4, 5), size=48, split=None):
    from mis.pipelines.seaice.synthetic import make_scene, write_scene_geotiffs

    lines = ["sar,msi,mask" + (",split" if split else "")]
    for k, seed in enumerate(seeds):
        files = write_scene_geotiffs(make_scene(seed, coarse_size=size), folder / f"s{seed}")
        row = ",".join(str(files[n].relative_to(folder)) for n in ("sar", "msi", "mask"))
        lines.append(row + (f",{split[k]}" if split else ""))
    (folder / "train.csv").write_text("\n".join(lines) + "\n")
    return folder / "train.csv"


def test_a_real_scene_reads_back_as_the_synthetic_arrays_it_was_written_from(tmp_path):
    from mis.pipelines.seaice.run import SceneOptions
    from mis.pipelines.seaice.synthetic import make_scene
    from mis.pipelines.seaice.train import read_training_csv, read_training_scene, scene_arrays

    csv_path = _write_training_csv(tmp_path, seeds=(3,))
    network = demo_network()
    row = read_training_csv(csv_path)[0]
    from mis.pipelines.seaice.train import PREPROCESSING
    sar, msi, ice = read_training_scene(row, network, PREPROCESSING, SceneOptions())
    want_sar, want_msi, want_ice = scene_arrays(make_scene(3, coarse_size=48))
    assert sar.shape == want_sar.shape and msi.shape == want_msi.shape and ice.shape == want_ice.shape
    np.testing.assert_array_equal(ice, want_ice)            # exact geometry: the same pixels, not shifted
    np.testing.assert_allclose(sar, want_sar, atol=2e-3)
    np.testing.assert_allclose(msi, want_msi, atol=2e-3)


def test_mask_nodata_is_left_out_of_the_labels(tmp_path):
    import rasterio

    from mis.pipelines.seaice.run import SceneOptions
    from mis.pipelines.seaice.train import PREPROCESSING, read_training_csv, read_training_scene

    csv_path = _write_training_csv(tmp_path, seeds=(3,))
    row = read_training_csv(csv_path)[0]
    with rasterio.open(row.mask, "r+") as dst:
        mask = dst.read(1)
        mask[:10] = 7                                         # not a class: left out like nodata
        dst.write(mask, 1)
    _, _, ice = read_training_scene(row, demo_network(), PREPROCESSING, SceneOptions())
    assert np.isnan(ice[:10]).all() and np.isfinite(ice[10:]).all()


def test_train_on_paired_rasters_end_to_end_and_a_bad_row_gets_one_line(tmp_path):
    from typer.testing import CliRunner

    from mis.checkpoints import read_card
    from mis.cli.main import app

    csv_path = _write_training_csv(tmp_path, split=["train", "train", "val"])
    args = ["--json", "train", "seaice", "--pairs", str(csv_path), "--steps", "2", "--crop", "16", "--batch", "2",
            "--validate-every", "2", "--msi-bands", "1,2,3,4", "-o"]
    result = CliRunner().invoke(app, args + [str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    card = read_card(tmp_path / "run" / "model.safetensors")
    assert card["training"]["scenes"] == str(csv_path)
    assert card["preprocessing"]["msi_bands"] == "1,2,3,4" and card["config"]["msi_channels"] == 4
    assert card["metrics"]["val_f1"] is not None
    (tmp_path / "bad.csv").write_text(csv_path.read_text().replace("s5/mask.tif", "s5/missing.tif"))
    result = CliRunner().invoke(app, args + [str(tmp_path / "run2"), "--pairs", str(tmp_path / "bad.csv")])
    assert result.exit_code == 1 and "missing.tif" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "run2" / "model.safetensors").exists()
