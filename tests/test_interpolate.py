"""DSA frame interpolation: timing plans, the pipeline's options (encoder once, flow scale, channels), the
files side (pairs, numbered folders, DICOM, NIfTI, bit depths), evaluation, training and the losses."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from contract_cases.interpolate import make_checkpoint, tiny_model
from mis.checkpoints import build_card
from mis.errors import InputError
from mis.pipelines.interpolate.pipeline import InterpolationPipeline, even_times, sequence_plan

runner = CliRunner()
DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "dsa"


def app():
    from mis.cli.main import app as main_app

    return main_app


def pipeline_of(model, bit_depth: int = 8, **options) -> InterpolationPipeline:
    card = build_card("garamost", model.config.to_dict(), task="interpolate", preprocessing={"bit_depth": bit_depth})
    return InterpolationPipeline(model, card, **options)


def moving_pair(shape=(48, 80), shift=3, seed=0):
    rng = np.random.default_rng(seed)
    first = rng.random(shape).astype(np.float32)
    return first, np.roll(first, shift, axis=1)


def write_frames(folder: Path, frames: np.ndarray, pattern: str = "frame_{:03d}.png") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for k, frame in enumerate(frames, start=1):
        Image.fromarray(frame).save(folder / pattern.format(k))
    return folder


def sequence(count=4, shape=(48, 64), dtype=np.uint8, seed=1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    top = np.iinfo(dtype).max
    base = rng.random(shape)
    return np.stack([(np.roll(base, k, axis=1) * top).astype(dtype) for k in range(count)])


# ---- plans ------------------------------------------------------------------------------------------------
def test_factor_times_and_fps_plans():
    assert even_times(3) == (0.25, 0.5, 0.75)
    assert sequence_plan(3, factor=2) == [(0, 0.0), (0, 0.5), (1, 0.0), (1, 0.5), (2, 0.0)]
    assert sequence_plan(2, times=(0.7, 0.2)) == [(0, 0.0), (0, 0.2), (0, 0.7), (1, 0.0)]
    # 8 frames at 15 fps (66.67 ms) to 30 fps: 15 frames, every other one new
    plan = sequence_plan(8, fps=30, frame_time_ms=1000 / 15)
    assert len(plan) == 15 and [t for _, t in plan[:3]] == pytest.approx([0.0, 0.5, 0.0])
    # 10 fps -> 25 fps: non-integer ratio, every output time on the input time line
    plan = sequence_plan(3, fps=25, frame_time_ms=100)
    assert [i + t for i, t in plan] == pytest.approx([0, 0.4, 0.8, 1.2, 1.6, 2.0])


def test_plans_refuse_what_cannot_be_done():
    with pytest.raises(InputError, match="one frame"):
        sequence_plan(1, factor=2, source="seq")
    with pytest.raises(InputError, match="frame rate of this sequence is unknown"):
        sequence_plan(4, fps=30, frame_time_ms=None, source="seq")
    with pytest.raises(InputError, match="strictly between 0 and 1"):
        sequence_plan(4, times=(0.5, 1.0), source="seq")


# ---- the pipeline -------------------------------------------------------------------------------------------
def test_encoder_once_per_pair_gives_the_frames_of_once_per_frame():
    model = tiny_model()
    once = pipeline_of(model)(*moving_pair(), even_times(3)).frames
    each = pipeline_of(model, reuse_encoder=False)(*moving_pair(), even_times(3)).frames
    np.testing.assert_allclose(once, each, atol=1e-5)
    assert not np.allclose(once[0], once[2], atol=1e-3), "the timestep must change the frame"


def test_an_untrained_demo_network_starts_as_linear_blending_also_with_a_flow_scale():
    from mis.models.garamost import GaraMoSt, GaraMoStConfig

    torch.manual_seed(0)
    model = GaraMoSt(GaraMoStConfig.demo())
    first, second = moving_pair((64, 96))
    for scale in (1.0, 0.5):
        frames = pipeline_of(model, flow_scale=scale)(first, second, (0.3, 0.5)).frames
        for frame, t in zip(frames, (0.3, 0.5)):
            np.testing.assert_allclose(frame, (1 - t) * first + t * second, atol=2e-3)


def test_flow_scale_runs_the_network_on_smaller_frames_and_keeps_the_frame_size():
    model = tiny_model()
    seen = []
    handle = model.feature_bone.register_forward_hook(lambda m, i, out: seen.append(tuple(i[0].shape[-2:])))
    try:
        first, second = moving_pair((128, 192), shift=1)
        half = pipeline_of(model, flow_scale=0.5)(first, second).frames
    finally:
        handle.remove()
    assert seen == [(64, 96)]
    assert half.shape == (1, 128, 192) and np.isfinite(half).all() and 0 <= half.min() <= half.max() <= 1


def test_grayscale_into_a_three_channel_network_and_colour_into_a_grayscale_one():
    first, second = moving_pair()
    frames = pipeline_of(tiny_model(in_chans=3))(first, second).frames
    assert frames.shape == (1, *first.shape)
    colour = np.stack([first, second, first], axis=-1)
    out = pipeline_of(tiny_model(in_chans=3))(colour, colour).frames
    assert out.shape == (1, *colour.shape)
    with pytest.raises(InputError, match="colour frames"):
        pipeline_of(tiny_model())(colour, colour, source="c.png")


@pytest.mark.parametrize("second, problem", [
    (np.zeros((48, 64), np.float32), "differ in size"),
    (np.full((48, 80), np.nan, np.float32), "NaN"),
])
def test_bad_pairs_are_input_errors_naming_the_source(second, problem):
    first = np.zeros((48, 80), np.float32)
    with pytest.raises(InputError, match=problem) as caught:
        pipeline_of(tiny_model())(first, second, source="pair.png")
    assert "pair.png" in str(caught.value)
    with pytest.raises(InputError, match="too small"):
        pipeline_of(tiny_model())(np.zeros((8, 8), np.float32), np.zeros((8, 8), np.float32))


def test_a_sequence_is_the_pairs_interpolated_one_by_one_whatever_the_batch():
    frames = sequence(4).astype(np.float32) / 255
    plan = sequence_plan(4, factor=3)
    for batch_size in (1, 2):
        pipe = pipeline_of(tiny_model(), batch_size=batch_size)
        out = np.stack(list(pipe.iter_sequence(frames, plan)))
        assert out.shape == (10, 48, 64)
        np.testing.assert_array_equal(out[::3], frames)
        np.testing.assert_allclose(out[4:6], pipe(frames[1], frames[2], (1 / 3, 2 / 3)).frames, atol=1e-5)


# ---- files ----------------------------------------------------------------------------------------------
def test_two_images_give_the_new_frames_named_by_their_timestep(tmp_path):
    checkpoint = make_checkpoint(tmp_path)
    stored = sequence(2)
    for k, name in enumerate(("a.png", "b.png")):
        Image.fromarray(stored[k]).save(tmp_path / name)
    result = runner.invoke(app(), ["interpolate", str(tmp_path / "a.png"), str(tmp_path / "b.png"), "-n", "3",
                                   "--model", str(checkpoint), "-o", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == ["a_b_t0.250.png", "a_b_t0.500.png", "a_b_t0.750.png"]
    frame = np.asarray(Image.open(tmp_path / "out" / names[1]))
    assert frame.dtype == np.uint8 and frame.shape == stored[0].shape


def test_sixteen_bit_frames_need_a_sixteen_bit_model_and_stay_sixteen_bit(tmp_path):
    folder = write_frames(tmp_path / "seq16", sequence(3, dtype=np.uint16))
    eight = make_checkpoint(tmp_path, bit_depth=8)
    result = runner.invoke(app(), ["interpolate", str(folder), "--model", str(eight), "-o", str(tmp_path / "o8")])
    assert result.exit_code == 1 and "16-bit frames, but this model was trained on 8-bit" in result.stderr
    assert not any((tmp_path / "o8").rglob("*.png"))
    sixteen = make_checkpoint(tmp_path, bit_depth=16)
    result = runner.invoke(app(), ["interpolate", str(folder), "--model", str(sixteen), "-o", str(tmp_path / "o16")])
    assert result.exit_code == 0, result.output
    written = sorted((tmp_path / "o16" / "seq16_interp").iterdir())
    assert len(written) == 5
    assert np.asarray(Image.open(written[1])).dtype == np.uint16
    np.testing.assert_array_equal(np.asarray(Image.open(written[2])), sequence(3, dtype=np.uint16)[1])


def test_a_numbered_folder_gets_the_new_frames_in_place_and_the_acquired_ones_unchanged(tmp_path):
    stored = sequence(4)
    folder = write_frames(tmp_path / "run", stored, "IM0_{:02d}.png")
    checkpoint = make_checkpoint(tmp_path)
    result = runner.invoke(app(), ["--json", "interpolate", str(folder), "--factor", "3", "--preview",
                                   "--model", str(checkpoint), "-o", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    out = tmp_path / "out" / "run_interp"
    written = sorted(out.glob("IM0_*.png"))
    assert len(written) == 10 and report["items"][0]["frames_out"] == 10
    for k in range(4):
        np.testing.assert_array_equal(np.asarray(Image.open(written[3 * k])), stored[k])
    assert Image.open(tmp_path / "out" / "run_interp_preview.gif").n_frames == 10


@pytest.mark.skipif(not (DATA / "phantom_xa_IM8.dcm").exists(), reason="real DICOM fixture not present")
def test_a_multiframe_dicom_becomes_a_new_series_with_the_frame_time_updated(tmp_path):
    import pydicom

    checkpoint = make_checkpoint(tmp_path)
    result = runner.invoke(app(), ["interpolate", str(DATA / "phantom_xa_IM8.dcm"), "--fps", "30",
                                   "--model", str(checkpoint), "-o", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    source = pydicom.dcmread(DATA / "phantom_xa_IM8.dcm", stop_before_pixels=True)
    written = pydicom.dcmread(tmp_path / "out" / "phantom_xa_IM8_interp.dcm")
    assert int(written.NumberOfFrames) == 15
    assert float(written.FrameTime) == pytest.approx(1000 / 30, abs=0.01)
    assert written.SeriesInstanceUID != source.SeriesInstanceUID and written.SOPInstanceUID != source.SOPInstanceUID
    assert written.PatientName == source.PatientName and written.StudyInstanceUID == source.StudyInstanceUID
    pixels = written.pixel_array
    original = pydicom.dcmread(DATA / "phantom_xa_IM8.dcm").pixel_array
    np.testing.assert_array_equal(pixels[::2], original)


@pytest.mark.skipif(not (DATA / "phantom_xa_IM8.dcm").exists(), reason="real DICOM fixture not present")
def test_uneven_times_are_written_as_a_frame_time_vector(tmp_path):
    """--times 0.25 puts a frame a quarter into each gap: the DICOM says so frame by frame (FrameTimeVector, pointed
    to by FrameIncrementPointer), not with one FrameTime that would play it at a regular rate."""
    import pydicom

    checkpoint = make_checkpoint(tmp_path)
    result = runner.invoke(app(), ["--json", "interpolate", str(DATA / "phantom_xa_IM8.dcm"), "--times", "0.25",
                                   "--model", str(checkpoint), "-o", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    written = pydicom.dcmread(tmp_path / "out" / "phantom_xa_IM8_interp.dcm", stop_before_pixels=True)
    assert int(written.NumberOfFrames) == 15 and "FrameTime" not in written
    assert written.FrameIncrementPointer == pydicom.tag.Tag(0x0018, 0x1065)
    vector = [float(v) for v in written.FrameTimeVector]
    period = 66.6667
    np.testing.assert_allclose(vector, [0.0] + [period / 4, period * 3 / 4] * 7, rtol=1e-5)
    assert sum(vector) == pytest.approx(7 * period, rel=1e-5)            # the run lasts as long as the acquired one
    item = json.loads(result.stdout)["items"][0]
    assert item["frame_times_uneven"] is True and item["frame_time_ms"] == pytest.approx(7 * period / 14, abs=1e-3)
    even = runner.invoke(app(), ["interpolate", str(DATA / "phantom_xa_IM8.dcm"), "--times", "0.5",
                                 "--model", str(checkpoint), "-o", str(tmp_path / "even")])
    assert even.exit_code == 0, even.output
    written = pydicom.dcmread(tmp_path / "even" / "phantom_xa_IM8_interp.dcm", stop_before_pixels=True)
    assert float(written.FrameTime) == pytest.approx(period / 2, abs=1e-3) and "FrameTimeVector" not in written


def test_a_nifti_sequence_round_trips_with_its_time_step(tmp_path):
    import nibabel as nib

    frames = sequence(3)                                         # [T, H, W]
    image = nib.Nifti1Image(np.ascontiguousarray(frames.transpose(2, 1, 0)), np.eye(4))   # (x, y, t)
    image.header.set_xyzt_units("mm", "msec")
    image.header["pixdim"][4] = 100.0
    nib.save(image, tmp_path / "cine.nii.gz")
    checkpoint = make_checkpoint(tmp_path)
    result = runner.invoke(app(), ["interpolate", str(tmp_path / "cine.nii.gz"), "--model", str(checkpoint),
                                   "-o", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    written = nib.load(tmp_path / "out" / "cine_interp.nii.gz")
    assert written.shape[-1] == 5
    assert float(written.header["pixdim"][4]) == pytest.approx(50.0)
    np.testing.assert_array_equal(np.asarray(written.dataobj)[..., 2], frames[1].T)


def test_evaluate_scores_the_model_and_both_baselines_per_inserted_index(tmp_path):
    from mis.pipelines.interpolate.synthetic import make_sequence

    synthetic = make_sequence(3, kind="xca", size=(64, 64), frames=9).frames
    folder = write_frames(tmp_path / "syn", np.round(synthetic * 255).astype(np.uint8))
    checkpoint = make_checkpoint(tmp_path)
    result = runner.invoke(app(), ["--json", "evaluate", "interpolate", str(folder), "--drop", "3",
                                   "--model", str(checkpoint)])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    case = report["cases"][0]
    assert report["times"] == [0.25, 0.5, 0.75] and case["gaps"] == 2
    assert [row["index"] for row in case["per_index"]] == [1, 2, 3]
    for method in ("model", "linear", "nearest"):
        assert np.isfinite(report["mean"][f"{method}_psnr"]) and 0 < report["mean"][f"{method}_ssim"] <= 1
    # the middle frame is further from both inputs: the nearest frame scores worst there
    assert case["per_index"][1]["nearest_psnr"] < case["per_index"][0]["nearest_psnr"]


# ---- training -------------------------------------------------------------------------------------------------
def test_a_short_training_run_writes_a_checkpoint_the_pipeline_loads(tmp_path):
    from contract_cases.interpolate import tiny_config
    from mis.pipelines.interpolate.train import InterpolateTrainOptions, train_interpolate

    options = InterpolateTrainOptions(out=tmp_path / "run", network=tiny_config(), steps=3, batch_size=2, crop=64,
                                      synthetic=2, synthetic_size=96, val_clips=2, validate_every=3, warmup=1,
                                      progress=False)
    result = train_interpolate([], options)
    pipeline = InterpolationPipeline.from_checkpoint(result["checkpoint"])
    metrics = pipeline.card["metrics"]
    assert np.isfinite(metrics["val_psnr"]) and np.isfinite(metrics["linear_val_psnr"])
    assert pipeline.card["preprocessing"] == {"bit_depth": 8}
    assert pipeline(*moving_pair()).frames.shape == (1, 48, 80)


def test_the_losses_see_blur_and_edges_but_not_brightness():
    from mis.pipelines.interpolate.losses import census_loss, laplacian_l1

    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.random((1, 1, 64, 64)).astype(np.float32))
    blurred = torch.nn.functional.avg_pool2d(x, 3, stride=1, padding=1)
    assert laplacian_l1(x, x) == 0 and laplacian_l1(blurred, x) > 0.05
    assert census_loss(x, x) == 0
    assert census_loss(x + 0.1, x) < 1e-6 < census_loss(torch.roll(x, 2, dims=-1), x)


def test_several_sequences_in_one_run_and_a_rerun(tmp_path):
    checkpoint = make_checkpoint(tmp_path)
    first = write_frames(tmp_path / "in" / "a", sequence(3, seed=1))
    second = write_frames(tmp_path / "in" / "b", sequence(4, seed=2))
    args = ["interpolate", str(first), str(second), "--model", str(checkpoint), "-o", str(tmp_path / "out")]
    assert runner.invoke(app(), args).exit_code == 0
    assert len(list((tmp_path / "out" / "a_interp").iterdir())) == 5
    assert len(list((tmp_path / "out" / "b_interp").iterdir())) == 7
    again = runner.invoke(app(), ["--json", *args])
    assert again.exit_code == 1 and "output exists" in again.stderr
    skipped = runner.invoke(app(), ["--json", *args, "--skip-existing"])
    assert skipped.exit_code == 0 and json.loads(skipped.stdout)["skipped"] == 2
    assert runner.invoke(app(), [*args, "--overwrite"]).exit_code == 0


def test_fps_at_a_non_integer_ratio_keeps_the_acquired_frames_it_meets(tmp_path):
    import pydicom

    from bad_inputs import multiframe_dicom

    stored = sequence(10, shape=(32, 48))
    source = multiframe_dicom(tmp_path / "1.2.840.99.7.dcm", stored)       # 66.67 ms, a UID-style name with dots
    checkpoint = make_checkpoint(tmp_path)
    result = runner.invoke(app(), ["interpolate", str(source), "--fps", "25", "--model", str(checkpoint),
                                   "-o", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    written = pydicom.dcmread(tmp_path / "out" / "1.2.840.99.7_interp.dcm")
    assert int(written.NumberOfFrames) == 16 and float(written.FrameTime) == pytest.approx(40.0)
    np.testing.assert_array_equal(written.pixel_array[[0, 5, 10, 15]], stored[[0, 3, 6, 9]])  # t = 0, 0.2 s, ...


def test_an_output_file_of_another_format_and_a_half_existing_pair_are_refused(tmp_path):
    checkpoint = make_checkpoint(tmp_path)
    folder = write_frames(tmp_path / "seq", sequence(3))
    result = runner.invoke(app(), ["interpolate", str(folder), "--model", str(checkpoint), "-o", str(tmp_path / "x.dcm")])
    assert result.exit_code == 1 and "is not the input's format" in result.stderr
    assert not (tmp_path / "x.dcm").exists()
    stored = sequence(2)
    for k, name in enumerate(("a.png", "b.png")):
        Image.fromarray(stored[k]).save(tmp_path / name)
    pair = ["interpolate", str(tmp_path / "a.png"), str(tmp_path / "b.png"), "--model", str(checkpoint),
            "-o", str(tmp_path / "out")]
    assert runner.invoke(app(), [*pair, "-n", "1"]).exit_code == 0                     # a_b_t0.500.png
    result = runner.invoke(app(), [*pair, "--times", "0.25,0.5"])
    assert result.exit_code == 1 and "a_b_t0.500.png: output exists" in result.stderr
    assert not (tmp_path / "out" / "a_b_t0.250.png").exists()
    assert runner.invoke(app(), [*pair, "--times", "0.5,0.5"]).exit_code == 2
