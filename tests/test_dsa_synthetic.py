"""Synthetic DSA / coronary angiography sequences: determinism, shapes, Murray's law, bolus timing, motion, and
statistics against the real frames in ../shared/data/dsa (those parts skip when the data is absent)."""
from __future__ import annotations

import time
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

from conftest import shared_file
from mis.pipelines.interpolate.synthetic import (ARTERY, DEFAULT_FPS, SAMPLE_SEED, VEIN, SyntheticSequence,
                                                 _draw_scene, _render_frames, _vessel_line_integral,
                                                 _window_start, make_sequence, training_clip, write_sample_data)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of two frames on the same scale ([0, 1] or grey levels, peak taken from the scale)."""
    peak = 1.0 if max(a.max(), b.max()) <= 1.0 else 255.0
    mse = np.mean((a.astype(float) - b.astype(float)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(peak ** 2 / mse))


def motion_statistics(frames: np.ndarray) -> tuple[float, float]:
    """(median consecutive-frame mean absolute difference, median PSNR(i, i + 2)) in grey levels / dB."""
    grey = frames.astype(float) * (255.0 if frames.max() <= 1.0 else 1.0)
    mad = np.abs(np.diff(grey, axis=0)).mean(axis=(1, 2))
    skip2 = [psnr(grey[i], grey[i + 2]) for i in range(len(grey) - 2)]
    return float(np.median(mad)), float(np.median(skip2))


def test_same_seed_gives_the_same_sequence_and_another_seed_a_different_one():
    for kind in ("dsa", "xca"):
        a = make_sequence(7, kind=kind, size=(48, 48), frames=3)
        b = make_sequence(7, kind=kind, size=(48, 48), frames=3)
        c = make_sequence(8, kind=kind, size=(48, 48), frames=3)
        assert np.array_equal(a.frames, b.frames) and np.array_equal(a.times, b.times)
        assert not np.array_equal(a.frames, c.frames)
    clips = [training_clip(np.random.default_rng(3), size=(48, 48)) for _ in range(2)]
    assert np.array_equal(*clips)
    assert not np.array_equal(clips[0], training_clip(np.random.default_rng(4), size=(48, 48)))


def test_shapes_dtype_range_and_timing_of_the_frames():
    sequence = make_sequence(1, kind="xca", size=(40, 56), frames=5)
    assert isinstance(sequence, SyntheticSequence)
    assert sequence.frames.shape == (5, 40, 56) and sequence.frames.dtype == np.float32
    assert sequence.frames.min() >= 0.0 and sequence.frames.max() <= 1.0
    grey = sequence.frames * 255
    assert np.allclose(grey, np.round(grey), atol=1e-4)                  # quantised to 8 bits
    assert sequence.kind == "xca" and sequence.fps == DEFAULT_FPS["xca"]
    assert sequence.times.dtype == np.float64
    assert np.allclose(np.diff(sequence.times), 1 / DEFAULT_FPS["xca"])
    assert make_sequence(1, kind="dsa", size=(32, 32), frames=2, fps=6.0).fps == 6.0
    clip = training_clip(np.random.default_rng(0), size=(32, 48), inter_frames=3, kind="dsa")
    assert clip.shape == (5, 32, 48) and clip.dtype == np.float32 and 0 <= clip.min() and clip.max() <= 1
    for bad in ({"kind": "ct"}, {"size": (8, 8)}, {"frames": 0}, {"fps": 0.0}):
        with pytest.raises(ValueError):
            make_sequence(0, **bad)
    with pytest.raises(ValueError):
        training_clip(np.random.default_rng(0), inter_frames=-1)


@pytest.mark.parametrize("kind", ["dsa", "xca"])
def test_murrays_law_holds_at_every_bifurcation(kind):
    bifurcations = 0
    for seed in range(3):
        scene = _draw_scene(np.random.default_rng(seed), kind, (128, 128))
        for tree in (scene.arteries, scene.veins):
            for parent, children in tree.bifurcations():
                assert len(children) == 2
                assert parent.radius ** 3 == pytest.approx(sum(c.radius ** 3 for c in children), rel=1e-9)
                parent_length = np.hypot(*np.diff(parent.points[:, :2], axis=0).T).sum()
                for child in children:
                    assert np.allclose(child.points[0], parent.points[-1])               # connected
                    assert child.path_start == pytest.approx(parent.path_start + parent_length)
                bifurcations += 1
    assert bifurcations > 30


@pytest.mark.parametrize("kind", ["dsa", "xca"])
def test_the_bolus_fills_the_arteries_before_the_veins(kind):
    scene = _draw_scene(np.random.default_rng(5), kind, (128, 128))
    scene = replace(scene, motion_scale=0.0)             # still, so the vessel masks hold in every frame
    arteries = _vessel_line_integral(scene, 0.0, roles=(ARTERY,), full_contrast=True)
    veins = _vessel_line_integral(scene, 0.0, roles=(VEIN,), full_contrast=True)
    arterial = (arteries > 0.3 * arteries.max()) & (veins == 0)
    venous = (veins > 0.3 * veins.max()) & (arteries == 0)
    assert arterial.sum() > 20 and venous.sum() > 20
    times = np.arange(-1.0, scene.bolus.phases()["venous"][1] + 1.0, 0.25)
    frames = _render_frames(scene, times, np.random.default_rng(0))
    darkening = frames[0] - frames                      # frame 0 is before the injection
    arterial_curve, venous_curve = darkening[:, arterial].mean(1), darkening[:, venous].mean(1)
    half_arterial = times[np.argmax(arterial_curve > 0.5 * arterial_curve.max())]
    half_venous = times[np.argmax(venous_curve > 0.5 * venous_curve.max())]
    print(f"{kind}: arteries half-filled at {half_arterial:.2f} s, veins at {half_venous:.2f} s")
    assert half_arterial + 1.0 < half_venous
    assert times[np.argmax(arterial_curve)] < times[np.argmax(venous_curve)]


def test_coronary_motion_at_the_default_rate_is_like_the_real_cine():
    stats = np.array([motion_statistics(make_sequence(seed, kind="xca", frames=9).frames) for seed in range(3)])
    print("synthetic XCA per seed (MAD, PSNR(i, i+2)):", stats.round(2).tolist())
    assert np.all((3.0 <= stats[:, 0]) & (stats[:, 0] <= 15.0))
    assert np.all((19.0 <= stats[:, 1]) & (stats[:, 1] <= 32.0))
    folder = shared_file("dsa/xca_vukicevic_sample2/projection0")
    real = np.stack([np.asarray(Image.open(folder / f"IM0_{k:02d}.jpg")) for k in range(1, 38)])
    real_mad, real_skip2 = motion_statistics(real)
    mad, skip2 = np.median(stats, axis=0)
    print(f"real XCA: MAD {real_mad:.2f}, PSNR(i, i+2) {real_skip2:.2f} dB; synthetic: {mad:.2f}, {skip2:.2f} dB")
    assert 0.5 * real_mad <= mad <= 2.0 * real_mad
    assert abs(skip2 - real_skip2) <= 5.0


def _arterial_dsa_frame(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A DSA frame at the arterial peak (grey levels) and its exact iodine map."""
    rng = np.random.default_rng(seed)
    scene = _draw_scene(rng, "dsa", (128, 128))
    t = scene.bolus.alpha * scene.bolus.beta + 0.5
    return _render_frames(scene, [t], rng)[0] * 255, _vessel_line_integral(scene, t)


def test_dsa_vessels_are_darker_than_the_background():
    for seed in range(3):
        frame, iodine = _arterial_dsa_frame(seed)
        vessels, background = iodine > 0.3 * iodine.max(), iodine < 1e-3 * iodine.max()
        assert frame[vessels].mean() < frame[background].mean() - 40


def test_dsa_background_is_as_bright_as_the_real_demo_frame():
    real = np.asarray(Image.open(shared_file("dsa/DSA_a.png")))[..., 0].astype(float)
    content = real[real.mean(axis=1) > 0]                # drop the black letterbox rows
    backgrounds = []
    for seed in range(3):
        frame, iodine = _arterial_dsa_frame(seed)
        backgrounds.append(frame[iodine < 1e-3 * iodine.max()].mean())
    print(f"real DSA content mean {content.mean():.1f}; synthetic backgrounds {np.round(backgrounds, 1)}")
    assert np.all(np.abs(np.array(backgrounds) - content.mean()) < 25)


@pytest.mark.parametrize("kind, size, scenes", [("dsa", 128, 6), ("xca", 160, 3)])
def test_linear_blending_misses_the_middle_frame_more_as_motion_grows(kind, size, scenes):
    """Blending frames 0 and 2 (default rate) is close to frame 1, up to noise and bolus change, when nothing
    moves; motion is what makes the middle frame hard to guess."""
    errors = {0.0: [], 1.0: [], 2.0: []}
    for seed in range(scenes):
        rng = np.random.default_rng(seed)
        scene = _draw_scene(rng, kind, (size, size))
        times = _window_start(rng, scene, 2 / DEFAULT_FPS[kind]) + np.arange(3) / DEFAULT_FPS[kind]
        for scale in errors:
            frames = _render_frames(replace(scene, motion_scale=scale), times, np.random.default_rng(seed))
            assert psnr(frames[1], frames[1]) == np.inf
            errors[scale].append(np.mean(((frames[0] + frames[2]) / 2 - frames[1]) ** 2))
    blend = {scale: float(10 * np.log10(1 / np.mean(mse))) for scale, mse in errors.items()}
    print(f"{kind}: PSNR of linear blending vs the middle frame by motion scale", blend)
    assert blend[0.0] > blend[1.0] > blend[2.0]
    assert blend[0.0] > blend[2.0] + 1.5
    if kind == "xca":                # at the cine rate the heart's motion, not noise, dominates the blend error
        assert blend[0.0] > blend[1.0] + 1.0


def test_training_clips_are_fast():
    rng = np.random.default_rng(0)
    training_clip(rng)                                   # warm-up (imports, FFT plans)
    start = time.perf_counter()
    for _ in range(4):
        clip = training_clip(rng)
    seconds = (time.perf_counter() - start) / 4
    print(f"training_clip at 192x192 with 1 middle frame: {seconds * 1000:.0f} ms per clip")
    assert clip.shape == (3, 192, 192)
    assert seconds < 1.0


def test_sample_data_is_a_numbered_8_bit_png_sequence(tmp_path):
    paths = write_sample_data(tmp_path)
    assert [p.name for p in paths] == [f"frame_{k:03d}.png" for k in range(1, 10)]
    assert all(p.parent == tmp_path / "dsa" / "sequence" for p in paths)
    first = Image.open(paths[0])
    assert first.mode == "L" and first.size == (256, 256)
    expected = make_sequence(SAMPLE_SEED, kind="dsa", size=(256, 256), frames=9).frames
    assert np.array_equal(np.asarray(first), np.round(expected[0] * 255).astype(np.uint8))
