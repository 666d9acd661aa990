"""Georeferenced rasters (GeoTIFF, COG, JP2, VRT) for sea-ice segmentation: inspect, align, write. Imports no torch.

The pieces a two-sensor pipeline needs, each small:

- `open_raster` inspects a file (no pixels kept) and refuses what the rest cannot use, one InputError per file:
  unreadable, truncated, no CRS, no geotransform.
- `select_bands` picks bands by 1-based index or by description ("HH,HV", "B02,B03").
- `Grid` is the reference grid (CRS, transform, width, height) with its sliding windows and integer rescaling.
- `aligned_reader` puts any raster on a `Grid` through a `WarpedVRT`, lazily, one window at a time, and returns a
  valid mask that folds together the three nodata conventions (nodata tag, NaN without a tag, internal masks) and the
  source footprint.
- `RasterWriter` streams windows to a tiled GTiff, then converts to a COG and renames it onto the target atomically.
- `sar_to_db`, `s2_reflectance`: the value conventions of Sentinel-1 and Sentinel-2 L2A.

Readers return plain dataclasses / (array, valid) pairs, in the style of the other `mis.io` readers.
"""
from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import rasterio
import rasterio.features
import rasterio.shutil
import rasterio.transform
import rasterio.warp
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.errors import RasterioError
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window

from mis.errors import InputError
from mis.io.atomic import atomic_output, atomic_write_text, temp_path_for
from mis.io.kinds import InputKind

RASTER_SUFFIXES = (".tif", ".tiff", ".cog", ".jp2", ".vrt")
BLOCK = 512  # tile size of everything we write: the COG default, and what readers of COGs expect


def is_raster_name(path: str | Path) -> bool:
    return Path(path).suffix.lower() in RASTER_SUFFIXES and not Path(path).name.startswith(".")


RASTER = InputKind("raster", "GeoTIFF", "mis.io.raster:is_raster_name", reader="mis.io.raster:open_raster")


# --------------------------------------------------------------------------- inspect


@dataclass
class RasterInfo:
    """What `open_raster` found; no pixels.

    crs: "EPSG:nnnn" when the file's CRS is exactly that code, else its WKT (a polar-stereographic variant such as
    NSIDC's EPSG:3412-like grid only *resembles* a code; rounding it to one would move it by kilometres).
    transform: the 6 affine coefficients (a, b, c, d, e, f): x = a*col + b*row + c, y = d*col + e*row + f.
    dtypes, descriptions, block_shapes: one per band (descriptions None where unnamed; block (rows, cols)).
    resolution: (x, y) pixel size in CRS units; bounds: (left, bottom, right, top).
    """

    path: str
    crs: str
    transform: tuple[float, ...]
    width: int
    height: int
    count: int
    dtypes: tuple[str, ...]
    nodata: float | None
    descriptions: tuple[str | None, ...]
    resolution: tuple[float, float]
    bounds: tuple[float, float, float, float]
    block_shapes: tuple[tuple[int, int], ...]
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def affine(self) -> Affine:
        return Affine(*self.transform)


def crs_string(crs: CRS) -> str:
    """'EPSG:n' only when the CRS is that code exactly (confidence 100), else the WKT, which loses nothing."""
    code = crs.to_epsg(confidence_threshold=100)
    return f"EPSG:{code}" if code else crs.to_wkt()


def open_raster(path: str | Path) -> RasterInfo:
    """Inspect one raster; an InputError naming the file for anything the alignment and tiling cannot use."""
    path = Path(path)
    _check_file(path)
    try:
        with rasterio.open(path) as ds:
            _check_georeferenced(path, ds)
            _check_complete(path, ds)
            return _info(path, ds)
    except InputError:
        raise
    except (RasterioError, OSError) as exc:
        # GDAL's messages repeat the full path, which InputError already leads with
        raise InputError(path, f"is not a readable raster ({_short(exc).replace(str(path), path.name)})") from None


def _check_file(path: Path) -> None:
    if not path.exists():
        raise InputError(path, "no such file or directory")
    if path.is_dir():
        raise InputError(path, "is a folder, not a raster file")
    if path.stat().st_size == 0:
        raise InputError(path, "file is empty (0 bytes)")


def _check_georeferenced(path: Path, ds) -> None:
    if ds.crs is None:
        hint = f" (it has {len(ds.gcps[0])} ground control points: warp it first, e.g. gdalwarp)" if ds.gcps[0] else ""
        raise InputError(path, f"has no coordinate reference system{hint}")
    if ds.transform.is_identity:  # rasterio's stand-in when the file has none
        raise InputError(path, "has no geotransform (pixel size and origin are unknown)")


def _check_complete(path: Path, ds) -> None:
    """A cut-off TIFF opens fine (its header is at the start) and fails, or reads zeros, only later, mid-scene.
    Two checks: every block's byte range lies inside the file (this one holds even where GDAL is told to ignore
    read errors, GTIFF_IGNORE_READ_ERRORS, and returns zeros), and the last block of every band decodes."""
    if ds.driver in ("GTiff", "COG"):
        size = path.stat().st_size
        # pixel-interleaved bands share their blocks: band 1 stands for all
        bands = 1 if ds.tags(ns="IMAGE_STRUCTURE").get("INTERLEAVE") == "PIXEL" else ds.count
        for band in range(1, bands + 1):
            if _blocks_past_end(ds, band, size):
                raise InputError(path, "is truncated (the file ends before its image data does)")
    rows, cols = ds.block_shapes[0]
    last = Window(((ds.width - 1) // cols) * cols, ((ds.height - 1) // rows) * rows, 1, 1)
    try:
        ds.read(window=last)
    except RasterioError as exc:
        raise InputError(path, f"is truncated or damaged (reading its last block failed: {_short(exc)})") from None


def _blocks_past_end(ds, band: int, size: int) -> bool:
    """GDAL exposes each block's offset and size as TIFF metadata; a block that ends past EOF was cut off.
    (Offset 0 is a sparse block, legitimately absent.)"""
    for (row, col), _ in ds.block_windows(band):
        offset = ds.get_tag_item(f"BLOCK_OFFSET_{col}_{row}", "TIFF", bidx=band)
        nbytes = ds.get_tag_item(f"BLOCK_SIZE_{col}_{row}", "TIFF", bidx=band)
        if offset and nbytes and int(offset) > 0 and int(offset) + int(nbytes) > size:
            return True
    return False


def _info(path: Path, ds) -> RasterInfo:
    return RasterInfo(
        path=str(path), crs=crs_string(ds.crs), transform=tuple(float(v) for v in ds.transform[:6]),
        width=ds.width, height=ds.height, count=ds.count, dtypes=tuple(ds.dtypes),
        nodata=None if ds.nodata is None else float(ds.nodata), descriptions=tuple(ds.descriptions),
        resolution=(float(ds.res[0]), float(ds.res[1])), bounds=tuple(float(v) for v in ds.bounds),
        block_shapes=tuple(tuple(b) for b in ds.block_shapes), tags=dict(ds.tags()))


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:160] if text else type(exc).__name__


# --------------------------------------------------------------------------- bands


def select_bands(info: RasterInfo, spec: str | None) -> list[int]:
    """1-based band indexes from "1,3" or from descriptions "HH,HV" (case-insensitive; the two may be mixed).
    None or "" selects every band."""
    if not spec or not spec.strip():
        return list(range(1, info.count + 1))
    names = {d.strip().lower(): i for i, d in enumerate(info.descriptions, 1) if d}
    bands = []
    for token in (t.strip() for t in spec.split(",")):
        if token.isdigit():
            index = int(token)
            if not 1 <= index <= info.count:
                raise InputError(info.path, f"has no band {index} (it has {info.count}: {_band_list(info)})")
        elif token.lower() in names:
            index = names[token.lower()]
        else:
            raise InputError(info.path, f"has no band named {token!r} (bands: {_band_list(info)})")
        bands.append(index)
    return bands


def _band_list(info: RasterInfo) -> str:
    return ", ".join(f"{i}={d}" if d else f"{i} (unnamed)" for i, d in enumerate(info.descriptions, 1))


def check_band_count(info: RasterInfo, expected: int) -> None:
    if info.count != expected:
        raise InputError(info.path, f"has {info.count} band(s), expected {expected} ({_band_list(info)})")


# --------------------------------------------------------------------------- reference grid


@dataclass
class Grid:
    """A reference grid: every aligned input and the output share it exactly."""

    crs: CRS
    transform: Affine
    width: int
    height: int

    def __post_init__(self) -> None:
        self.crs = CRS.from_user_input(self.crs)  # "EPSG:3031", WKT or a CRS
        self.transform = self.transform if isinstance(self.transform, Affine) else Affine(*self.transform[:6])

    @classmethod
    def from_raster(cls, info: RasterInfo) -> Grid:
        return cls(info.crs, info.affine, info.width, info.height)

    @property
    def resolution(self) -> tuple[float, float]:
        return abs(self.transform.a), abs(self.transform.e)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        return rasterio.transform.array_bounds(self.height, self.width, self.transform)[:4]

    def windows(self, size: int, overlap: int = 0) -> Iterator[Window]:
        """size x size windows with `overlap` pixels shared by neighbours, row by row, covering the whole grid.
        The last row and column are shifted inward (not padded), so every window is full size unless the grid
        itself is smaller than `size` (TorchGeo #431: a stride that never reaches the edge)."""
        if size < 1 or not 0 <= overlap < size:
            raise ValueError(f"need size >= 1 and 0 <= overlap < size, got size={size}, overlap={overlap}")
        for row in _offsets(self.height, size, size - overlap):
            for col in _offsets(self.width, size, size - overlap):
                yield Window(col, row, min(size, self.width), min(size, self.height))

    def scaled(self, factor: float) -> Grid:
        """The grid with pixels `factor` times larger (2: 40 m -> 80 m) or smaller (0.5: 40 m -> 20 m), same
        origin and same outer edges. Coarsening needs width and height divisible by the factor, or the edges
        could not stay where they are."""
        if factor >= 1:
            k = _integer(factor)
            if self.width % k or self.height % k:
                raise ValueError(f"grid of {self.width}x{self.height} pixels does not divide by {k}: crop it to a "
                                 f"multiple of {k} first")
            return Grid(self.crs, self.transform @ Affine.scale(k), self.width // k, self.height // k)
        k = _integer(1 / factor)
        return Grid(self.crs, self.transform @ Affine.scale(1 / k), self.width * k, self.height * k)


def _offsets(extent: int, size: int, stride: int) -> list[int]:
    if extent <= size:
        return [0]
    return [*range(0, extent - size, stride), extent - size]


def _integer(value: float) -> int:
    k = round(value)
    if k < 1 or abs(value - k) > 1e-9:
        raise ValueError(f"scale factor must be an integer or 1/integer, got {value}")
    return k


# --------------------------------------------------------------------------- alignment


class AlignedReader:
    """One raster warped onto a `Grid`; `read(window)` -> (float32 [bands, h, w], valid bool [h, w]).

    Invalid pixels (outside the source footprint, source nodata, NaN, masked by an internal mask) come out as NaN
    from the warp, so `valid` is simply "finite in every band": one rule for every convention. The warp output is
    float32 with NaN as its nodata so that no real value can collide with the nodata marker.
    """

    def __init__(self, path: str | Path, grid: Grid, bands: list[int], resampling: str | Resampling,
                 src_nodata: float | None = None):
        self.info = open_raster(path)
        self.grid = grid
        self.bands = list(bands)
        for band in self.bands:
            if not 1 <= band <= self.info.count:
                raise InputError(path, f"has no band {band} (it has {self.info.count})")
        self._src = rasterio.open(path)
        try:
            self._vrt = WarpedVRT(self._src, crs=grid.crs, transform=grid.transform, width=grid.width,
                                  height=grid.height, resampling=_resampling(resampling), dtype="float32",
                                  nodata=np.nan, src_nodata=self._src_nodata(src_nodata))
        except BaseException:
            self._src.close()
            raise

    def _src_nodata(self, override: float | None) -> float | None:
        """The override (TorchGeo #3847: products that declare the wrong nodata), else the file's tag. A float file
        without a tag uses NaN (the Bremen SIC file): declaring it lets the warp leave NaN pixels out of the
        resampling kernel instead of smearing them over their neighbours."""
        if override is not None:
            return override
        if self._src.nodata is not None:
            return self._src.nodata
        return np.nan if np.dtype(self._src.dtypes[0]).kind == "f" else None

    def read(self, window: Window) -> tuple[np.ndarray, np.ndarray]:
        array = self._vrt.read(self.bands, window=window, out_dtype="float32")
        return array, np.isfinite(array).all(axis=0)

    def close(self) -> None:
        self._vrt.close()
        self._src.close()

    def __enter__(self) -> AlignedReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def aligned_reader(path: str | Path, grid: Grid, bands: list[int] | str | None = None,
                   resampling: str | Resampling = "bilinear", src_nodata: float | None = None) -> AlignedReader:
    """`path` on `grid`, window by window. bands: 1-based indexes, or a `select_bands` spec ("HH,HV"), None: all.
    resampling: "average" to downsample MSI, "bilinear" to upsample SAR, "nearest" for labels and masks."""
    if bands is None or isinstance(bands, str):
        bands = select_bands(open_raster(path), bands)
    return AlignedReader(path, grid, bands, resampling, src_nodata)


def _resampling(value: str | Resampling) -> Resampling:
    if isinstance(value, Resampling):
        return value
    try:
        return Resampling[value]
    except KeyError:
        raise ValueError(f"unknown resampling {value!r}; e.g. nearest, bilinear, average") from None


def footprint_in(info: RasterInfo, crs: CRS | str) -> tuple[float, float, float, float]:
    """The raster's bounds in another CRS (edges densified: polar-stereographic edges map to curves)."""
    return rasterio.warp.transform_bounds(CRS.from_user_input(info.crs), CRS.from_user_input(crs), *info.bounds,
                                          densify_pts=21)


def overlap_fraction(info_a: RasterInfo, info_b: RasterInfo) -> float:
    """Share of A's bounding box covered by B's footprint's bounding box, in A's CRS (0 when disjoint)."""
    left, bottom, right, top = info_a.bounds
    try:
        b_left, b_bottom, b_right, b_top = footprint_in(info_b, info_a.crs)
    except RasterioError:
        return 0.0  # B does not even project into A's CRS
    width = min(right, b_right) - max(left, b_left)
    height = min(top, b_top) - max(bottom, b_bottom)
    if not (math.isfinite(width) and math.isfinite(height)) or width <= 0 or height <= 0:
        return 0.0
    return (width * height) / ((right - left) * (top - bottom))


def overlap_problem(info_a: RasterInfo, info_b: RasterInfo) -> str | None:
    """None when B overlaps A (A's CRS is the reference), else a one-line reason."""
    if overlap_fraction(info_a, info_b) > 0:
        return None
    return (f"no overlap: {info_b.path} does not intersect {info_a.path} "
            f"(bounds {_fmt_bounds(info_a.bounds)} in {_crs_label(info_a.crs)})")


def _fmt_bounds(bounds) -> str:
    return "(" + ", ".join(f"{v:.0f}" for v in bounds) + ")"


def _crs_label(crs: str) -> str:
    return crs if crs.startswith("EPSG:") else (CRS.from_user_input(crs).to_string()[:60])


# --------------------------------------------------------------------------- value conventions


def sar_to_db(array: np.ndarray, units: str = "auto", path: str | Path = "<array>") -> np.ndarray:
    """SAR backscatter as float32 dB.

    units="db": returned as float32. units="linear": 10*log10; values <= 0 (S1 border zeros, noise over-subtraction)
    become NaN, i.e. invalid. units="auto" decides on the median of the finite values:
      median < 0           -> dB (a linear power's median cannot be negative);
      0 <= median < 1      -> linear (sigma0 of sea ice and water is 0.001-0.5; a few bright targets reach tens,
                              and a few slightly negative noise-corrected pixels do not change the median);
      median >= 1          -> refused: 8/16-bit DNs, amplitudes or unusually bright dB all look like this, and a
                              wrong guess silently ruins every value, so the caller must say which.
    The median, not "any negative value", because noise-corrected linear HV has some negative pixels.
    """
    array = np.asarray(array, dtype=np.float32)
    if units not in ("auto", "db", "linear"):
        raise ValueError(f"units must be 'auto', 'db' or 'linear', got {units!r}")
    if units == "auto":
        units = guess_sar_units(array, path)
    elif units == "linear" and _finite_median(array, path) < 0:
        raise InputError(path, "SAR values were declared linear but their median is negative: they look like dB")
    if units == "db":
        return array
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(array > 0, 10 * np.log10(array), np.nan).astype(np.float32)


def _finite_median(array: np.ndarray, path) -> float:
    flat = np.asarray(array).ravel()
    flat = flat[:: max(1, flat.size // _MEDIAN_SAMPLE)]  # a regular sample: the median of a whole scene costs GBs
    finite = flat[np.isfinite(flat)]
    if finite.size == 0:
        raise InputError(path, "has no finite SAR values")
    return float(np.median(finite))


_MEDIAN_SAMPLE = 1_000_000


def guess_sar_units(array: np.ndarray, path: str | Path = "<array>") -> str:
    """"db" or "linear" by the rule of `sar_to_db`. Decide once per scene (on an overview or a sample of windows)
    and pass the answer to `sar_to_db` for every window: deciding per window could flip between windows."""
    median = _finite_median(array, path)
    if median < 0:
        return "db"
    if median < 1:
        return "linear"
    raise InputError(path, f"cannot tell whether the SAR values are dB or linear (median {median:.3g}): "
                     "give the units explicitly (db or linear)")


def decimated(path: str | Path, bands: list[int], max_side: int = 1024) -> np.ndarray:
    """float32 [bands, h, w] of the whole raster read at most `max_side` pixels a side (overviews when the file has
    them), NaN where there is no data: what per-scene decisions (dB or linear) look at, in bounded memory."""
    with rasterio.open(path) as ds:
        step = max(1, -(-max(ds.width, ds.height) // max_side))
        shape = (len(bands), max(1, ds.height // step), max(1, ds.width // step))
        data = ds.read(bands, out_shape=shape, masked=True, out_dtype="float32")
    return np.ma.filled(data, np.nan).astype(np.float32)


def s2_offset(processing_baseline: str) -> int:
    """The L2A BOA_ADD_OFFSET to remove: 1000 from processing baseline 04.00 (25 Jan 2022), 0 before."""
    major, _, minor = processing_baseline.strip().partition(".")
    return 1000 if (int(major), int(minor or 0)) >= (4, 0) else 0


def s2_reflectance(array: np.ndarray, offset: int = 1000, scale: float = 10000.0) -> np.ndarray:
    """Sentinel-2 L2A digital numbers -> float32 reflectance (DN - offset) / scale. offset: 1000 for processing
    baseline >= 04.00, 0 before (see `s2_offset`). DN 0 is the product's nodata and becomes NaN; slightly negative
    reflectances (dark water after the offset) are kept, as ESA does."""
    array = np.asarray(array)
    out = (array.astype(np.float32) - np.float32(offset)) / np.float32(scale)
    return np.where(array == 0, np.float32(np.nan), out).astype(np.float32)


# --------------------------------------------------------------------------- output


class RasterWriter:
    """Write a raster on `grid` window by window, published as a COG at `target` only when the block ends cleanly.

    Streaming goes to a tiled GTiff next to the target (not to the COG driver: that one buffers the whole raster in
    memory and writes never-touched regions as 0, not as nodata). At close: overviews (nearest for integer classes,
    average for float probabilities), a copy to COG, an atomic rename onto the target. On an exception the
    temporary files are removed and the target is left as it was. Windows never written read as `nodata`: GDAL
    fills unwritten tiles with the declared nodata when it closes a GTiff (with nodata=None they read 0). Windows
    aligned to 512-pixel blocks write fastest (an unaligned window rewrites partial compressed tiles).
    """

    def __init__(self, target: str | Path, grid: Grid, dtype: str, nodata: float | None, *, count: int = 1,
                 tags: dict | None = None, descriptions: list[str] | None = None):
        self.target = Path(target)
        self.grid = grid
        self.dtype = np.dtype(dtype).name
        self.nodata = nodata
        self.count = count
        self.tags = dict(tags or {})
        self.descriptions = list(descriptions or [])
        if self.descriptions and len(self.descriptions) != count:
            raise ValueError(f"{len(self.descriptions)} descriptions for {count} band(s)")
        self._tmp = temp_path_for(self.target.with_suffix(".tif"))
        self._ds = None

    def _is_float(self) -> bool:
        return np.dtype(self.dtype).kind == "f"

    def __enter__(self) -> RasterWriter:
        self.target.parent.mkdir(parents=True, exist_ok=True)
        self._ds = rasterio.open(
            self._tmp, "w", driver="GTiff", width=self.grid.width, height=self.grid.height, count=self.count,
            dtype=self.dtype, crs=self.grid.crs, transform=self.grid.transform, nodata=self.nodata, tiled=True,
            blockxsize=BLOCK, blockysize=BLOCK, compress="deflate", predictor=3 if self._is_float() else 2,
            bigtiff="IF_SAFER")
        return self

    def write(self, array: np.ndarray, window: Window) -> None:
        """array: [h, w] (one band) or [count, h, w], cast to the output dtype."""
        array = np.asarray(array)
        if array.ndim == 2:
            array = array[None]
        expected = (self.count, int(window.height), int(window.width))
        if array.shape != expected:
            raise ValueError(f"array of shape {array.shape} for a window needing {expected}")
        self._ds.write(array.astype(self.dtype, copy=False), window=window)

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            try:
                if exc_type is None:
                    self._describe()
            finally:
                self._ds.close()  # fills the tiles never written with nodata
            if exc_type is None:
                self._publish()
        finally:
            with contextlib.suppress(OSError):
                self._tmp.unlink()

    def _describe(self) -> None:
        for band, text in enumerate(self.descriptions, 1):
            self._ds.set_band_description(band, text)
        if self.tags:
            self._ds.update_tags(**{str(k): str(v) for k, v in self.tags.items()})

    def _publish(self) -> None:
        resampling = Resampling.average if self._is_float() else Resampling.nearest
        self._build_overviews(resampling)
        with atomic_output(self.target) as tmp:
            rasterio.shutil.copy(self._tmp, tmp, driver="COG", compress="DEFLATE", blocksize=BLOCK,
                                 predictor="FLOATING_POINT" if self._is_float() else "YES",
                                 overview_resampling=resampling.name.upper(), bigtiff="IF_SAFER")

    def _build_overviews(self, resampling: Resampling) -> None:
        longest = max(self.grid.width, self.grid.height)
        factors = [f for f in (2, 4, 8, 16, 32) if longest // f >= BLOCK // 2]
        if not factors:
            return
        with rasterio.open(self._tmp, "r+") as ds:
            ds.build_overviews(factors, resampling)
            ds.update_tags(ns="rio_overview", resampling=resampling.name)


def is_valid_cog(path: str | Path) -> bool:
    """GDAL (>= 3.1) reports LAYOUT=COG for a file whose header, IFDs and tiles are in cloud-optimised order.
    (rio-cogeo would validate more; it is not a dependency.)"""
    try:
        with rasterio.open(path) as ds:
            return ds.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
    except RasterioError:
        return False


def write_edge_geojson(mask: np.ndarray, grid: Grid, target: str | Path, *, lines: bool = False) -> Path:
    """The ice edge: boundaries of the regions where mask == 1, as GeoJSON in the grid's CRS (atomic write).

    Polygons by default (their rings are the edges, holes included); lines=True gives one LineString per ring.
    Coordinates are in the grid's CRS, not WGS84 as RFC 7946 expects, so the legacy "crs" member names it.
    Other mask values (0 water, 255 nodata) are all "not ice".
    """
    mask = np.asarray(mask)
    if mask.shape != (grid.height, grid.width):
        raise ValueError(f"mask of shape {mask.shape} for a grid of {grid.height}x{grid.width}")
    ice = (mask == 1).astype(np.uint8)
    features = []
    for geometry, _ in rasterio.features.shapes(ice, mask=ice.astype(bool), transform=grid.transform):
        if lines:
            features += [_feature({"type": "LineString", "coordinates": ring}) for ring in geometry["coordinates"]]
        else:
            features.append(_feature(geometry))
    collection = {"type": "FeatureCollection", **_crs_member(grid.crs), "features": features}
    return atomic_write_text(target, json.dumps(collection) + "\n")


def _feature(geometry: dict) -> dict:
    return {"type": "Feature", "properties": {"class": 1}, "geometry": geometry}


def _crs_member(crs: CRS) -> dict:
    """The GeoJSON 2008 "crs" member for an EPSG code (GDAL/QGIS read it); a CRS with no exact code has no URN,
    so its WKT goes into a foreign member "crs_wkt" instead."""
    code = crs.to_epsg(confidence_threshold=100)
    if code:
        return {"crs": {"type": "name", "properties": {"name": f"urn:ogc:def:crs:EPSG::{code}"}}}
    return {"crs_wkt": crs.to_wkt()}


__all__ = [
    "RASTER", "RASTER_SUFFIXES", "AlignedReader", "Grid", "RasterInfo", "RasterWriter", "aligned_reader",
    "check_band_count", "crs_string", "footprint_in", "guess_sar_units", "is_raster_name", "is_valid_cog",
    "open_raster",
    "overlap_fraction", "overlap_problem", "s2_offset", "s2_reflectance", "sar_to_db", "select_bands",
    "write_edge_geojson",
]
