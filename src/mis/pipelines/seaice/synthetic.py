"""Seeded synthetic SAR + multispectral sea-ice scene pairs for tests, sample data and CPU smoke training.

Clearly synthetic, not physical: the point is to reproduce the two confusions that make a dual-sensor network
(ViSual_IceD) worth having.

- SAR (Sentinel-1 EW like, HH + HV sigma0 in dB): ice is bright and textured, calm open water is dark, but
  wind-roughened water is as bright as ice in HH. Gamma speckle (multiplicative, ENL 3-5) and an incidence-angle
  gradient across the swath (dB per degree, steeper for water than for ice). HV is lower than HH and less sensitive
  to wind.
- MSI (Sentinel-2 like, B02 B03 B04 B08 reflectance): ice/snow is bright, water dark, thin haze everywhere, and
  bright smooth clouds that hide the surface completely, so cloud over water looks like ice.

The ice mask is a thresholded multi-scale Gaussian random field (pack ice) with floes (distinct blobs off the ice
edge) and leads (thin open-water lines inside the pack). It is drawn on the finer grid (`ice_fine`); the label grid
is the coarser one (`ice`, majority of each ratio x ratio block). Both sensor grids cover the same area.

The generator core is numpy + scipy only; rasterio is imported inside `write_scene_geotiffs`. Deterministic: one
`np.random.default_rng(seed)` whose generator is passed down in a fixed order, and every scene parameter is always
drawn (then possibly overridden), so `make_scene(s, wind=0)` and `make_scene(s, wind=12)` share ice, clouds and
speckle.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import scipy.fft

SAR_BANDS = ("HH", "HV")
MSI_BANDS = ("B02", "B03", "B04", "B08")
S2_QUANTIFICATION = 10000  # Sentinel-2 L2A: reflectance = (DN - offset) / 10000 ...
S2_OFFSET = 1000  # ... with the offset of processing baseline 04.00
SAMPLE_SEED = 17

# Reflectances for B02, B03, B04, B08 (blue, green, red, NIR).
ICE_REFLECTANCE = np.array([0.82, 0.80, 0.77, 0.66], dtype=np.float32)  # snow-covered ice: bright, a bit less in NIR
WATER_REFLECTANCE = np.array([0.06, 0.045, 0.03, 0.015], dtype=np.float32)  # open water: dark, darkest in NIR
CLOUD_REFLECTANCE = np.array([0.78, 0.77, 0.76, 0.75], dtype=np.float32)  # clouds: bright and spectrally flat
HAZE_COLOUR = np.array([1.0, 0.8, 0.6, 0.3], dtype=np.float32)  # thin haze scatters blue most

REFERENCE_INCIDENCE = 35.0  # degrees; sigma0 levels below are given at this angle
ICE_HH_DB = -11.0
ICE_SLOPE_DB_PER_DEG = -0.2
WATER_SLOPE_DB_PER_DEG = -0.4
CALM_WATER_HV_DB = -31.0

# Default origins (upper-left corner, metres) when none is given: Weddell Sea / Fram Strait.
_SOUTH_ORIGIN = (-1_400_000.0, 1_700_000.0)
_NORTH_ORIGIN = (860_000.0, -860_000.0)


@dataclass
class SyntheticScene:
    sar: np.ndarray  # float32 [2, Hs, Ws]: HH, HV sigma0 in dB on the SAR grid
    msi: np.ndarray  # float32 [4, Hm, Wm]: B02, B03, B04, B08 reflectance 0..1 on the MSI grid
    ice: np.ndarray  # uint8 [Hc, Wc]: 0 water / 1 ice on the coarser (label) grid
    ice_fine: np.ndarray  # uint8 [Hf, Wf]: the same on the finer grid (Hf = ratio * Hc)
    cloud: np.ndarray  # bool [Hm, Wm]: where the MSI sees cloud, not the surface
    ratio: int  # integer resolution ratio between the grids
    finer: str  # "sar" or "msi": which sensor is on the finer grid
    incidence: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))  # float32 [Ws]: degrees per column
    params: dict[str, float] = field(default_factory=dict)  # drawn scene parameters (enl, wind, cloud_cover, ...)

    @property
    def ice_on_sar_grid(self) -> np.ndarray:
        return self.ice_fine if self.finer == "sar" else self.ice

    @property
    def ice_on_msi_grid(self) -> np.ndarray:
        return self.ice_fine if self.finer == "msi" else self.ice


# ----------------------------------------------------------------------------------------------------------------
# Random fields


@lru_cache(maxsize=8)
def _wavenumber2(shape: tuple[int, int]) -> np.ndarray:
    """(2 pi k)^2 on the rfft2 grid of `shape`, in radians^2 per pixel^2."""
    ky = np.fft.fftfreq(shape[0]).astype(np.float32)[:, None]
    kx = np.fft.rfftfreq(shape[1]).astype(np.float32)[None, :]
    k2 = (2 * np.pi) ** 2 * (ky ** 2 + kx ** 2)
    k2.setflags(write=False)
    return k2


def random_field(rng: np.random.Generator, shape: tuple[int, int], scales: tuple[float, ...],
                 weights: tuple[float, ...] | None = None) -> np.ndarray:
    """Zero-mean, unit-variance Gaussian random field (float32), synthesised in the Fourier domain (periodic).

    White noise low-passed by Gaussians of standard deviation `scales` (pixels); each scale contributes with
    standard deviation proportional to its weight.
    """
    weights = weights or (1.0,) * len(scales)
    k2 = _wavenumber2(tuple(shape))
    spectrum_filter = np.zeros_like(k2)
    for scale, weight in zip(scales, weights):
        g = np.exp(-0.5 * k2 * np.float32(scale) ** 2)
        spectrum_filter += np.float32(weight) * g / np.sqrt(np.mean(g * g) + 1e-30)
    noise = rng.standard_normal((*k2.shape, 2), dtype=np.float32).view(np.complex64)[..., 0]
    values = scipy.fft.irfft2(noise * spectrum_filter, s=shape).astype(np.float32, copy=False)
    values -= values.mean()
    values /= values.std() + 1e-12
    return values


def block_mean(a: np.ndarray, ratio: int) -> np.ndarray:
    """Mean over non-overlapping ratio x ratio blocks of the last two axes (float32)."""
    h, w = a.shape[-2:]
    return a.reshape(*a.shape[:-2], h // ratio, ratio, w // ratio, ratio).mean(axis=(-3, -1), dtype=np.float32)


# ----------------------------------------------------------------------------------------------------------------
# Scene


def make_scene(seed: int, *, coarse_size: int = 128, ratio: int = 4, finer: str = "msi",
               cloud_cover: float | None = None, wind: float | None = None) -> SyntheticScene:
    """A seeded SAR + MSI pair over the same area; the finer grid is `ratio` times the coarse (label) grid.

    cloud_cover: cloud fraction of the MSI (drawn uniformly in 0..0.6 when None).
    wind: 10 m wind speed in m/s over open water (drawn in 2..14 when None); 0 gives calm, dark water in SAR,
    while more than about 6 m/s makes patches of water as bright as ice in HH.
    """
    # 1. Check inputs
    if finer not in ("sar", "msi"):
        raise ValueError(f"finer must be 'sar' or 'msi', got {finer!r}")
    if int(ratio) != ratio or ratio < 1:
        raise ValueError(f"ratio must be a positive integer, got {ratio!r}")
    if int(coarse_size) != coarse_size or coarse_size < 16:
        raise ValueError(f"coarse_size must be an integer >= 16, got {coarse_size!r}")
    if cloud_cover is not None and not 0.0 <= cloud_cover <= 1.0:
        raise ValueError(f"cloud_cover must be in [0, 1], got {cloud_cover!r}")
    if wind is not None and wind < 0:
        raise ValueError(f"wind must be >= 0 m/s, got {wind!r}")
    ratio, coarse_size = int(ratio), int(coarse_size)
    rng = np.random.default_rng(seed)

    # 2. Scene parameters: always drawn in the same order, then overridden, so overrides keep the rest of the scene
    near = rng.uniform(19.0, 25.0)
    far = rng.uniform(40.0, 46.0)
    params = {
        "ice_fraction": float(rng.uniform(0.35, 0.7)),
        "lead_width": float(rng.uniform(2.2, 3.4)),  # coarse pixels
        "enl": float(rng.uniform(3.0, 5.0)),
        "wind": float(rng.uniform(2.0, 14.0)),
        "cloud_cover": float(rng.uniform(0.0, 0.6)),
        "haze": float(rng.uniform(0.0, 0.04)),
        "incidence_near": float(near),
        "incidence_far": float(far),
        "look_right": float(rng.random() < 0.5),  # near range on the left (1) or on the right (0)
        "calm_water_hh": float(rng.uniform(-24.0, -21.0)),
        "ice_hh": float(ICE_HH_DB + rng.uniform(-1.0, 1.0)),
        "cross_pol_ratio": float(rng.uniform(6.5, 8.5)),
        "cloud_brightness": float(rng.uniform(0.85, 1.0)),
    }
    if wind is not None:
        params["wind"] = float(wind)
    if cloud_cover is not None:
        params["cloud_cover"] = float(cloud_cover)

    # 3. Ice on the finer grid, labels on the coarser one
    fine = coarse_size * ratio
    ice_fine = _ice_mask(rng, fine, ratio, params)
    ice = (block_mean(ice_fine, ratio) >= 0.5).astype(np.uint8)

    # 4. Each sensor sees the ice fraction of its own pixels
    fine_fraction = ice_fine.astype(np.float32)
    coarse_fraction = block_mean(fine_fraction, ratio)
    sar_on_fine = finer == "sar"
    sar, incidence = _render_sar(rng, fine_fraction if sar_on_fine else coarse_fraction,
                                 ratio if sar_on_fine else 1, params)
    msi, cloud = _render_msi(rng, coarse_fraction if sar_on_fine else fine_fraction,
                             1 if sar_on_fine else ratio, params)
    return SyntheticScene(sar=sar, msi=msi, ice=ice, ice_fine=ice_fine, cloud=cloud, ratio=ratio, finer=finer,
                          incidence=incidence, params=params)


def _ice_mask(rng: np.random.Generator, size: int, px: int, params: dict[str, float]) -> np.ndarray:
    """uint8 ice mask on a size x size grid with `px` pixels per coarse pixel: pack ice, floes and leads."""
    shape = (size, size)
    coarse = size // px
    # Pack ice: thresholded multi-scale field; ragged edges from the small scales.
    big = min(24.0, coarse / 4)
    pack_field = random_field(rng, shape, (big * px, big / 3 * px, 1.5 * px), (1.0, 0.45, 0.12))
    threshold = np.float32(np.quantile(pack_field, 1.0 - params["ice_fraction"]))
    pack = pack_field > threshold
    # Floes: distinct blobs in the water close to the ice edge, rarer further out.
    floe_field = random_field(rng, shape, (1.3 * px,))
    distance = threshold - pack_field  # > 0 in the water, in field standard deviations
    floes = (distance > 0.04) & (floe_field > 1.0 + 5.0 * distance)
    # Leads: thin bands along zero crossings of a smooth field, gated to finite segments inside the pack.
    lead_scale = 8.0 * px
    lead_field = random_field(rng, shape, (lead_scale,))
    gate = random_field(rng, shape, (8.0 * px,))
    half_width = 0.886 * params["lead_width"] * px / (2.0 * lead_scale)  # band |f| < w is ~ 2 w / |grad f| wide
    leads = (np.abs(lead_field) < half_width) & (gate > -0.4) & (pack_field > threshold + 0.25)
    return ((pack | floes) & ~leads).astype(np.uint8)


def _render_sar(rng: np.random.Generator, ice_fraction: np.ndarray, px: int,
                params: dict[str, float]) -> tuple[np.ndarray, np.ndarray]:
    """HH, HV sigma0 in dB (float32 [2, H, W]) and the incidence angle per column (float32 [W])."""
    h, w = ice_fraction.shape
    incidence = np.linspace(params["incidence_near"], params["incidence_far"], w, dtype=np.float32)
    if not params["look_right"]:
        incidence = incidence[::-1].copy()
    d_theta = (incidence - REFERENCE_INCIDENCE)[None, :]
    # Ice: bright, textured at several scales (ridges, deformed and level ice), gentle incidence slope.
    texture = random_field(rng, (h, w), (0.6 * px, 3.0 * px, 12.0 * px), (1.0, 0.8, 0.6))
    ice_hh = params["ice_hh"] + 2.0 * texture + ICE_SLOPE_DB_PER_DEG * d_theta
    ice_hv = ice_hh - params["cross_pol_ratio"] + 0.5 * texture
    # Water: dark when calm; local wind (gusts, lognormal around the mean) roughens it up to ice brightness in HH.
    gust = random_field(rng, (h, w), (5.0 * px, 18.0 * px))
    local_wind = params["wind"] * np.exp(0.5 * gust - 0.125)
    roughness = np.clip((local_wind - 3.0) / 5.0, 0.0, 1.1)  # no Bragg waves below ~3 m/s
    streaks = random_field(rng, (h, w), (0.8 * px, 2.5 * px))
    calm = params["calm_water_hh"]
    water_hh = (calm + roughness * (params["ice_hh"] - calm + 1.0 * streaks)
                + WATER_SLOPE_DB_PER_DEG * d_theta)
    water_hv = CALM_WATER_HV_DB + 3.0 * roughness + 0.2 * WATER_SLOPE_DB_PER_DEG * d_theta
    # Mix the two surfaces in linear power, then multiplicative gamma speckle (mean 1, variance 1 / ENL).
    enl = params["enl"]
    sar = np.empty((2, h, w), dtype=np.float32)
    for band, (ice_db, water_db) in enumerate(((ice_hh, water_hh), (ice_hv, water_hv))):
        power = ice_fraction * _db_to_linear(ice_db) + (1.0 - ice_fraction) * _db_to_linear(water_db)
        power *= rng.gamma(enl, 1.0 / enl, size=(h, w)).astype(np.float32)
        sar[band] = 10.0 * np.log10(np.maximum(power, 1e-10))
    return sar, incidence


def _render_msi(rng: np.random.Generator, ice_fraction: np.ndarray, px: int,
                params: dict[str, float]) -> tuple[np.ndarray, np.ndarray]:
    """B02, B03, B04, B08 reflectance (float32 [4, H, W]) and the cloud mask (bool [H, W])."""
    h, w = ice_fraction.shape
    # Surface: bright ice with a little texture (snow dunes, thinner ice), dark water.
    ice_texture = random_field(rng, (h, w), (1.0 * px, 10.0 * px))
    ice_brightness = np.clip(0.93 + 0.05 * ice_texture, 0.75, 1.0)
    frac = ice_fraction[None]
    surface = (frac * ICE_REFLECTANCE[:, None, None] * ice_brightness[None]
               + (1.0 - frac) * WATER_REFLECTANCE[:, None, None])
    # Thin haze everywhere, stronger in blue.
    haze_field = random_field(rng, (h, w), (15.0 * px,))
    haze = params["haze"] * np.clip(1.0 + 0.5 * haze_field, 0.0, None)
    surface = surface + haze[None] * HAZE_COLOUR[:, None, None]
    # Clouds: a thresholded smooth field covering `cloud_cover`; opaque a short way inside the edge.
    cloud_field = random_field(rng, (h, w), (3.0 * px, 10.0 * px, 25.0 * px), (0.35, 1.0, 0.8))
    cloud_texture = random_field(rng, (h, w), (2.0 * px, 8.0 * px))
    cover = params["cloud_cover"]
    threshold = np.float32(np.quantile(cloud_field, 1.0 - cover)) if cover > 0 else np.float32(np.inf)
    opacity = np.clip(0.5 + (cloud_field - threshold) / 0.06, 0.0, 1.0)
    cloud_reflectance = (CLOUD_REFLECTANCE[:, None, None]
                         * (params["cloud_brightness"] + 0.03 * cloud_texture)[None])
    msi = (1.0 - opacity[None]) * surface + opacity[None] * cloud_reflectance
    msi += rng.normal(0.0, 0.004, size=msi.shape).astype(np.float32)  # sensor noise
    cloud = cloud_field >= threshold
    return np.clip(msi, 0.0, 1.0).astype(np.float32), cloud


def _db_to_linear(db: np.ndarray) -> np.ndarray:
    return np.power(np.float32(10.0), np.asarray(db, dtype=np.float32) / np.float32(10.0))


# ----------------------------------------------------------------------------------------------------------------
# GeoTIFFs


def msi_to_dn(reflectance: np.ndarray) -> np.ndarray:
    """Reflectance 0..1 to Sentinel-2 L2A digital numbers (uint16, DN = 10000 * reflectance + 1000; 0 is nodata)."""
    dn = np.rint(reflectance.astype(np.float64) * S2_QUANTIFICATION) + S2_OFFSET
    return np.clip(dn, 1, np.iinfo(np.uint16).max).astype(np.uint16)


def default_origin(crs) -> tuple[float, float]:
    """Upper-left corner in metres for a polar stereographic CRS: the Weddell Sea (south) or Fram Strait (north)."""
    from rasterio.crs import CRS

    lat_0 = CRS.from_user_input(crs).to_dict().get("lat_0", -90)
    return _SOUTH_ORIGIN if lat_0 < 0 else _NORTH_ORIGIN


def write_scene_geotiffs(scene: SyntheticScene, folder: Path, *, crs: str = "EPSG:3031",
                         coarse_pixel_m: float = 160.0, msi_extent_margin: int = 8, crs_msi: str | None = None,
                         origin: tuple[float, float] | None = None,
                         margin_fill: str = "reflect") -> dict[str, Path]:
    """Write sar.tif, msi.tif and mask.tif; returns {"sar": path, "msi": path, "mask": path}.

    The SAR and the mask cover the scene in `crs` with the upper-left corner `origin` (snapped to the coarse grid;
    default: a polar sea for the CRS's hemisphere). The MSI raster extends `msi_extent_margin` coarse pixels
    further west and north (filled by mirroring the scene, or with nodata when margin_fill="nodata"). With
    `crs_msi` (e.g. EPSG:3976 next to EPSG:3031, or EPSG:3995 next to EPSG:3413) the MSI is warped (bilinear)
    onto a grid in that CRS with the same pixel size, snapped to multiples of it.
    """
    from rasterio.crs import CRS
    from rasterio.transform import Affine
    from rasterio.warp import Resampling, aligned_target, calculate_default_transform, reproject

    def from_origin(west: float, north: float, xsize: float, ysize: float) -> Affine:
        return Affine(xsize, 0.0, west, 0.0, -ysize, north)  # north-up, as rasterio's from_origin

    if margin_fill not in ("reflect", "nodata"):
        raise ValueError(f"margin_fill must be 'reflect' or 'nodata', got {margin_fill!r}")
    if msi_extent_margin < 0:
        raise ValueError(f"msi_extent_margin must be >= 0, got {msi_extent_margin!r}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    crs_obj = CRS.from_user_input(crs)
    x0, y0 = origin if origin is not None else default_origin(crs_obj)
    x0, y0 = round(x0 / coarse_pixel_m) * coarse_pixel_m, round(y0 / coarse_pixel_m) * coarse_pixel_m
    fine_pixel_m = coarse_pixel_m / scene.ratio
    sar_pixel_m = fine_pixel_m if scene.finer == "sar" else coarse_pixel_m
    msi_pixel_m = fine_pixel_m if scene.finer == "msi" else coarse_pixel_m
    common_tags = {"synthetic": "true", "generator": "mis.pipelines.seaice.synthetic",
                   **{k: f"{v:.6g}" for k, v in scene.params.items()}}

    paths = {"sar": folder / "sar.tif", "msi": folder / "msi.tif", "mask": folder / "mask.tif"}
    _write_geotiff(paths["sar"], scene.sar.astype(np.float32), from_origin(x0, y0, sar_pixel_m, sar_pixel_m),
                   crs_obj, nodata=float("nan"), descriptions=SAR_BANDS,
                   tags={**common_tags, "units": "sigma0 dB", "ACQUISITION_TIME": "2026-01-15T07:58:12Z"})
    _write_geotiff(paths["mask"], scene.ice[None], from_origin(x0, y0, coarse_pixel_m, coarse_pixel_m), crs_obj,
                   nodata=255, descriptions=("ice",), tags={**common_tags, "classes": "0=water,1=ice"})

    # MSI: pad west and north by the margin, then optionally warp into another CRS.
    pad = int(msi_extent_margin) * round(coarse_pixel_m / msi_pixel_m)
    dn = msi_to_dn(scene.msi)
    if margin_fill == "reflect":
        dn = np.pad(dn, ((0, 0), (pad, 0), (pad, 0)), mode="reflect")
    else:
        dn = np.pad(dn, ((0, 0), (pad, 0), (pad, 0)), mode="constant", constant_values=0)
    margin_m = msi_extent_margin * coarse_pixel_m
    msi_transform = from_origin(x0 - margin_m, y0 + margin_m, msi_pixel_m, msi_pixel_m)
    msi_crs = crs_obj
    if crs_msi is not None and CRS.from_user_input(crs_msi) != crs_obj:
        msi_crs = CRS.from_user_input(crs_msi)
        h, w = dn.shape[1:]
        left, top = msi_transform.c, msi_transform.f
        bounds = (left, top - h * msi_pixel_m, left + w * msi_pixel_m, top)
        transform, width, height = calculate_default_transform(crs_obj, msi_crs, w, h, *bounds,
                                                               resolution=msi_pixel_m)
        transform, width, height = aligned_target(transform, width, height, msi_pixel_m)
        warped = np.zeros((dn.shape[0], height, width), dtype=np.uint16)
        reproject(dn, warped, src_transform=msi_transform, src_crs=crs_obj, src_nodata=0,
                  dst_transform=transform, dst_crs=msi_crs, dst_nodata=0, resampling=Resampling.bilinear)
        dn, msi_transform = warped, transform
    _write_geotiff(paths["msi"], dn, msi_transform, msi_crs, nodata=0, descriptions=MSI_BANDS,
                   tags={**common_tags, "BOA_QUANTIFICATION_VALUE": str(S2_QUANTIFICATION),
                         "BOA_ADD_OFFSET": str(-S2_OFFSET), "ACQUISITION_TIME": "2026-01-15T08:41:30Z"},
                   scale=1.0 / S2_QUANTIFICATION, offset=-S2_OFFSET / S2_QUANTIFICATION)
    return paths


def _write_geotiff(path: Path, data: np.ndarray, transform, crs, *, nodata: float, descriptions: tuple[str, ...],
                   tags: dict[str, str], scale: float | None = None, offset: float | None = None) -> None:
    import rasterio

    count, height, width = data.shape
    profile = {"driver": "GTiff", "height": height, "width": width, "count": count, "dtype": data.dtype.name,
               "crs": crs, "transform": transform, "nodata": nodata, "compress": "deflate",
               "predictor": 3 if data.dtype.kind == "f" else 2}
    if min(height, width) >= 256:
        profile.update(tiled=True, blockxsize=256, blockysize=256)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        for band, description in enumerate(descriptions, start=1):
            dst.set_band_description(band, description)
        dst.update_tags(**tags)
        if scale is not None:
            dst.scales = (scale,) * count
            dst.offsets = (offset,) * count


def write_sample_data(out_dir: Path) -> list[Path]:
    """out_dir/seaice/{sar,msi,mask}.tif for one small seeded scene (coarse 64 px, ratio 4, MSI finer, EPSG:3031)."""
    scene = make_scene(SAMPLE_SEED, coarse_size=64, ratio=4, finer="msi", cloud_cover=0.3, wind=9.0)
    paths = write_scene_geotiffs(scene, Path(out_dir) / "seaice")
    return [paths["sar"], paths["msi"], paths["mask"]]
