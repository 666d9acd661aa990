"""Synthetic SAR + MSI sea-ice scenes: determinism, grids, ice structure (leads), the two single-sensor confusions
(wind-roughened water in SAR, cloud in MSI), speckle statistics, GeoTIFF georeferencing and speed."""
from __future__ import annotations

import math
import time

import numpy as np
import pytest
from scipy import ndimage

from mis.pipelines.seaice.synthetic import (MSI_BANDS, S2_OFFSET, S2_QUANTIFICATION, SAR_BANDS, make_scene,
                                            write_sample_data, write_scene_geotiffs)


def best_threshold_accuracy(values: np.ndarray, truth: np.ndarray) -> float:
    """Accuracy of the best one-threshold classifier (either polarity), threshold chosen on the data itself."""
    order = np.argsort(values.ravel(), kind="stable")
    y = truth.ravel()[order].astype(np.int64)
    n, n_ice = y.size, int(y.sum())
    ice_below = np.concatenate([[0], np.cumsum(y)])  # ice among the k lowest values, k = 0..n
    k = np.arange(n + 1)
    # "ice above the threshold": water below correct + ice above correct, and the opposite polarity
    above = (k - ice_below) + (n_ice - ice_below)
    return float(max(above.max(), (n - above).max()) / n)


def balanced_accuracy(predicted: np.ndarray, truth: np.ndarray) -> float:
    return 0.5 * (float(predicted[truth].mean()) + float((~predicted[~truth]).mean()))


def test_same_seed_gives_the_same_scene_and_another_seed_a_different_one():
    a, b, c = make_scene(3, coarse_size=32), make_scene(3, coarse_size=32), make_scene(4, coarse_size=32)
    for name in ("sar", "msi", "ice", "ice_fine", "cloud"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
    assert a.params == b.params
    assert not np.array_equal(a.sar, c.sar) and not np.array_equal(a.msi, c.msi)
    assert not np.array_equal(a.ice_fine, c.ice_fine)


def test_overriding_wind_keeps_the_rest_of_the_scene():
    calm, windy = make_scene(5, coarse_size=32, wind=0.0), make_scene(5, coarse_size=32, wind=12.0)
    assert np.array_equal(calm.ice_fine, windy.ice_fine) and np.array_equal(calm.msi, windy.msi)
    assert not np.array_equal(calm.sar, windy.sar)


@pytest.mark.parametrize("ratio, finer", [(4, "msi"), (3, "sar")])
def test_shapes_dtypes_and_ranges(ratio, finer):
    scene = make_scene(1, coarse_size=40, ratio=ratio, finer=finer)
    fine, coarse = 40 * ratio, 40
    sar_size, msi_size = (fine, coarse) if finer == "sar" else (coarse, fine)
    assert scene.sar.shape == (2, sar_size, sar_size) and scene.sar.dtype == np.float32
    assert scene.msi.shape == (4, msi_size, msi_size) and scene.msi.dtype == np.float32
    assert scene.ice.shape == (coarse, coarse) and scene.ice.dtype == np.uint8
    assert scene.ice_fine.shape == (fine, fine) and scene.ice_fine.dtype == np.uint8
    assert scene.cloud.shape == (msi_size, msi_size) and scene.cloud.dtype == bool
    assert scene.incidence.shape == (sar_size,)
    assert scene.ratio == ratio and scene.finer == finer
    assert np.isfinite(scene.sar).all() and -45 < scene.sar.min() and scene.sar.max() < 10
    assert 0.0 <= scene.msi.min() and scene.msi.max() <= 1.0
    assert set(np.unique(scene.ice)) <= {0, 1}
    # the label grid is the majority of each ratio x ratio block of the fine mask
    blocks = scene.ice_fine.reshape(coarse, ratio, coarse, ratio).mean(axis=(1, 3))
    assert np.array_equal(scene.ice, (blocks >= 0.5).astype(np.uint8))
    assert (scene.sar[1] < scene.sar[0]).mean() > 0.9  # HV below HH


def test_bad_arguments_are_rejected_with_the_value():
    with pytest.raises(ValueError, match="'radar'"):
        make_scene(0, finer="radar")
    with pytest.raises(ValueError, match="2.5"):
        make_scene(0, ratio=2.5)
    with pytest.raises(ValueError, match="1.5"):
        make_scene(0, cloud_cover=1.5)


def test_ice_fraction_and_both_classes_for_most_seeds():
    fractions = [make_scene(seed, coarse_size=48).ice.mean() for seed in range(10)]
    sane = [0.15 < f < 0.9 for f in fractions]
    assert sum(sane) >= 9, fractions


def count_leads(ice: np.ndarray) -> int:
    """Water components enclosed by ice (not touching the border) that are long and thin: >= 8 px long, <= 4 wide."""
    labels, _ = ndimage.label(ice == 0)
    touching = set(np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])).tolist())
    leads = 0
    for index, box in enumerate(ndimage.find_objects(labels), start=1):
        if box is None or index in touching:
            continue
        length = max(box[0].stop - box[0].start, box[1].stop - box[1].start)
        area = int((labels[box] == index).sum())
        leads += length >= 8 and area / length <= 4.0
    return leads


def test_leads_are_thin_water_components_enclosed_by_ice():
    counts = [count_leads(make_scene(seed, coarse_size=96).ice) for seed in range(8)]
    print("leads per scene:", counts)
    assert sum(c >= 1 for c in counts) >= 6, counts
    assert count_leads(np.ones((32, 32), np.uint8)) == 0  # the detector itself is not trivially true


def test_floes_are_ice_components_apart_from_the_pack():
    counts = [ndimage.label(make_scene(seed, coarse_size=96).ice)[1] for seed in range(6)]
    assert sum(c >= 3 for c in counts) >= 4, counts


def test_sar_only_confusion_wind_roughened_water_looks_like_ice_in_hh():
    for seed in (0, 1, 2):
        calm = make_scene(seed, coarse_size=64, wind=0.0)
        windy = make_scene(seed, coarse_size=64, wind=12.0)
        truth = calm.ice_on_sar_grid.astype(bool)
        acc_calm = best_threshold_accuracy(calm.sar[0], truth)
        acc_windy = best_threshold_accuracy(windy.sar[0], truth)
        print(f"seed {seed}: HH threshold accuracy calm {acc_calm:.3f}, wind 12 m/s {acc_windy:.3f}")
        assert acc_calm > 0.88
        assert acc_windy < acc_calm - 0.15


def test_msi_only_confusion_clouds_hide_the_surface():
    for seed in (0, 1, 2):
        scene = make_scene(seed, coarse_size=64, cloud_cover=0.4)
        truth = scene.ice_on_msi_grid.astype(bool)
        brightness = scene.msi.mean(axis=0)
        clear, cloudy = ~scene.cloud, scene.cloud
        assert 0.3 < cloudy.mean() < 0.5
        acc_clear = best_threshold_accuracy(brightness[clear], truth[clear])
        # a threshold that works on the clear pixels calls every cloud ice
        threshold = 0.5 * (np.median(brightness[clear & truth]) + np.median(brightness[clear & ~truth]))
        bal_cloudy = balanced_accuracy(brightness[cloudy] > threshold, truth[cloudy])
        # even the best threshold chosen on the cloudy pixels themselves stays near chance (what it finds is chance
        # correlation between a few cloud blobs' brightness and the ice underneath, not the surface)
        values, y = brightness[cloudy], truth[cloudy]
        best_bal = max(balanced_accuracy(values > t, y) for t in np.quantile(values, np.linspace(0.02, 0.98, 49)))
        print(f"seed {seed}: clear accuracy {acc_clear:.3f}, cloudy balanced {bal_cloudy:.3f} (best {best_bal:.3f})")
        assert acc_clear > 0.97
        assert abs(bal_cloudy - 0.5) < 0.05
        assert best_bal < 0.7


def test_no_clouds_when_cloud_cover_is_zero():
    scene = make_scene(2, coarse_size=32, cloud_cover=0.0)
    assert not scene.cloud.any()


@pytest.mark.parametrize("finer", ["msi", "sar"])
def test_speckle_coefficient_of_variation_matches_the_enl(finer):
    scene = make_scene(6, coarse_size=96, ratio=2, finer=finer, wind=0.0)
    water = ndimage.binary_erosion(scene.ice_on_sar_grid == 0, iterations=3)
    for band in (0, 1):
        power = 10.0 ** (scene.sar[band].astype(np.float64) / 10.0)
        # calm water is homogeneous apart from the incidence-angle gradient along the columns: divide it out
        columns = water.sum(axis=0) >= 20
        counts = water.sum(axis=0)
        column_mean = np.where(water, power, 0.0).sum(axis=0)[columns] / counts[columns]
        normalised = (power[:, columns] / column_mean[None])[water[:, columns]]
        cv = normalised.std() / normalised.mean()
        expected = 1 / math.sqrt(scene.params["enl"])
        print(f"{SAR_BANDS[band]}: CV {cv:.3f}, 1/sqrt(ENL) {expected:.3f} (ENL {scene.params['enl']:.2f})")
        assert normalised.size > 1000
        assert abs(cv - expected) < 0.08 * expected


def test_incidence_angle_gradient_darkens_water_towards_far_range():
    scene = make_scene(6, coarse_size=96, wind=0.0)
    water = ndimage.binary_erosion(scene.ice == 0, iterations=2)
    rows, cols = np.nonzero(water)
    slope = np.polyfit(scene.incidence[cols], scene.sar[0][rows, cols], 1)[0]
    print(f"calm-water HH slope {slope:.3f} dB/deg")
    assert -0.55 < slope < -0.25
    assert 19 <= scene.incidence.min() and scene.incidence.max() <= 46


def test_geotiffs_msi_finer_same_crs(tmp_path):
    import rasterio

    scene = make_scene(2, coarse_size=32, ratio=4, finer="msi")
    paths = write_scene_geotiffs(scene, tmp_path, crs="EPSG:3031", coarse_pixel_m=160.0, msi_extent_margin=8)
    with rasterio.open(paths["sar"]) as sar, rasterio.open(paths["msi"]) as msi, \
            rasterio.open(paths["mask"]) as mask:
        for ds in (sar, msi, mask):
            assert ds.crs.to_epsg() == 3031
        assert sar.count == 2 and sar.descriptions == SAR_BANDS and sar.dtypes[0] == "float32"
        assert math.isnan(sar.nodata)
        assert sar.res == (160.0, 160.0) and sar.shape == (32, 32)
        assert mask.transform == sar.transform and mask.nodata == 255 and mask.dtypes[0] == "uint8"
        assert np.array_equal(mask.read(1), scene.ice)
        assert np.array_equal(sar.read(), scene.sar)
        # MSI: pixel size coarse / ratio, 8 coarse pixels more to the west and the north
        assert msi.res == (40.0, 40.0) and msi.shape == (128 + 32, 128 + 32)
        assert msi.transform.c == sar.transform.c - 8 * 160 and msi.transform.f == sar.transform.f + 8 * 160
        assert msi.bounds.right == sar.bounds.right and msi.bounds.bottom == sar.bounds.bottom
        assert msi.count == 4 and msi.descriptions == MSI_BANDS and msi.dtypes[0] == "uint16" and msi.nodata == 0
        dn = msi.read()
        assert msi.scales == (1e-4,) * 4 and msi.offsets == (-0.1,) * 4
        assert msi.tags()["BOA_ADD_OFFSET"] == "-1000"
        # the scene sits in the south-east corner of the MSI raster; DN = 10000 * reflectance + 1000
        reflectance = (dn[:, 32:, 32:].astype(np.float64) - S2_OFFSET) / S2_QUANTIFICATION
        assert np.abs(reflectance - scene.msi).max() <= 0.5 / S2_QUANTIFICATION + 1e-6
        assert dn.min() >= 1  # 0 is reserved for nodata
        # the same point on the ground: the SAR's upper-left corner is MSI pixel (32, 32)
        assert ~msi.transform @ (sar.transform.c, sar.transform.f) == (32.0, 32.0)


def msi_valid_under_sar(sar, msi) -> bool:
    """Every sampled SAR pixel centre (2 px in from the edge) lands on valid (non-zero) MSI data, whatever the CRSs."""
    import rasterio
    from rasterio.warp import transform

    height, width = sar.shape
    rows, cols = np.mgrid[2:height - 2:5, 2:width - 2:5]
    xs, ys = rasterio.transform.xy(sar.transform, rows.ravel(), cols.ravel())
    mx, my = transform(sar.crs, msi.crs, xs, ys)
    msi_rows, msi_cols = rasterio.transform.rowcol(msi.transform, mx, my)
    dn = msi.read()
    return bool((dn[:, np.asarray(msi_rows), np.asarray(msi_cols)] > 0).all())


def test_geotiffs_south_msi_in_epsg3976(tmp_path):
    import rasterio

    scene = make_scene(4, coarse_size=32, ratio=4, finer="msi")
    paths = write_scene_geotiffs(scene, tmp_path, crs="EPSG:3031", coarse_pixel_m=100.0, msi_extent_margin=2,
                                 crs_msi="EPSG:3976", margin_fill="nodata")
    with rasterio.open(paths["sar"]) as sar, rasterio.open(paths["msi"]) as msi:
        assert sar.crs.to_epsg() == 3031 and msi.crs.to_epsg() == 3976
        assert sar.res == (100.0, 100.0) and msi.res == (25.0, 25.0)
        assert msi.transform.c % 25.0 == 0 and msi.transform.f % 25.0 == 0
        assert msi_valid_under_sar(sar, msi)
        assert msi.descriptions == MSI_BANDS and msi.nodata == 0 and msi.offsets == (-0.1,) * 4


def test_geotiffs_sar_finer_north_and_msi_in_another_crs(tmp_path):
    import rasterio
    from rasterio.warp import transform_bounds

    scene = make_scene(3, coarse_size=24, ratio=3, finer="sar")
    paths = write_scene_geotiffs(scene, tmp_path, crs="EPSG:3413", coarse_pixel_m=240.0, msi_extent_margin=4,
                                 crs_msi="EPSG:3995")
    with rasterio.open(paths["sar"]) as sar, rasterio.open(paths["msi"]) as msi, \
            rasterio.open(paths["mask"]) as mask:
        assert sar.crs.to_epsg() == 3413 and mask.crs.to_epsg() == 3413 and msi.crs.to_epsg() == 3995
        assert sar.res == (80.0, 80.0) and sar.shape == (72, 72)
        assert mask.res == (240.0, 240.0) and mask.bounds == sar.bounds
        assert msi.res == (240.0, 240.0)
        assert msi.transform.c % 240.0 == 0 and msi.transform.f % 240.0 == 0  # snapped to its own pixel size
        assert msi_valid_under_sar(sar, msi)
        dn = msi.read()
        # the two CRSs are 45 degrees apart (central meridians -45 and 0): the footprint is rotated, not only moved
        left, bottom, right, top = transform_bounds(sar.crs, msi.crs, *sar.bounds)
        assert (right - left) > 1.3 * (sar.bounds.right - sar.bounds.left)
        assert (dn > 0).mean() < 0.9  # so the rotated raster has nodata corners


def test_write_sample_data(tmp_path):
    import rasterio

    paths = write_sample_data(tmp_path)
    assert [p.name for p in paths] == ["sar.tif", "msi.tif", "mask.tif"]
    assert all(p.parent == tmp_path / "seaice" and p.exists() for p in paths)
    with rasterio.open(paths[2]) as mask:
        assert mask.shape == (64, 64)
        ice = mask.read(1)
        assert 0 < ice.mean() < 1


def test_generation_is_fast():
    make_scene(0, coarse_size=32)  # warm up
    start = time.perf_counter()
    make_scene(11, coarse_size=128, ratio=4, finer="msi")
    elapsed = time.perf_counter() - start
    print(f"make_scene(coarse 128, ratio 4): {elapsed * 1000:.0f} ms")
    assert elapsed < 2.0
