"""Synthetic crowd scenes (mis.pipelines.count.synthetic): deterministic per seed, counts spread, points inside the
image on visible heads, fast, sample data readable by read_points."""
from __future__ import annotations


import numpy as np
import pytest

from mis.io.image import read_image
from mis.io.points import read_points
from mis.pipelines.count.density import density_from_points
from mis.pipelines.count.synthetic import MIN_HEAD_RADIUS, make_crowd_scene, write_sample_data


def test_deterministic_per_seed_and_different_across_seeds():
    first, again, other = make_crowd_scene(5), make_crowd_scene(5), make_crowd_scene(6)
    np.testing.assert_array_equal(first.image, again.image)
    np.testing.assert_array_equal(first.points, again.points)
    assert not np.array_equal(first.image, other.image)


def test_scene_layout():
    scene = make_crowd_scene(1, height=96, width=128, count=120)
    assert scene.image.shape == (96, 128, 3) and scene.image.dtype == np.uint8
    assert scene.points.shape[1] == 2 and len(scene.points) == len(scene.head_sizes)
    assert 0.9 * 120 <= len(scene.points) <= 120  # heads hidden completely by nearer people are not annotated
    x, y = scene.points.T
    assert (x >= 0).all() and (x < 128).all() and (y >= 0).all() and (y < 96).all()
    assert np.corrcoef(y, scene.head_sizes)[0, 1] > 0.9  # perspective: nearer (lower) heads are larger


def test_counts_spread_with_empty_scenes():
    counts = [len(make_crowd_scene(seed, height=64, width=80).points) for seed in range(30)]
    assert min(counts) == 0 and max(counts) > 300
    assert len(set(counts)) > 20


def test_no_head_too_small_to_resolve():
    """Dense scenes with the horizon in the image used to pile sub-pixel heads at the horizon (drawn larger than
    their perspective size, one visible pixel each): nobody is placed where a head is under 2 px across."""
    scenes = [make_crowd_scene(seed, count=1500) for seed in range(6)]
    assert any(scene.params["horizon"] > 0 for scene in scenes)
    for scene in scenes:
        assert scene.head_sizes.min() >= MIN_HEAD_RADIUS
        assert len(scene.points) >= 0.9 * 1500


def test_empty_and_single_person():
    assert make_crowd_scene(3, count=0).points.shape == (0, 2)
    scene = make_crowd_scene(3, count=1)
    assert len(scene.points) == 1


def test_heads_are_drawn_at_the_points():
    """The annotated pixels differ from the background: a head is there (not just a number in a list)."""
    plain = make_crowd_scene(9, count=0, distractors=False, blur=0, noise=0)
    crowd = make_crowd_scene(9, count=40, distractors=False, blur=0, noise=0)
    columns, rows = crowd.points.astype(int).T
    changed = np.abs(crowd.image.astype(int) - plain.image.astype(int)).sum(axis=-1)[rows, columns]
    assert (changed > 0).mean() > 0.95


def test_sample_data(tmp_path):
    paths = write_sample_data(tmp_path)
    assert [p.name for p in paths] == ["crowd_scene.png", "crowd_scene.json"]
    image, _ = read_image(paths[0])
    points, meta = read_points(paths[1])
    assert len(points) > 100 and meta["stored_count"] == len(points)
    assert abs(float(density_from_points(points, image.shape).sum()) - len(points)) < 1e-2


@pytest.mark.parametrize("bad", [dict(height=8), dict(count=-1)])
def test_bad_arguments(bad):
    with pytest.raises(ValueError):
        make_crowd_scene(0, **bad)
