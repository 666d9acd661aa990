"""Crowd counting: tiling that keeps the count, the CLI's outputs (density, overlay, CSV), image kinds (EXIF, gray,
16-bit), bad inputs, evaluation against the real ShanghaiTech sample, a short training run with resume, and the
import of upstream-style weights."""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from conftest import shared_file
from contract_cases.count import make_checkpoint
from mis.checkpoints import build_card
from mis.models.sfanet import SFANet, SFANetConfig
from mis.pipelines.count.pipeline import CountPipeline, preprocessing_for
from mis.pipelines.count.synthetic import make_crowd_scene

runner = CliRunner()


def app():
    from mis.cli.main import app as main_app

    return main_app


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("count_ckpt"))


class LocalNetwork(torch.nn.Module):
    """A stand-in whose output depends only on a 2x2 block of its input (no context): tiled and whole-image passes
    must then agree exactly, which isolates the stitching from what a network sees across tile borders."""

    def __init__(self):
        super().__init__()
        self.config = SFANetConfig.demo(width=0.125)

    def forward(self, x):
        pooled = torch.nn.functional.avg_pool2d(x.mean(dim=1, keepdim=True), 2)
        return torch.relu(pooled + 2.0) * 1e-3, torch.sigmoid(pooled)


def local_pipeline(**options) -> CountPipeline:
    card = build_card("sfanet", SFANetConfig.demo(width=0.125).to_dict(), task="count",
                      preprocessing={**preprocessing_for(3), "density_scale": 1.0})
    return CountPipeline(LocalNetwork(), card, **options)


@pytest.mark.parametrize("size", [(200, 300), (157, 211), (64, 520)])
def test_tiles_keep_the_count_and_the_map(size):
    image = make_crowd_scene(5, height=size[0], width=size[1]).image
    whole = local_pipeline(tile=1024)(image)
    tiled = local_pipeline(tile=64, overlap=16)(image)
    assert len(local_pipeline(tile=64, overlap=16).layout(*size)[2]) > 4       # really tiled
    assert tiled.count == pytest.approx(whole.count, rel=1e-5)
    np.testing.assert_allclose(tiled.density, whole.density, rtol=1e-4, atol=1e-9)
    assert tiled.density.shape == size and abs(tiled.density.sum() - tiled.count) < 1e-3 * max(1, tiled.count)


def test_gray_and_16_bit_images_count_as_their_8_bit_rgb(checkpoint):
    pipeline = CountPipeline.from_checkpoint(checkpoint)
    rgb = make_crowd_scene(2, height=96, width=128).image
    gray = rgb.mean(axis=2).round().astype(np.uint8)
    as_rgb = pipeline(np.repeat(gray[..., None], 3, axis=2)).count
    assert pipeline(gray).count == pytest.approx(as_rgb, rel=1e-6)
    sixteen = gray.astype(np.uint16) * 257
    assert pipeline(sixteen).count == pytest.approx(as_rgb, rel=1e-4)


def test_nan_and_tiny_images_are_refused_with_the_source_named(checkpoint):
    from mis.errors import InputError

    pipeline = CountPipeline.from_checkpoint(checkpoint)
    with pytest.raises(InputError, match="frame.png.*NaN"):
        pipeline(np.full((40, 40), np.nan, np.float32), source="frame.png")
    with pytest.raises(InputError, match="dot.png.*too small"):
        pipeline(np.zeros((1, 1, 3), np.uint8), source="dot.png")


def test_cli_writes_density_overlay_and_csv_and_goes_past_bad_files(tmp_path, checkpoint):
    folder = tmp_path / "frames"
    folder.mkdir()
    for k in range(3):
        Image.fromarray(make_crowd_scene(k, height=96, width=128).image).save(folder / f"frame_{k:03d}.png")
    Image.fromarray(np.zeros((1, 1, 3), np.uint8)).save(folder / "frame_dot.png")
    rgba = np.zeros((40, 40, 4), np.uint8)
    Image.fromarray(rgba).save(folder / "frame_rgba.png")                 # fully transparent: refused
    raw = (folder / "frame_000.png").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(raw[:200])
    (tmp_path / "notes.png").write_text("not an image")
    out = tmp_path / "out"
    result = runner.invoke(app(), ["--json", "count", str(folder), str(tmp_path / "cut.jpg"),
                                   str(tmp_path / "notes.png"), "--model", str(checkpoint), "-o", str(out),
                                   "--csv", str(tmp_path / "counts.csv")])
    assert result.exit_code == 1 and "Traceback" not in result.output
    report = json.loads(result.stdout)
    done = [item for item in report["items"] if item["status"] == "done"]
    assert len(done) == 3 and report["failed"] == 4
    for item in done:
        density = np.load(item["target"])
        image = np.asarray(Image.open(item["source"]))
        assert density.shape == image.shape[:2] and density.sum() == pytest.approx(item["count"], abs=0.01)
        overlay = np.asarray(Image.open(item["overlay"]))
        assert overlay.shape == image.shape and overlay.dtype == np.uint8
    written = sorted(p.name for p in out.iterdir())
    assert written == sorted([f"frame_{k:03d}_density.npy" for k in range(3)] +
                             [f"frame_{k:03d}_overlay.png" for k in range(3)])
    rows = list(csv.DictReader(open(tmp_path / "counts.csv")))
    assert len(rows) == 7 and {r["status"] for r in rows} == {"done", "failed"}
    errors = [line for line in result.stderr.splitlines() if line.startswith(("error", "failed"))]
    for name in ("frame_dot.png", "frame_rgba.png", "cut.jpg", "notes.png"):
        assert sum(name in line for line in errors) == 1, result.stderr


def test_exif_orientation_is_applied_before_counting(tmp_path, checkpoint):
    image = make_crowd_scene(4, height=96, width=128).image
    upright = tmp_path / "upright.jpg"
    Image.fromarray(image).save(upright, quality=95)
    rotated = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6                                   # display = stored rotated 90 degrees clockwise
    Image.fromarray(np.rot90(image, 1).copy()).save(rotated, quality=95, exif=exif)
    result = runner.invoke(app(), ["--json", "count", str(upright), str(rotated), "--model", str(checkpoint),
                                   "-o", str(tmp_path / "out"), "--no-overlay"])
    assert result.exit_code == 0, result.output
    shapes = {Path(i["source"]).name: np.load(i["target"]).shape for i in json.loads(result.stdout)["items"]}
    assert shapes["rotated.jpg"] == shapes["upright.jpg"] == (96, 128)


def test_evaluate_on_the_real_shanghaitech_sample_and_a_synthetic_scene(tmp_path, checkpoint):
    from mis.io.points import write_points_json

    image = shared_file("crowd/SHTA_test_IMG_4.jpg")
    scene = make_crowd_scene(8, height=96, width=128)
    Image.fromarray(scene.image).save(tmp_path / "scene.png")
    write_points_json(tmp_path / "scene.json", scene.points)
    (tmp_path / "nopoints.png").write_bytes((tmp_path / "scene.png").read_bytes())
    result = runner.invoke(app(), ["--json", "evaluate", "count", str(image), str(tmp_path / "scene.png"),
                                   str(tmp_path / "nopoints.png"), "--model", str(checkpoint)])
    assert result.exit_code == 1                                          # nopoints.png: no annotation
    report = json.loads(result.stdout)
    cases = {c["file"]: c for c in report["cases"]}
    assert cases["SHTA_test_IMG_4.jpg"]["true_count"] == 170
    assert cases["scene.png"]["true_count"] == len(scene.points)
    for case in cases.values():
        assert case["game0"] == pytest.approx(abs(case["error"]), rel=1e-4, abs=1e-3)
        assert case["game0"] <= case["game1"] + 1e-6 <= case["game2"] + 2e-6 <= case["game3"] + 3e-6
    errors = np.array([c["error"] for c in cases.values()])
    assert report["mean"]["mae"] == pytest.approx(np.abs(errors).mean(), abs=0.01)     # JSON keeps 2 decimals
    assert report["mean"]["rmse"] == pytest.approx(np.sqrt((errors ** 2).mean()), abs=0.01)
    assert any("nopoints.png" in e["error"] for e in report["errors"])


def test_training_learns_resumes_and_records_its_recipe(tmp_path):
    args = ["train", "count", "--variant", "m-segnet", "--crop", "64", "--batch", "2", "--synthetic", "4",
            "--val-scenes", "3", "--density-activation", "relu", "--ema-decay", "0.9", "--validate-every", "2",
            "--count-weight", "1", "--count-loss", "l2", "-o", str(tmp_path / "run")]
    result = runner.invoke(app(), args + ["--steps", "2"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app(), args + ["--steps", "4", "--resume"])
    assert result.exit_code == 0, result.output
    from mis.checkpoints import load_checkpoint, read_card

    card = read_card(tmp_path / "run" / "model.safetensors")
    assert card["config"]["variant"] == "m-segnet" and card["preprocessing"]["density_scale"] == 100.0
    assert card["config"]["density_activation"] == "relu" and card["metrics"]["val_scenes"] == 3
    assert card["training"]["ema_decay"] == 0.9 and card["training"]["count_loss"] == "l2"
    assert card["training"]["steps"] == 4 and card["metrics"]["val_mae"] is not None
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] == 4 and all(np.isfinite(r["loss"]) for r in rows if "loss" in r)

    # --keep last on the finished run trains nothing more and writes the last step's moving average
    result = runner.invoke(app(), args + ["--steps", "4", "--resume", "--keep", "last"])
    assert result.exit_code == 0, result.output
    last = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    model, card = load_checkpoint(tmp_path / "run" / "model.safetensors")
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, last["ema"]["model"][key].to(value.dtype), rtol=0, atol=0)
    assert card["training"]["kept"] == "last" and card["metrics"]["shipped_step"] == 4
    assert card["metrics"]["val_mae"] == pytest.approx(rows[-1]["val_mae"])
    assert card["metrics"]["seconds"] >= rows[-1]["seconds"]
    bad = runner.invoke(app(), ["train", "count", "--crop", "60", "-o", str(tmp_path / "bad")])
    assert bad.exit_code == 2 and "multiple of 16" in bad.output
    for flags, message in ((["--density-activation", "abs"], "none or relu"), (["--val-scenes", "0"], "validate on"),
                           (["--variant", "m-segnet", "--dropout", "0"], "only M-SFANet"),
                           (["--keep", "first"], "best or last"), (["--zoom", "0.5"], "--zoom"),
                           (["--count-loss", "l3"], "l1 or l2"), (["--weight-init", "xavier"], "upstream or kaiming"),
                           (["--count-tile", "40"], "--count-tile 40")):
        bad = runner.invoke(app(), ["train", "count", *flags, "-o", str(tmp_path / "bad")])
        assert bad.exit_code == 2 and message in bad.output, bad.output
    assert not (tmp_path / "bad").exists()


def test_dropout_and_width_options_reach_the_network_and_its_card(tmp_path):
    args = ["train", "count", "--crop", "64", "--batch", "2", "--synthetic", "2", "--val-scenes", "1", "--steps", "1",
            "--dropout", "0", "--width", "0.125", "-o", str(tmp_path / "run")]
    result = runner.invoke(app(), args)
    assert result.exit_code == 0, result.output
    from mis.checkpoints import load_checkpoint

    model, card = load_checkpoint(tmp_path / "run" / "model.safetensors")
    dropouts = [m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)]
    assert card["config"]["dropout"] == 0.0 and dropouts == [0.0] and card["config"]["width"] == 0.125


def test_weight_init_kaiming_redraws_the_batchnorm_convs_and_is_recorded(tmp_path):
    from mis.checkpoints import load_checkpoint

    # at a learning rate of 1e-12 one step leaves the drawn weights where they were: the draw is visible
    base = ["train", "count", "--crop", "64", "--batch", "2", "--synthetic", "2", "--val-scenes", "1", "--steps", "1",
            "--width", "0.125", "--lr", "1e-12"]
    stds = {}
    for weight_init in ("upstream", "kaiming"):
        result = runner.invoke(app(), [*base, "--weight-init", weight_init, "-o", str(tmp_path / weight_init)])
        assert result.exit_code == 0, result.output
        model, card = load_checkpoint(tmp_path / weight_init / "model.safetensors")
        assert card["training"]["weight_init"] == weight_init
        stds[weight_init] = {name: float(p.float().std()) for name, p in model.state_dict().items()
                             if name.endswith("conv.weight")}
    conv = stds["kaiming"]["vgg.conv4_3.conv.weight"]          # 64 -> 64 channels, 3x3: fan-out 576
    assert conv == pytest.approx(math.sqrt(2 / 576), rel=0.1) and stds["upstream"]["vgg.conv4_3.conv.weight"] < 0.012
    # the density head has no BatchNorm: it keeps its small draw, so training starts from an empty density
    assert stds["kaiming"]["conv_out.conv.weight"] < 0.05


def test_count_tile_goes_on_the_card_and_the_pipeline_counts_in_it_unless_told_otherwise(tmp_path):
    from mis.checkpoints import load_checkpoint, read_card
    from mis.errors import CheckpointError
    from mis.pipelines.count.pipeline import DEFAULT_TILE, CountPipeline

    result = runner.invoke(app(), ["train", "count", "--crop", "64", "--batch", "2", "--synthetic", "2",
                                   "--val-scenes", "1", "--steps", "1", "--width", "0.125", "--count-tile", "64",
                                   "-o", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    path = tmp_path / "run" / "model.safetensors"
    card = read_card(path)
    assert card["preprocessing"]["tile"] == 64 and card["preprocessing"]["overlap"] == 32
    assert card["training"]["count_tile"] == 64
    tiled = CountPipeline.from_checkpoint(path)
    assert (tiled.tile, tiled.overlap) == (64, 32)
    assert CountPipeline.from_checkpoint(path, tile=512).tile == 512                   # --tile still wins
    model, card = load_checkpoint(path)
    for bad in ("128", 8):      # a tampered tiling is refused on load, before anything is counted
        with pytest.raises(CheckpointError, match="preprocessing.tile"):
            CountPipeline(model, {**card, "preprocessing": {**card["preprocessing"], "tile": bad}})
    scene = make_crowd_scene(5, height=96, width=160)
    whole = CountPipeline.from_checkpoint(path, tile=DEFAULT_TILE)
    assert len(tiled.layout(96, 160)[2]) == 8 and len(whole.layout(96, 160)[2]) == 1    # 2 x 4 tiles, half overlapping
    assert tiled(scene.image).density.shape == (96, 160)
    Image.fromarray(scene.image).save(tmp_path / "scene.png")
    counted = runner.invoke(app(), ["--json", "count", str(tmp_path / "scene.png"), "--model", str(path),
                                    "--no-overlay", "-o", str(tmp_path / "out")])
    assert counted.exit_code == 0, counted.output
    assert json.loads(counted.output)["tile"] == 64


def test_init_starts_from_a_whole_checkpoint_or_the_layers_two_variants_share(tmp_path):
    from mis.checkpoints import load_checkpoint, read_state

    base = ["train", "count", "--crop", "64", "--batch", "2", "--synthetic", "2", "--val-scenes", "1",
            "--width", "0.125", "--lr", "1e-12"]
    first = runner.invoke(app(), [*base, "--variant", "m-segnet", "--steps", "2", "-o", str(tmp_path / "segnet")])
    assert first.exit_code == 0, first.output
    segnet = tmp_path / "segnet" / "model.safetensors"
    # at a learning rate of 1e-12 one step leaves the loaded weights where they were: what was loaded is visible
    result = runner.invoke(app(), [*base, "--variant", "m-sfanet", "--steps", "1", "--init", str(segnet),
                                   "-o", str(tmp_path / "sfanet")])
    assert result.exit_code == 0, result.output
    assert "tensors of model.safetensors" in result.output
    source = read_state(segnet)
    model, card = load_checkpoint(tmp_path / "sfanet" / "model.safetensors")
    state = model.state_dict()
    encoder = [name for name in source if name.startswith("vgg.") and name.endswith("conv.weight")]
    assert len(encoder) == 10
    for name in encoder:
        assert torch.allclose(state[name], source[name].float(), atol=1e-6), name
    assert not torch.allclose(state["vgg.conv5_1.conv.weight"], torch.zeros(1))   # M-SFANet's own block: fresh
    assert card["training"]["init"] == "model.safetensors"
    first_card = load_checkpoint(segnet)[1]
    assert card["training"]["init_training"] == {"command": first_card["training"]["command"],
                                                 "seconds": first_card["metrics"]["seconds"]}
    # the same network whole, but in other density units, is refused before training
    again = runner.invoke(app(), [*base, "--variant", "m-segnet", "--steps", "1", "--init", str(segnet),
                                  "--density-scale", "1", "-o", str(tmp_path / "units")])
    assert again.exit_code != 0 and "--density-scale 100" in again.output
    assert not (tmp_path / "units" / "model.safetensors").exists()


def test_annotated_images_without_points_stop_training_before_it_starts(tmp_path):
    Image.fromarray(make_crowd_scene(1, height=160, width=160).image).save(tmp_path / "img.png")
    (tmp_path / "img.json").write_text('{"note": "no points here"}')
    result = runner.invoke(app(), ["train", "count", str(tmp_path / "img.png"), "--synthetic", "0", "--steps", "1",
                                   "-o", str(tmp_path / "run")])
    assert result.exit_code == 1 and "img.json" in result.output and "no head points" in result.output
    assert not (tmp_path / "run" / "model.safetensors").exists()


@pytest.mark.parametrize("variant", ["m-sfanet", "m-segnet"])
def test_upstream_style_weights_import_and_count_the_same(tmp_path, variant):
    torch.manual_seed(3)
    config = SFANetConfig.demo(variant, width=0.125)
    upstream_model = SFANet(config).eval()
    state = {f"module.{k}": v for k, v in upstream_model.state_dict().items()}
    if variant == "m-sfanet":            # upstream's conv_out carries a BatchNorm it never applies
        state.update({"module.conv_out.bn.weight": torch.ones(1), "module.conv_out.bn.bias": torch.zeros(1)})
    torch.save({"epoch": 3, "model": state, "mae": 60.0}, tmp_path / "checkpoint_best.pth")
    result = runner.invoke(app(), ["models", "import", str(tmp_path / "checkpoint_best.pth"), "--task", "count",
                                   "-o", str(tmp_path / "ours.safetensors"), "--config", json.dumps(config.to_dict())])
    assert result.exit_code == 0, result.output
    pipeline = CountPipeline.from_checkpoint(tmp_path / "ours.safetensors")
    assert pipeline.density_scale == 1.0 and pipeline.mean.tolist() == pytest.approx([0.485, 0.456, 0.406])
    image = make_crowd_scene(6, height=64, width=96).image
    x = torch.from_numpy(pipeline.normalised(image))[None]
    with torch.no_grad():
        expected = float(upstream_model(x)[0].sum())
    assert pipeline(image).count == pytest.approx(expected, rel=1e-4, abs=1e-6)


def test_the_count_term_adds_the_l1_error_of_each_crops_total():
    from mis.pipelines.count.train import make_loss

    class Fixed(torch.nn.Module):
        def forward(self, x):
            return torch.full((2, 1, 4, 4), 0.5), torch.full((2, 1, 4, 4), 0.5)

    batch = {"image": torch.zeros(2, 3, 8, 8), "density": torch.zeros(2, 1, 4, 4),
             "attention": torch.full((2, 1, 4, 4), 0.5)}
    batch["density"][1] = 1.0                       # totals: predicted 8 and 8, true 0 and 16
    plain, parts = make_loss(0.0)(Fixed(), batch)
    with_count, _ = make_loss(2.0)(Fixed(), batch)
    assert float(parts["count_l1"]) == pytest.approx(8.0)
    assert float(with_count - plain) == pytest.approx(16.0)
    with_l2, l2_parts = make_loss(2.0, "l2")(Fixed(), batch)
    assert float(l2_parts["count_l1"]) == pytest.approx(8.0)       # logged the same way whichever loss trains
    assert float(with_l2 - plain) == pytest.approx(2.0 * 8.0 ** 2 / 16)   # error^2 / output pixels


@pytest.mark.parametrize("count_loss, calibrated_to", [("l1", 0.0), ("l2", 4.0)])
def test_the_l1_count_term_fits_the_median_crop_and_l2_the_mean(count_loss, calibrated_to):
    """Skewed crops (totals 0, 0, 0 and 16, as where only the dense crops are missed): one predicted total for all
    of them, fitted by the count term, ends at their median under l1 and at their mean under l2."""
    from mis.pipelines.count.train import count_term

    true = torch.tensor([0.0, 0.0, 0.0, 16.0])
    level = torch.nn.Parameter(torch.tensor(8.0))
    optimizer = torch.optim.Adam([level], lr=0.05)
    for _ in range(800):
        optimizer.zero_grad()
        count_term(level.expand(4), true, 16, count_loss).backward()
        optimizer.step()
    assert float(level) == pytest.approx(calibrated_to, abs=0.3)


def test_zoomed_crops_are_smaller_windows_enlarged_with_their_count_kept():
    from mis.pipelines.count.train import CountTrainOptions, Sample, batch_sampler

    uniform = 0.01                                   # people per pixel everywhere: a window's count is its area
    image = np.tile(np.arange(96, dtype=np.uint8)[None, :, None], (96, 1, 3))
    pool = [Sample(image, np.full((96, 96), uniform, np.float32), uniform * 96 * 96)]
    preprocessing = preprocessing_for(3) | {"density_scale": 1.0}

    def crop_counts(zoom: float) -> np.ndarray:
        options = CountTrainOptions(out=Path("unused"), crop=32, batch_size=64, density_scale=1.0, zoom=zoom)
        batch = batch_sampler(pool, options, preprocessing)(np.random.default_rng(0), 0)
        assert batch["image"].shape == (64, 3, 32, 32) and batch["density"].shape == (64, 1, 16, 16)
        return batch["density"].sum(dim=(1, 2, 3)).numpy() / uniform

    plain, zoomed = crop_counts(1.0), crop_counts(2.0)
    np.testing.assert_allclose(plain, 32 * 32, rtol=1e-5)
    sides = np.sqrt(zoomed)                          # the side of the window each crop was cut from
    windows = np.round(sides)
    np.testing.assert_allclose(sides, windows, atol=1e-2)
    assert windows.min() >= 16 and windows.max() <= 32
    assert 16 <= (windows < 32).sum() <= 48          # about half the crops enlarged, by up to 2x


def test_one_image_to_a_named_npy_puts_the_overlay_beside_it(tmp_path, checkpoint):
    Image.fromarray(make_crowd_scene(3, height=64, width=80).image).save(tmp_path / "shot.png")
    result = runner.invoke(app(), ["count", str(tmp_path / "shot.png"), "--model", str(checkpoint),
                                   "-o", str(tmp_path / "out" / "crowd.npy")])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["crowd.npy", "crowd_overlay.png"]


def test_a_second_run_into_the_input_folder_does_not_count_its_own_overlays(tmp_path, checkpoint):
    Image.fromarray(make_crowd_scene(3, height=64, width=80).image).save(tmp_path / "shot.png")
    for _ in range(2):
        result = runner.invoke(app(), ["--json", "count", str(tmp_path), "--model", str(checkpoint), "-o",
                                       str(tmp_path), "--overwrite"])
        assert result.exit_code == 0, result.output
        assert [Path(i["source"]).name for i in json.loads(result.stdout)["items"]] == ["shot.png"]
