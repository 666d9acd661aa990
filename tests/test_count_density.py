"""Crowd-counting density targets and metrics (mis.pipelines.count.density): exact sums, adaptive sigmas,
count-preserving resizing, GAME and MAE / RMSE; the real ShanghaiTech annotation from ../shared/data (skipped when
absent)."""
from __future__ import annotations


import numpy as np
import pytest

from conftest import shared_file
from mis.io.points import read_points
from mis.pipelines.count.density import (SigmaRule, attention_target, count_metrics, density_from_points,
                                         downsample_density, game, head_sigmas, parse_sigma, resize_density)

BORDER_POINTS = np.array([[0, 0], [49.9, 0], [0, 39.9], [49.9, 39.9], [25, 0.2], [0.5, 20], [25, 20]])


def test_parse_sigma():
    assert parse_sigma("fixed:5") == SigmaRule("fixed", sigma=5.0)
    assert parse_sigma("fixed:15").sigma == 15.0
    assert parse_sigma("adaptive:k=3,beta=0.1") == SigmaRule("adaptive", k=3, beta=0.1)
    assert parse_sigma("adaptive:k=4, beta=0.3, fallback=8") == SigmaRule("adaptive", k=4, beta=0.3, fallback=8.0)
    assert str(parse_sigma("adaptive")) == "adaptive:k=3,beta=0.1" and str(parse_sigma("fixed:5")) == "fixed:5"
    for bad in ("", "gauss:5", "fixed:", "fixed:-1", "fixed:nan", "adaptive:k=0", "adaptive:k=2.5",
                "adaptive:beta=x", "adaptive:gamma=1"):
        with pytest.raises(ValueError, match="--sigma"):
            parse_sigma(bad)


@pytest.mark.parametrize("rule", ["fixed:5", "fixed:15", "adaptive:k=3,beta=0.1"])
def test_density_sums_to_count_at_borders(rule):
    density = density_from_points(BORDER_POINTS, (40, 50), rule)
    assert density.dtype == np.float32 and density.shape == (40, 50)
    assert abs(float(density.sum()) - len(BORDER_POINTS)) < 1e-3


def test_corner_head_keeps_its_mass():
    # upstream's gaussian_filter(mode="constant") keeps about a quarter of a corner head; here it keeps all of it
    corner = density_from_points(np.array([[0.0, 0.0]]), (40, 50), "fixed:5")
    assert abs(float(corner.sum()) - 1) < 1e-5 and corner[0, 0] == corner.max()
    assert float(corner[:20, :20].sum()) > 0.999


def test_out_of_bounds_points_dropped_and_empty():
    points = np.array([[5, 5], [50, 5], [-1, 3], [5, 40]])
    assert abs(density_from_points(points, (40, 50)).sum() - 1) < 1e-5
    assert density_from_points(np.zeros((0, 2)), (40, 50), "adaptive").sum() == 0


def test_peak_is_at_the_head_pixel():
    density = density_from_points(np.array([[12.7, 30.2]]), (64, 64), "fixed:3")
    assert np.unravel_index(density.argmax(), density.shape) == (30, 12)


def test_adaptive_sigma_grows_with_spacing():
    tight = np.stack(np.meshgrid(np.arange(5) * 4.0, np.arange(5) * 4.0), -1).reshape(-1, 2) + 50
    loose = tight * 3 - 100
    rule = parse_sigma("adaptive:k=3,beta=0.1")
    assert np.median(head_sigmas(loose, rule)) == pytest.approx(3 * np.median(head_sigmas(tight, rule)))
    # CSRNet's rule: 0.1 * (d1 + d2 + d3); on a grid with spacing 4 an inner head has d = 4, 4, 4
    assert head_sigmas(tight, rule)[12] == pytest.approx(0.1 * 12)
    assert head_sigmas(np.array([[3.0, 4.0]]), rule)[0] == 5.0  # a lone head: the fallback
    assert head_sigmas(np.array([[3.0, 4.0], [3.0, 4.0]]), rule).min() == 0.5  # same spot: the floor


def test_many_heads_sum_to_their_count():
    points = np.random.default_rng(0).uniform([0, 0], [1024, 768], (2000, 2))
    for rule in ("fixed:5", "adaptive:k=3,beta=0.1"):
        density = density_from_points(points, (768, 1024), rule)
        assert abs(float(density.sum()) - 2000) < 1e-2


@pytest.mark.parametrize("shape", [(20, 25), (13, 16), (80, 100), (17, 33), (39, 51), (1, 1)])
def test_resize_preserves_sum(shape):
    density = density_from_points(np.random.default_rng(1).uniform([0, 0], [50, 40], (30, 2)), (40, 50), "fixed:2")
    resized = resize_density(density, shape)
    assert resized.shape == shape and resized.dtype == np.float32
    assert abs(float(resized.sum()) - float(density.sum())) <= 1e-4 * float(density.sum())


def test_resize_downsample_sums_blocks():
    density = np.random.default_rng(2).random((6, 8)).astype(np.float32)
    halved = resize_density(density, (3, 4))
    np.testing.assert_allclose(halved, density.reshape(3, 2, 4, 2).sum(axis=(1, 3)), rtol=1e-5)
    assert downsample_density(np.ones((7, 9)), 2).shape == (3, 4)


def test_attention_target():
    density = density_from_points(np.array([[20, 20]]), (40, 40), "fixed:3")
    mask = attention_target(density)
    assert mask.dtype == np.float32 and set(np.unique(mask)) == {0.0, 1.0}
    assert mask[20, 20] == 1 and mask[0, 0] == 0


def test_game():
    rng = np.random.default_rng(3)
    true = rng.random((37, 53))
    pred = true + rng.normal(0, 0.2, true.shape)
    assert game(pred, true, 0) == pytest.approx(abs(pred.sum() - true.sum()))
    levels = [game(pred, true, level) for level in range(6)]  # 32 x 32 regions on 37 x 53: some are 1 px wide
    assert all(b >= a - 1e-9 for a, b in zip(levels, levels[1:]))
    assert levels[5] <= np.abs(pred - true).sum() + 1e-9
    assert game(true, true, 3) == 0
    with pytest.raises(ValueError):
        game(pred, true[:-1], 1)


def test_count_metrics():
    metrics = count_metrics([10, 12, 20], [12, 12, 16])
    assert metrics["mae"] == pytest.approx(2.0) and metrics["rmse"] == pytest.approx(np.sqrt(20 / 3))
    assert metrics["n"] == 3
    with pytest.raises(ValueError):
        count_metrics([1, 2], [1])


def test_real_annotation_density_sums_to_170():
    points, _ = read_points(shared_file("crowd/SHTA_test_GT_IMG_4.mat"))
    for rule in ("fixed:5", "adaptive:k=3,beta=0.1"):
        density = density_from_points(points, (334, 500), rule)
        assert abs(float(density.sum()) - 170) < 1e-3
        target = downsample_density(density, 2)
        assert target.shape == (167, 250) and abs(float(target.sum()) - 170) < 1e-2
