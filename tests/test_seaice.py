"""Sea ice end to end: geometry of the output, COG, nodata, the file path equal to the array path, batches of
pairs past bad ones, evaluation against a mask and a concentration raster."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from typer.testing import CliRunner

from contract_cases.seaice import load, make_checkpoint
from mis.io.raster import is_valid_cog, open_raster
from mis.pipelines.seaice.synthetic import make_scene, write_scene_geotiffs
from mis.runtime.config import RuntimeConfig

runner = CliRunner()


def app():
    from mis.cli.main import app as main_app

    return main_app


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("seaice_ckpt"))


def scene_files(folder: Path, seed: int = 3, size: int = 48, **options) -> dict[str, Path]:
    return write_scene_geotiffs(make_scene(seed, coarse_size=size), folder, **options)


def test_output_is_a_cog_on_the_reference_grid_with_nodata_where_an_input_has_none(tmp_path, checkpoint):
    files = scene_files(tmp_path / "in")
    with rasterio.open(files["sar"], "r+") as ds:                  # a strip of the SAR without data
        data = ds.read()
        data[:, :10, :] = np.nan
        ds.write(data)
    result = runner.invoke(app(), ["--json", "seaice", "--sar", str(files["sar"]), "--msi", str(files["msi"]),
                                   "--model", str(checkpoint), "-o", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    target = tmp_path / "out" / "sar_ice.tif"
    out, sar = open_raster(target), open_raster(files["sar"])
    assert (out.crs, out.transform, out.width, out.height) == (sar.crs, sar.transform, sar.width, sar.height)
    assert is_valid_cog(target) and out.nodata == 255
    with rasterio.open(target) as ds:
        ice = ds.read(1)
    assert (ice[:10] == 255).all() and set(np.unique(ice[10:])) <= {0, 1}
    assert json.loads(result.stdout)["items"][0]["valid_fraction"] < 1


def test_the_file_path_gives_the_array_path_s_probabilities(tmp_path, checkpoint):
    scene = make_scene(5, coarse_size=48)
    files = write_scene_geotiffs(scene, tmp_path / "in")
    pipeline = load(checkpoint, RuntimeConfig(device="cpu"))
    in_memory = pipeline(scene.sar, scene.msi).probability
    result = runner.invoke(app(), ["seaice", "--sar", str(files["sar"]), "--msi", str(files["msi"]), "--probability",
                                   "--patch", "32", "--overlap", "8", "--model", str(checkpoint),
                                   "-o", str(tmp_path / "p.tif")])
    assert result.exit_code == 0, result.output
    with rasterio.open(tmp_path / "p.tif") as ds:
        written = ds.read(1)
    np.testing.assert_allclose(written, in_memory, atol=2e-3)   # S2 DNs are rounded to 1e-4 reflectance


def test_the_msi_grid_can_be_the_reference(tmp_path, checkpoint):
    files = scene_files(tmp_path / "in", msi_extent_margin=0)
    result = runner.invoke(app(), ["seaice", "--sar", str(files["sar"]), "--msi", str(files["msi"]), "--grid", "msi",
                                   "--model", str(checkpoint), "-o", str(tmp_path / "m.tif")])
    assert result.exit_code == 0, result.output
    out, msi = open_raster(tmp_path / "m.tif"), open_raster(files["msi"])
    assert (out.crs, out.transform, out.width, out.height) == (msi.crs, msi.transform, msi.width, msi.height)


def _no_crs(folder: Path, good: dict) -> tuple[Path, Path]:
    path = folder / "nocrs.tif"
    with rasterio.open(good["sar"]) as src:
        profile = {**src.profile, "crs": None}
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(src.read())
    return path, good["msi"]


def _far_away(folder: Path, good: dict) -> tuple[Path, Path]:
    files = write_scene_geotiffs(make_scene(4, coarse_size=32), folder / "far", origin=(2_000_000.0, 2_000_000.0))
    sar = folder / "far_sar.tif"
    sar.write_bytes(good["sar"].read_bytes())
    return sar, files["msi"]


def _one_band(folder: Path, good: dict) -> tuple[Path, Path]:
    path = folder / "hh_only.tif"
    with rasterio.open(good["sar"]) as src:
        with rasterio.open(path, "w", **{**src.profile, "count": 1}) as dst:
            dst.write(src.read(1), 1)
    return path, good["msi"]


def _text(folder: Path, good: dict) -> tuple[Path, Path]:
    path = folder / "notes.tif"
    path.write_text("not a raster\n" * 50)
    return path, good["msi"]


def _truncated(folder: Path, good: dict) -> tuple[Path, Path]:
    path = folder / "cut.tif"
    raw = good["sar"].read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    return path, good["msi"]


def _all_nodata(folder: Path, good: dict) -> tuple[Path, Path]:
    path = folder / "empty.tif"
    with rasterio.open(good["sar"]) as src:
        with rasterio.open(path, "w", **src.profile) as dst:
            dst.write(np.full((src.count, src.height, src.width), np.nan, np.float32))
    return path, good["msi"]


@pytest.mark.parametrize("make, problem", [
    (_no_crs, "no coordinate reference system"), (_far_away, "no overlap"), (_one_band, "1 SAR band"),
    (_text, "not a readable raster"), (_truncated, "truncated|not a readable"), (_all_nodata, "no finite SAR|all nodata"),
])
def test_a_batch_of_pairs_goes_past_a_bad_one_with_one_line_naming_it(tmp_path, checkpoint, make, problem):
    import re

    folder = tmp_path / "in"
    good = scene_files(folder / "good")
    bad_sar, bad_msi = make(folder, good)
    with open(folder / "pairs.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerows([["sar", "msi"], [good["sar"].relative_to(folder), good["msi"].relative_to(folder)],
                          [bad_sar.relative_to(folder), bad_msi.relative_to(folder)]])
    result = runner.invoke(app(), ["seaice", "--pairs", str(folder / "pairs.csv"), "--model", str(checkpoint),
                                   "-o", str(tmp_path / "out")])
    assert result.exit_code == 1 and "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.startswith(("error", "failed"))]
    named = [line for line in lines if bad_sar.name in line or bad_msi.name in line]
    assert len(named) == 1 and re.search(problem, named[0]), result.stderr
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert written == ["sar_ice.tif"], written                     # the good pair's output only


def test_evaluation_against_a_mask_and_a_concentration_raster(tmp_path, checkpoint):
    files = scene_files(tmp_path / "in")
    sic = tmp_path / "sic.tif"
    with rasterio.open(files["mask"]) as src:                        # concentration 0-100 from the mask itself
        mask = src.read(1)
        with rasterio.open(sic, "w", **{**src.profile, "dtype": "float32", "nodata": None}) as dst:
            dst.write(np.where(mask == 1, 90.0, 5.0).astype(np.float32), 1)
    result = runner.invoke(app(), ["--json", "evaluate", "seaice", "--sar", str(files["sar"]), "--msi",
                                   str(files["msi"]), "--mask", str(files["mask"]), "--sic", str(sic),
                                   "--model", str(checkpoint)])
    assert result.exit_code == 0, result.output
    case = json.loads(result.stdout)["cases"][0]
    assert case["mask"]["pixels"] == case["sic"]["pixels"] > 0
    assert case["mask"]["f1"] == pytest.approx(case["sic"]["f1"])      # the same truth, thresholded at 15 %


@pytest.mark.parametrize("probability", [False, True])
def test_the_ice_edge_geojson_rasterises_back_to_the_ice_pixels(tmp_path, checkpoint, probability):
    from rasterio.features import rasterize

    files = scene_files(tmp_path / "in", seed=5)
    args = ["seaice", "--sar", str(files["sar"]), "--msi", str(files["msi"]), "--model", str(checkpoint), "--edge",
            "-o", str(tmp_path / "out")] + (["--probability"] if probability else [])
    result = runner.invoke(app(), args)
    assert result.exit_code == 0, result.output
    with rasterio.open(tmp_path / "out" / "sar_ice.tif") as ds:
        band, transform, crs = ds.read(1), ds.transform, ds.crs
    ice = (band >= 0.5) & np.isfinite(band) if probability else band == 1
    edge = json.loads((tmp_path / "out" / "sar_ice_edge.geojson").read_text())
    assert edge["crs"]["properties"]["name"].endswith(str(crs.to_epsg()))
    shapes = [(f["geometry"], 1) for f in edge["features"]]
    back = rasterize(shapes, out_shape=band.shape, transform=transform, fill=0, dtype="uint8") if shapes else \
        np.zeros(band.shape, np.uint8)
    np.testing.assert_array_equal(back.astype(bool), ice)


def test_the_gdal_block_cache_is_capped_in_megabytes_not_bytes(tmp_path, checkpoint):
    """rasterio hands GDAL_CACHEMAX to GDAL as bytes: a cap of "256" was 256 bytes and made every read ~1000x
    slower (a 2000 px scene took 140 s instead of 3)."""
    from rasterio.env import get_gdal_config

    from mis.pipelines.seaice.run import GDAL_CACHE_MB

    files = scene_files(tmp_path / "in")
    result = runner.invoke(app(), ["seaice", "--sar", str(files["sar"]), "--msi", str(files["msi"]), "--model",
                                   str(checkpoint), "-o", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert int(get_gdal_config("GDAL_CACHEMAX")) == GDAL_CACHE_MB * 1024 * 1024
