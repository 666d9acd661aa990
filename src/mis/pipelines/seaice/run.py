"""File-level glue for `mis seaice`: a SAR and an MSI GeoTIFF (or a CSV of pairs) -> an ice GeoTIFF (COG) on the
reference grid, through the shared batch runner (bad pairs reported and skipped, atomic writes, torchrun).

The reference grid is the SAR raster's own (CRS, transform, size), or the MSI's (`grid="msi"`), or another
raster's (`grid=PATH`): it is the network's coarse grid and the output's grid; the fine grid is the same extent
`ratio` times finer. Each sensor is read onto its grid through a WarpedVRT, window by window (bilinear for the
upsampled or same-size sensor, average for a sensor coarser than its grid), so neither scene is held in memory.
"""
from __future__ import annotations

import csv
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rasterio.windows import Window

from mis.errors import InputError, UsageError
from mis.io.files import check_output_location, output_paths_for, path_key
from mis.io.raster import (Grid, RasterWriter, aligned_reader, decimated, guess_sar_units, open_raster, overlap_problem,
                           s2_reflectance, sar_to_db, select_bands, write_edge_geojson)
from mis.pipelines.seaice.pipeline import SeaIcePipeline, scale_inputs
from mis.runtime.batch import BatchJob, run_batch
from mis.runtime.config import RuntimeConfig
from mis.runtime.executor import RunSummary, WorkItem

ICE_NODATA = 255
# GDAL's block cache defaults to 5 % of RAM and fills with every block a scene's windows touch: bounded here so
# that memory does not grow with the scene (the windows themselves are a few tens of MB)
GDAL_CACHE_MB = 64


@dataclass(kw_only=True)
class SceneOptions:
    grid: str = "sar"                 # "sar" | "msi" | a raster path
    sar_bands: str | None = None      # e.g. "HH,HV" or "1,2" (default: the card's, else every band)
    msi_bands: str | None = None      # e.g. "B02,B03,B04,B08"
    sar_units: str = "auto"           # "auto" | "db" | "linear"
    msi_offset: int | None = None     # S2 L2A BOA_ADD_OFFSET for integer MSI (None: the file's tag, else 1000)
    probability: bool = False         # float32 probability instead of 0/1 classes
    edge: bool = False                # also the ice edge as GeoJSON polygons (`<output>_edge.geojson`)


@dataclass
class Pair:
    sar: Path
    msi: Path


def read_csv_rows(path: Path, columns: tuple[str, ...], what: str) -> list[dict[str, str]]:
    """The rows of a CSV that must have `columns` and at least one row; `what` names it in the error."""
    try:
        with open(path, newline="") as handle:
            rows = list(csv.DictReader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(path, f"not a readable CSV of {what} ({exc})") from None
    if not rows or not set(columns) <= set(rows[0]):
        raise InputError(path, f"a CSV of {what} needs the columns {','.join(columns)} and at least one row")
    return rows


def read_pairs_csv(path: Path) -> list[Pair]:
    """A CSV with columns `sar,msi` (paths relative to the CSV's folder)."""
    return [Pair(path.parent / row["sar"], path.parent / row["msi"])
            for row in read_csv_rows(path, ("sar", "msi"), "pairs")]


def plan(pairs: list[Pair], output: Path) -> list[WorkItem]:
    """One item per pair, named after its SAR file (`<sar>_ice.tif`, parent folders prepended when two SAR files
    share a name), or -o itself when it names one .tif for one pair."""
    check_output_location(output)
    one_file = output.suffix.lower() in (".tif", ".tiff")
    if one_file and len(pairs) > 1:
        raise UsageError(f"-o {output} names one file but there are {len(pairs)} pairs; give a folder")
    targets = [output] if one_file else output_paths_for([p.sar for p in pairs], output, suffix=".tif",
                                                          stem_suffix="_ice")
    counts = Counter(path_key(t) for t in targets)
    items = []
    for pair, target in zip(pairs, targets):
        problem = None
        if counts[path_key(target)] > 1:
            problem = f"{pair.sar}: another pair would write the same output {target.name}; use one SAR file once"
        items.append(WorkItem(f"{pair.sar} + {pair.msi}", pair.sar, target, problem))
    return items


@dataclass
class Scene:
    grid: Grid                 # the coarse (output) grid
    fine: Grid
    sar_reader: object
    msi_reader: object
    sar_units: str
    msi_offset: int | None     # None: the MSI is already reflectance
    sources: dict

    def close(self) -> None:
        self.sar_reader.close()
        self.msi_reader.close()


def _reference_grid(options: SceneOptions, sar_info, msi_info) -> Grid:
    if options.grid == "sar":
        return Grid.from_raster(sar_info)
    if options.grid == "msi":
        return Grid.from_raster(msi_info)
    return Grid.from_raster(open_raster(options.grid))


def open_scene(pipeline: SeaIcePipeline, pair: Pair, options: SceneOptions) -> Scene:
    """Check the pair (readable, georeferenced, overlapping, the model's band counts) and open both on their grids."""
    sar_info, msi_info = open_raster(pair.sar), open_raster(pair.msi)
    problem = overlap_problem(sar_info, msi_info)
    if problem:
        raise InputError(pair.msi, problem)
    pre = pipeline.card["preprocessing"]
    sar_bands = select_bands(sar_info, options.sar_bands or _named(sar_info, pre.get("sar_bands")))
    msi_bands = select_bands(msi_info, options.msi_bands or _named(msi_info, pre.get("msi_bands")))
    for info, bands, channels, name in ((sar_info, sar_bands, pipeline.sar_channels, "SAR"),
                                        (msi_info, msi_bands, pipeline.msi_channels, "MSI")):
        if len(bands) != channels:
            raise InputError(info.path, f"{len(bands)} {name} band(s) selected, the model takes {channels} (choose "
                             f"them with --{name.lower()}-bands)")
    grid = _reference_grid(options, sar_info, msi_info)
    fine = grid.scaled(1 / pipeline.ratio)
    sar_grid, msi_grid = (fine, grid) if pipeline.finer == "sar" else (grid, fine)
    units = options.sar_units
    if units == "auto":
        units = guess_sar_units(decimated(pair.sar, sar_bands), pair.sar)
    offset = None
    if np.dtype(msi_info.dtypes[0]).kind in "ui":
        offset = options.msi_offset if options.msi_offset is not None else _boa_offset(msi_info)
    check_has_data(pair.msi, msi_bands, zero_is_nodata=offset is not None)
    sar_reader = aligned_reader(pair.sar, sar_grid, sar_bands, _resampling_for(sar_info, sar_grid))
    try:
        msi_reader = aligned_reader(pair.msi, msi_grid, msi_bands, _resampling_for(msi_info, msi_grid))
    except BaseException:
        sar_reader.close()
        raise
    return Scene(grid, fine, sar_reader, msi_reader, units, offset,
                 {"sar": str(pair.sar), "msi": str(pair.msi), "sar_bands": sar_bands, "msi_bands": msi_bands})


def check_has_data(path: Path, bands: list[int], zero_is_nodata: bool) -> None:
    """An MSI with no valid pixel (on an overview) is named here; the SAR's check is its units decision."""
    values = decimated(path, bands)
    if zero_is_nodata:
        values[values == 0] = np.nan          # Sentinel-2 L2A's DN 0 is nodata
    if not np.isfinite(values).all(0).any():
        raise InputError(path, "no data: every pixel is nodata")


def _named(info, card_bands: str | None) -> str | None:
    """The card's band names apply to files that name their bands; unnamed bands are taken in order."""
    return card_bands if any(info.descriptions) else None


def _boa_offset(info) -> int:
    tag = info.tags.get("BOA_ADD_OFFSET")
    try:
        return -int(float(tag)) if tag is not None else 1000
    except ValueError:
        return 1000


def _resampling_for(info, grid: Grid) -> str:
    """Average when the source is finer than the grid (downsampling), bilinear otherwise."""
    source = abs(info.resolution[0])
    target = abs(grid.resolution[0])
    return "average" if source < target * 0.75 and info.crs == grid.crs.to_string() else "bilinear"


def scene_reader(pipeline: SeaIcePipeline, scene: Scene):
    """The pipeline's window reader over the two aligned rasters (coarse window -> both sensors scaled)."""
    r = pipeline.ratio

    def read(row: int, col: int, size: int):
        h, w = min(size, scene.grid.height - row), min(size, scene.grid.width - col)
        coarse = Window(col, row, w, h)
        fine = Window(col * r, row * r, w * r, h * r)
        sar_window, msi_window = (fine, coarse) if pipeline.finer == "sar" else (coarse, fine)
        sar, sar_valid = scene.sar_reader.read(sar_window)
        msi, msi_valid = scene.msi_reader.read(msi_window)
        sar_db = sar_to_db(sar, scene.sar_units, scene.sources["sar"])
        reflectance = s2_reflectance(msi, scene.msi_offset) if scene.msi_offset is not None else msi
        sar_valid &= np.isfinite(sar_db).all(0)
        msi_valid &= np.isfinite(reflectance).all(0)
        valid = pipeline.coarse_valid(sar_valid, msi_valid)
        sar_s, msi_s = scale_inputs(sar_db, reflectance, pipeline.card)
        return pipeline.padded(np.nan_to_num(sar_s), np.nan_to_num(msi_s), valid, size)

    return read


def seaice_job(pipeline: SeaIcePipeline, options: SceneOptions, msi_of: dict) -> BatchJob:
    def read(item: WorkItem):
        return open_scene(pipeline, Pair(item.source, msi_of[item.key]), options)

    def compute(batch):
        return batch     # the network runs while writing, one band of rows at a time

    def write(item: WorkItem, scene: Scene) -> dict:
        try:
            return write_scene(pipeline, scene, item.target, options)
        finally:
            scene.close()

    return BatchJob(read=read, compute=compute, write=write, description="seaice")


def write_scene(pipeline: SeaIcePipeline, scene: Scene, target: Path, options: SceneOptions) -> dict:
    dtype, nodata = ("float32", float("nan")) if options.probability else ("uint8", ICE_NODATA)
    tags = {"model_sha256": pipeline.card.get("sha256"), "mis_task": "seaice", **scene.sources,
            "classes": "probability of ice" if options.probability else "0=water,1=ice,255=nodata"}
    ice = valid = 0
    with RasterWriter(target, scene.grid, dtype, nodata, tags=tags,
                      descriptions=["ice_probability" if options.probability else "ice"]) as writer:
        for row, probability in pipeline.rows(scene_reader(pipeline, scene), scene.grid.height, scene.grid.width):
            window = Window(0, row, scene.grid.width, probability.shape[0])
            finite = np.isfinite(probability)
            valid += int(finite.sum())
            ice += int((probability[finite] >= 0.5).sum())
            if options.probability:
                writer.write(probability, window)
            else:
                classes = np.full(probability.shape, ICE_NODATA, np.uint8)
                classes[finite] = probability[finite] >= 0.5
                writer.write(classes, window)
        if valid == 0:
            raise InputError(scene.sources["sar"], "no pixel where both rasters have data (all nodata)")
    report = {}
    if options.edge:
        report["edge"] = str(write_edge(target, scene.grid, options.probability))
    return {**report, "size": f"{scene.grid.width}x{scene.grid.height}", "valid_fraction": round(valid / scene.grid.width /
            scene.grid.height, 4), "ice_fraction": round(ice / valid, 4), "sar_units": scene.sar_units}


def edge_path(target: Path) -> Path:
    return target.with_name(target.stem + "_edge.geojson")


def write_edge(target: Path, grid: Grid, probability: bool) -> Path:
    """The ice edge of the map just written (read back whole as uint8: 1 byte a pixel, 64 MB for 8000 x 8000)."""
    import rasterio

    with rasterio.open(target) as written:
        band = written.read(1)
    ice = (band >= 0.5) & np.isfinite(band) if probability else band == 1
    return write_edge_geojson(ice.astype(np.uint8), grid, edge_path(target))


def seaice_files(pipeline: SeaIcePipeline, pairs: list[Pair], output: Path, options: SceneOptions,
                 runtime: RuntimeConfig | None = None, *, skip_existing: bool = False,
                 overwrite: bool = False) -> RunSummary | None:
    from rasterio.env import set_gdal_config

    set_gdal_config("GDAL_CACHEMAX", GDAL_CACHE_MB * 1024 * 1024)   # rasterio passes it to GDAL as bytes
    items = plan(pairs, output)
    msi_of = {item.key: pair.msi for item, pair in zip(items, pairs)}
    return run_batch(items, lambda device: seaice_job(pipeline.on_device(device) if device else pipeline, options,
                                                      msi_of), runtime or RuntimeConfig(quiet=True),
                     skip_existing=skip_existing, overwrite=overwrite)
