"""mis.io.raster: inspection, band selection, alignment onto a reference grid, COG writing, value conventions.

Synthetic rasters (seeded numpy + rasterio) are written to tmp_path; the real rasters of ../shared/data/seaice are
read in place when present (never copied).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

rasterio = pytest.importorskip("rasterio")
from rasterio.crs import CRS  # noqa: E402
from rasterio.enums import Resampling  # noqa: E402
from rasterio.transform import from_origin  # noqa: E402
from rasterio.warp import reproject, transform_bounds  # noqa: E402
from rasterio.windows import Window  # noqa: E402

from mis.errors import InputError  # noqa: E402
from mis.io.raster import (  # noqa: E402
    RASTER, Grid, RasterWriter, aligned_reader, check_band_count, guess_sar_units, is_raster_name, is_valid_cog,
    open_raster, overlap_fraction, overlap_problem, s2_offset, s2_reflectance, sar_to_db, select_bands,
    write_edge_geojson,
)

REAL = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "seaice"
SAR_ORIGIN = (200_000.0, -1_500_000.0)  # upper-left corner, EPSG:3031 metres (Ross Sea side)
SAR_SIZE = 256  # 40 m pixels: a 10.24 km square
SAR_NODATA = -9999.0


def _write(path, array, crs, transform, *, nodata=None, descriptions=None, tiled=True, block=128, mask=None):
    array = array if array.ndim == 3 else array[None]
    profile = dict(driver="GTiff", width=array.shape[2], height=array.shape[1], count=array.shape[0],
                   dtype=array.dtype.name, transform=transform, nodata=nodata)
    if crs is not None:
        profile["crs"] = crs
    if tiled:
        profile.update(tiled=True, blockxsize=block, blockysize=block, compress="deflate")
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True):
        with rasterio.open(path, "w", **profile) as ds:
            ds.write(array)
            for band, text in enumerate(descriptions or [], 1):
                ds.set_band_description(band, text)
            if mask is not None:
                ds.write_mask(mask)
    return path


@pytest.fixture
def sar(tmp_path):
    """HH, HV in dB on EPSG:3031 at 40 m; a nodata block in the upper-left corner."""
    rng = np.random.default_rng(1)
    data = rng.normal(-18, 3, (2, SAR_SIZE, SAR_SIZE)).astype(np.float32)
    data[:, :20, :20] = SAR_NODATA
    return _write(tmp_path / "sar.tif", data, "EPSG:3031", from_origin(*SAR_ORIGIN, 40, 40), nodata=SAR_NODATA,
                  descriptions=["HH", "HV"])


@pytest.fixture
def msi(tmp_path):
    """B02, B03, B04, B08 uint16 on EPSG:3031 at 10 m: 2 km right of and below the SAR origin, ending inside it,
    so part of the SAR grid lies outside this footprint. DN 0 (nodata) in a block."""
    rng = np.random.default_rng(2)
    data = rng.integers(1000, 6000, (4, 600, 600), dtype=np.uint16)
    data[:, 300:340, 300:340] = 0
    x0, y0 = SAR_ORIGIN
    return _write(tmp_path / "msi.tif", data, "EPSG:3031", from_origin(x0 + 2000, y0 - 2000, 10, 10), nodata=0,
                  descriptions=["B02", "B03", "B04", "B08"])


@pytest.fixture
def polar3976(tmp_path):
    """One float band in EPSG:3976 (the NSIDC south polar stereographic, true scale -70 deg) covering the SAR
    scene, with NaN and no nodata tag (the Bremen SIC convention)."""
    x0, y0 = SAR_ORIGIN
    left, bottom, right, top = transform_bounds("EPSG:3031", "EPSG:3976", x0, y0 - 10_240, x0 + 10_240, y0)
    data = np.random.default_rng(3).uniform(0, 100, (140, 140)).astype(np.float32)
    data[60:80, 60:80] = np.nan
    return _write(tmp_path / "sic3976.tif", data, "EPSG:3976", from_origin(left - 500, top + 500, 100, 100))


def _grid(path) -> Grid:
    return Grid.from_raster(open_raster(path))


def _reprojected(path, grid, bands, resampling, src_nodata):
    """The reference answer: rasterio.warp.reproject of the whole source onto the whole grid."""
    with rasterio.open(path) as src:
        out = np.full((len(bands), grid.height, grid.width), np.nan, np.float32)
        for i, band in enumerate(bands):
            reproject(src.read(band).astype(np.float32), out[i], src_transform=src.transform, src_crs=src.crs,
                      src_nodata=src_nodata, dst_transform=grid.transform, dst_crs=grid.crs, dst_nodata=np.nan,
                      resampling=resampling)
    return out


# --------------------------------------------------------------------------- names, info, bands


def test_raster_names_and_kind():
    assert all(is_raster_name(n) for n in ("a.tif", "b.TIFF", "c.cog", "s2.jp2", "m.vrt"))
    assert not is_raster_name("a.png") and not is_raster_name(".hidden.tif")
    assert RASTER.is_file(Path("scene.tif")) and RASTER.reader == "mis.io.raster:open_raster"


def test_open_raster_info(sar):
    info = open_raster(sar)
    assert info.crs == "EPSG:3031"
    assert (info.width, info.height, info.count) == (SAR_SIZE, SAR_SIZE, 2)
    assert info.transform == (40.0, 0.0, SAR_ORIGIN[0], 0.0, -40.0, SAR_ORIGIN[1])
    assert info.resolution == (40.0, 40.0) and info.nodata == SAR_NODATA
    assert info.bounds == (SAR_ORIGIN[0], SAR_ORIGIN[1] - 10_240, SAR_ORIGIN[0] + 10_240, SAR_ORIGIN[1])
    assert info.descriptions == ("HH", "HV") and info.dtypes == ("float32", "float32")
    assert info.block_shapes == ((128, 128), (128, 128))


def test_select_bands_by_index_and_description(sar, msi):
    assert select_bands(open_raster(sar), "hv,HH") == [2, 1]
    assert select_bands(open_raster(msi), "B02, b03,4") == [1, 2, 4]
    assert select_bands(open_raster(msi), None) == [1, 2, 3, 4]
    with pytest.raises(InputError, match=r"msi\.tif: has no band named 'B11'.*B02.*B08"):
        select_bands(open_raster(msi), "B02,B11")
    with pytest.raises(InputError, match=r"sar\.tif: has no band 3"):
        select_bands(open_raster(sar), "3")


def test_check_band_count(sar):
    check_band_count(open_raster(sar), 2)
    with pytest.raises(InputError, match=r"sar\.tif: has 2 band\(s\), expected 4"):
        check_band_count(open_raster(sar), 4)


# --------------------------------------------------------------------------- refused inputs


def test_no_crs_is_refused(tmp_path):
    path = _write(tmp_path / "plain.tif", np.zeros((32, 32), np.float32), None, from_origin(0, 0, 10, 10))
    with pytest.raises(InputError, match=r"plain\.tif: has no coordinate reference system"):
        open_raster(path)


def test_no_geotransform_is_refused(tmp_path):
    with pytest.warns(rasterio.errors.NotGeoreferencedWarning):
        with rasterio.open(tmp_path / "nogt.tif", "w", driver="GTiff", width=16, height=16, count=1, dtype="uint8",
                           crs="EPSG:3031") as ds:
            ds.write(np.ones((1, 16, 16), np.uint8))
    with pytest.raises(InputError, match=r"nogt\.tif: has no geotransform"), pytest.warns(Warning):
        open_raster(tmp_path / "nogt.tif")


def test_truncated_tiff_is_refused(tmp_path):
    data = np.random.default_rng(4).random((600, 600)).astype(np.float32)  # incompressible: tiles fill the file
    whole = _write(tmp_path / "whole.tif", data, "EPSG:3031", from_origin(0, 0, 10, 10), block=256)
    open_raster(whole)  # the intact file is fine
    cut = tmp_path / "cut.tif"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.raises(InputError, match=r"cut\.tif: .*truncated"):
        open_raster(cut)
    # GDAL told to ignore read errors returns zeros for the missing tiles: the block offsets still give it away
    with rasterio.Env(GTIFF_IGNORE_READ_ERRORS=True), pytest.raises(InputError, match=r"cut\.tif: is truncated"):
        open_raster(cut)


def test_text_named_tif_and_missing_file_are_refused(tmp_path):
    (tmp_path / "notes.tif").write_text("not a raster\n")
    with pytest.raises(InputError, match=r"notes\.tif: is not a readable raster"):
        open_raster(tmp_path / "notes.tif")
    with pytest.raises(InputError, match=r"absent\.tif: no such file"):
        open_raster(tmp_path / "absent.tif")


# --------------------------------------------------------------------------- grid


def test_grid_windows_cover_and_shift_inward():
    grid = Grid("EPSG:3031", from_origin(0, 0, 40, 40), 300, 200)
    windows = list(grid.windows(128, overlap=16))
    assert all((w.width, w.height) == (128, 128) for w in windows)
    assert max(w.col_off + w.width for w in windows) == 300 and max(w.row_off + w.height for w in windows) == 200
    covered = np.zeros((200, 300), bool)
    for w in windows:
        covered[w.row_off:w.row_off + w.height, w.col_off:w.col_off + w.width] = True
    assert covered.all()
    assert [(w.width, w.height) for w in Grid("EPSG:3031", from_origin(0, 0, 1, 1), 50, 40).windows(128)] == [(50, 40)]


def test_grid_scaled_keeps_edges():
    grid = Grid("EPSG:3031", from_origin(1000, -2000, 40, 40), 300, 200)
    coarse, fine = grid.scaled(2), grid.scaled(0.5)
    assert (coarse.width, coarse.height, coarse.resolution) == (150, 100, (80.0, 80.0))
    assert (fine.width, fine.height, fine.resolution) == (600, 400, (20.0, 20.0))
    assert coarse.bounds == grid.bounds == fine.bounds
    with pytest.raises(ValueError, match="does not divide by 7"):
        grid.scaled(7)


# --------------------------------------------------------------------------- alignment


def test_msi_aligned_onto_sar_grid_matches_reproject(sar, msi):
    grid = _grid(sar)
    window = Window(64, 64, 128, 128)
    with aligned_reader(msi, grid, "B02,B08", "average") as reader:
        array, valid = reader.read(window)
        full, full_valid = reader.read(Window(0, 0, grid.width, grid.height))
    assert array.shape == (2, 128, 128) and array.dtype == np.float32 and valid.shape == (128, 128)
    expected = _reprojected(msi, grid, [1, 4], Resampling.average, 0)
    np.testing.assert_allclose(array, expected[:, 64:192, 64:192], rtol=1e-5, equal_nan=True)
    # MSI starts 2 km = 50 SAR pixels right of and below the SAR origin: outside its footprint is invalid
    assert not full_valid[:49, :].any() and not full_valid[:, :49].any() and full_valid[60:70, 60:70].all()
    # DN 0 block at MSI pixels 300-340 = 2000 m + 3000-3400 m from the SAR origin = SAR pixels 125-135
    assert not full_valid[126:134, 126:134].any() and full_valid[140:150, 140:150].all()


def test_sar_own_nodata_and_window_geometry(sar):
    grid = _grid(sar)
    with aligned_reader(sar, grid, None, "nearest") as reader:
        array, valid = reader.read(Window(0, 0, 64, 64))
    assert array.shape == (2, 64, 64)
    assert not valid[:20, :20].any() and valid[20:, :].all() and valid[:, 20:].all()
    with rasterio.open(sar) as src:
        np.testing.assert_array_equal(array[:, 20:, 20:], src.read(window=Window(20, 20, 44, 44)))


def test_polar3976_with_nan_aligned_onto_3031(sar, polar3976):
    grid = _grid(sar)
    with aligned_reader(polar3976, grid, [1], "bilinear") as reader:
        array, valid = reader.read(Window(0, 0, grid.width, grid.height))
    assert array.shape == (1, grid.height, grid.width)
    expected = _reprojected(polar3976, grid, [1], Resampling.bilinear, np.nan)
    np.testing.assert_allclose(array, expected, atol=1e-3, equal_nan=True)
    assert np.array_equal(valid, np.isfinite(expected[0]))
    assert 0.9 < valid.mean() < 0.99  # the NaN block is invalid, the rest of the scene is covered


def test_internal_mask_is_invalid(tmp_path, sar):
    data = np.ones((SAR_SIZE, SAR_SIZE), np.float32)
    mask = np.full(data.shape, 255, np.uint8)
    mask[:, :100] = 0
    path = _write(tmp_path / "masked.tif", data, "EPSG:3031", from_origin(*SAR_ORIGIN, 40, 40), mask=mask)
    with aligned_reader(path, _grid(sar), [1], "nearest") as reader:
        _, valid = reader.read(Window(0, 0, SAR_SIZE, SAR_SIZE))
    assert not valid[:, :100].any() and valid[:, 100:].all()


def test_src_nodata_override(tmp_path, sar):
    data = np.full((SAR_SIZE, SAR_SIZE), 5.0, np.float32)
    data[:50] = -1.0  # a product that marks nodata as -1 but does not declare it
    path = _write(tmp_path / "undeclared.tif", data, "EPSG:3031", from_origin(*SAR_ORIGIN, 40, 40))
    with aligned_reader(path, _grid(sar), [1], "nearest", src_nodata=-1.0) as reader:
        _, valid = reader.read(Window(0, 0, SAR_SIZE, SAR_SIZE))
    assert not valid[:50].any() and valid[50:].all()


def test_overlap_problem(tmp_path, sar, msi, polar3976):
    assert overlap_problem(open_raster(sar), open_raster(msi)) is None
    assert overlap_problem(open_raster(sar), open_raster(polar3976)) is None
    assert overlap_fraction(open_raster(sar), open_raster(polar3976)) == pytest.approx(1.0)
    far = _write(tmp_path / "far.tif", np.ones((32, 32), np.float32), "EPSG:3031", from_origin(-1e6, 1e6, 40, 40))
    problem = overlap_problem(open_raster(sar), open_raster(far))
    assert problem is not None and problem.startswith("no overlap") and "far.tif" in problem


# --------------------------------------------------------------------------- writing


def test_raster_writer_cog_on_grid_with_nodata_fill(tmp_path, sar):
    grid = _grid(sar).scaled(0.25)  # 1024 x 1024 at 10 m: several 512 tiles and one overview level
    target = tmp_path / "out" / "classes.tif"
    with RasterWriter(target, grid, "uint8", 255, tags={"model": "test"}, descriptions=["ice"]) as writer:
        writer.write(np.ones((512, 512), np.uint8), Window(0, 0, 512, 512))
        writer.write(np.zeros((512, 512), np.uint8), Window(512, 512, 512, 512))
    assert is_valid_cog(target)
    assert [p.name for p in target.parent.iterdir()] == ["classes.tif"]  # no temporary files left
    with rasterio.open(target) as ds:
        assert (ds.crs, ds.transform, ds.width, ds.height) == (grid.crs, grid.transform, grid.width, grid.height)
        assert ds.nodata == 255 and ds.descriptions == ("ice",) and ds.tags()["model"] == "test"
        assert ds.block_shapes == [(512, 512)] and ds.overviews(1)
        out = ds.read(1)
    assert (out[:512, :512] == 1).all() and (out[512:, 512:] == 0).all()
    assert (out[:512, 512:] == 255).all() and (out[512:, :512] == 255).all()  # never written: nodata, not 0


def test_raster_writer_float_probabilities(tmp_path, sar):
    grid = _grid(sar)
    target = tmp_path / "prob.tif"
    with RasterWriter(target, grid, "float32", np.nan, count=2) as writer:
        for window in list(grid.windows(128))[:-1]:  # the last (lower-right) window is never written
            writer.write(np.full((2, 128, 128), 0.25, np.float32), window)
    with rasterio.open(target) as ds:
        out = ds.read()
        assert ds.count == 2 and np.isnan(ds.nodata)
    assert np.isnan(out[:, 128:, 128:]).all() and np.allclose(out[:, :128], 0.25) and np.allclose(out[:, :, :128], 0.25)
    assert is_valid_cog(target)


def test_raster_writer_exception_leaves_nothing(tmp_path, sar):
    grid = _grid(sar)
    target = tmp_path / "classes.tif"
    with pytest.raises(RuntimeError, match="stop"):
        with RasterWriter(target, grid, "uint8", 255) as writer:
            writer.write(np.ones((128, 128), np.uint8), Window(0, 0, 128, 128))
            raise RuntimeError("stop")
    assert list(tmp_path.iterdir()) == [tmp_path / "sar.tif"]


def test_plain_striped_tiff_is_not_a_cog(sar):
    assert not is_valid_cog(sar)


def test_edge_geojson(tmp_path):
    grid = Grid("EPSG:3031", from_origin(1000, 2000, 10, 10), 20, 10)
    mask = np.zeros((10, 20), np.uint8)
    mask[2:5, 3:7] = 1
    mask[8, 15] = 255  # nodata is not ice
    polygons = json.loads(write_edge_geojson(mask, grid, tmp_path / "edge.geojson").read_text())
    assert polygons["crs"]["properties"]["name"] == "urn:ogc:def:crs:EPSG::3031"
    (feature,) = polygons["features"]
    xs, ys = zip(*feature["geometry"]["coordinates"][0])
    assert (min(xs), max(xs), min(ys), max(ys)) == (1030, 1070, 1950, 1980)
    lines = json.loads(write_edge_geojson(mask, grid, tmp_path / "lines.geojson", lines=True).read_text())
    assert [f["geometry"]["type"] for f in lines["features"]] == ["LineString"]
    assert lines["features"][0]["geometry"]["coordinates"] == feature["geometry"]["coordinates"][0]


# --------------------------------------------------------------------------- value conventions


def test_sar_to_db_units():
    linear = np.array([0.01, 0.1, 0.02, 30.0, np.nan], np.float32)
    np.testing.assert_allclose(sar_to_db(linear), [-20, -10, -16.9897, 14.7712, np.nan], atol=1e-3)
    db = np.array([-20.0, -15.0, 2.0, -30.0], np.float32)
    np.testing.assert_array_equal(sar_to_db(db), db)
    noisy = np.array([0.05, -0.001, 0.02, 0.0], np.float32)  # noise-corrected HV: some <= 0 -> NaN, still linear
    assert np.isnan(sar_to_db(noisy)[[1, 3]]).all() and np.isfinite(sar_to_db(noisy)[[0, 2]]).all()
    with pytest.raises(InputError, match=r"dn\.tif: cannot tell whether the SAR values are dB or linear"):
        sar_to_db(np.array([20, 120, 200], np.uint8), path="dn.tif")
    np.testing.assert_allclose(sar_to_db(np.array([100.0], np.float32), "linear"), [20.0])
    with pytest.raises(InputError, match="look like dB"):
        sar_to_db(db, "linear", "x.tif")
    assert guess_sar_units(np.full((2000, 2000), -15.0, np.float32)) == "db"  # sampled, not a full-scene median
    with pytest.raises(InputError, match="no finite SAR values"):
        sar_to_db(np.full(4, np.nan, np.float32))


def test_s2_reflectance_and_offset():
    dn = np.array([0, 1000, 3000, 900], np.uint16)
    np.testing.assert_allclose(s2_reflectance(dn, offset=1000), [np.nan, 0.0, 0.2, -0.01], atol=1e-7)
    np.testing.assert_allclose(s2_reflectance(dn, offset=0)[1:], [0.1, 0.3, 0.09], atol=1e-7)
    assert s2_offset("04.00") == 1000 and s2_offset("05.10") == 1000 and s2_offset("03.01") == 0


# --------------------------------------------------------------------------- real rasters


REAL_FILES = ["umbra_mount_yasur.tiff", "nt_20201024_f18_nrt_s.tif", "bremen_sea_ice_conc_2022_9_9.tif",
              "GA4886_VanderfordGlacier_2022_EGM2008_64m-epsg3031.cog", "RGB.byte.tif"]


def _real(name: str) -> Path:
    path = REAL / name
    if not path.exists():
        pytest.skip(f"{path} not present")
    return path


@pytest.mark.parametrize("name", REAL_FILES)
def test_real_rasters_open(name):
    info = open_raster(_real(name))
    assert info.width > 0 and info.height > 0 and CRS.from_user_input(info.crs).is_projected


def test_real_crs_strings_and_cog():
    assert open_raster(_real("bremen_sea_ice_conc_2022_9_9.tif")).crs == "EPSG:3031"
    nt = open_raster(_real("nt_20201024_f18_nrt_s.tif"))
    assert "Polar" in nt.crs and not nt.crs.startswith("EPSG:")  # EPSG:3412-like: kept as WKT, not rounded
    assert is_valid_cog(_real("GA4886_VanderfordGlacier_2022_EGM2008_64m-epsg3031.cog"))
    assert select_bands(open_raster(_real("RGB.byte.tif")), "3,1") == [3, 1]


def test_real_overlap_across_crs():
    bremen = open_raster(_real("bremen_sea_ice_conc_2022_9_9.tif"))
    assert overlap_problem(bremen, open_raster(_real("nt_20201024_f18_nrt_s.tif"))) is None  # 3412-like vs 3031
    problem = overlap_problem(bremen, open_raster(_real("umbra_mount_yasur.tiff")))  # Vanuatu (UTM 59S)
    assert problem is not None and problem.startswith("no overlap") and "umbra_mount_yasur" in problem


def test_real_nt_aligned_onto_3031_grid():
    nt = _real("nt_20201024_f18_nrt_s.tif")
    grid = Grid("EPSG:3031", from_origin(-3_950_000, 4_350_000, 25_000, 25_000), 316, 332)
    with aligned_reader(nt, grid, [1], "bilinear") as reader:
        array, valid = reader.read(Window(0, 0, grid.width, grid.height))
    assert array.shape == (1, 332, 316)
    values = array[0][valid]
    assert 0.5 < valid.mean() < 0.95 and values.min() >= 0 and values.max() <= 100.5  # nodata -3.4e38 masked


def test_real_bremen_nan_is_invalid():
    bremen = _real("bremen_sea_ice_conc_2022_9_9.tif")
    grid = _grid(bremen)
    with aligned_reader(bremen, grid, [1], "nearest") as reader, rasterio.open(bremen) as src:
        window = Window(512, 512, 256, 256)
        _, valid = reader.read(window)
        assert np.array_equal(valid, np.isfinite(src.read(1, window=window)))


def test_real_cog_float_nodata_is_invalid():
    cog = _real("GA4886_VanderfordGlacier_2022_EGM2008_64m-epsg3031.cog")
    window = Window(1024, 512, 512, 512)
    with aligned_reader(cog, _grid(cog), [1], "nearest") as reader, rasterio.open(cog) as src:
        array, valid = reader.read(window)
        assert np.array_equal(valid, src.read_masks(1, window=window) > 0) and 0 < valid.mean() < 1
        assert array[0][valid].max() < 0  # bathymetry depths; the 3.4e38 nodata is gone
