"""2-D images (PNG, JPEG, TIFF, BMP): read/write with one clear error per bad file. Imports no torch.

`read_image` returns (array, ImageMeta): [H, W] for grayscale or [H, W, 3] for RGB, in the stored dtype
(uint8; uint16 from 16-bit PNG/TIFF; float32 from float TIFF). `to_unit` and `from_unit` map that dtype to
float32 in [0, 1] and back, so a network sees the same range whatever the file's bit depth.

Truncated files are refused on their own evidence (missing end marker, strips past the end of the file), not
only through Pillow: with `PIL.ImageFile.LOAD_TRUNCATED_IMAGES` set (some libraries set it globally) Pillow
pads a cut-off image with grey or black and says nothing.
"""
from __future__ import annotations

import io
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from mis.errors import InputError
from mis.io.atomic import atomic_output
from mis.io.kinds import InputKind

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
# Pillow format names read here; MPO is a JPEG with extra pictures (phone cameras), of which the first is read.
_READ_FORMATS = ("PNG", "JPEG", "MPO", "TIFF", "BMP")
_WRITE_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".tif": "TIFF", ".tiff": "TIFF", ".bmp": "BMP"}
_BIT_DEPTHS = {"uint8": 8, "uint16": 16, "float32": 32}
_EXIF_ORIENTATION = 0x0112


def is_image_name(path: str | Path) -> bool:
    return Path(path).suffix.lower() in IMAGE_SUFFIXES and not Path(path).name.startswith(".")


IMAGE = InputKind("image", "image", "mis.io.image:is_image_name", reader="mis.io.image:read_image")


@dataclass
class ImageMeta:
    """What a reader found, and what `to_unit` / `from_unit` / the writers need to map values back.

    path: the file read (or the multi-frame file a frame came from).
    format: Pillow's format name ("PNG", "JPEG", "TIFF", "BMP"), or "DICOM" / "NIfTI" for sequence frames.
    dtype: numpy dtype name of the returned array ("uint8", "uint16", "float32"; "int16" from DICOM/NIfTI).
    bit_depth: bits per sample of that dtype (8, 16 or 32).
    channels: channels of the returned array (1: [H, W], 3: [H, W, 3]).
    was_gray_rgb: the file is RGB with R = G = B everywhere (returned as [H, W] unless gray=False).
    exif_orientation: the EXIF orientation (1-8) that was applied; 1 when none.
    size: (height, width) of the returned array.
    bits_stored: significant bits when fewer than bit_depth (DICOM BitsStored 12 in uint16); None: all of them.
    had_alpha: an alpha channel was present and dropped (fully opaque, or alpha="drop").
    """

    path: str
    format: str
    dtype: str
    bit_depth: int
    channels: int
    was_gray_rgb: bool
    exif_orientation: int
    size: tuple[int, int]
    bits_stored: int | None = None
    had_alpha: bool = False


def read_image(path: str | Path, *, gray: bool | None = None, alpha: str = "refuse") -> tuple[np.ndarray, ImageMeta]:
    """One image as ([H, W] or [H, W, 3] array in its stored dtype, ImageMeta), EXIF orientation applied.

    gray=None: as stored, except an RGB file with R = G = B is returned as [H, W] (meta.was_gray_rgb).
    gray=True: [H, W]; a colour file (R, G, B differ) is an InputError.
    gray=False: [H, W, 3]; a grayscale file is repeated into three channels (for RGB networks).
    alpha="refuse": an alpha channel with any transparent pixel is an InputError (a fully opaque one carries
    nothing and is dropped); alpha="drop": the alpha channel is discarded, not composited (see `_drop_alpha`).
    """
    if alpha not in ("refuse", "drop"):
        raise ValueError(f"alpha must be 'refuse' or 'drop', got {alpha!r}")
    path = Path(path)
    data = _read_bytes(path)
    img = _open(path, data)
    fmt = img.format  # transposed copies have none
    _refuse_wide_colour(path, img, data)
    orientation = _orientation(img)
    if orientation != 1:
        img = ImageOps.exif_transpose(img)
    array, had_alpha = _pixels(path, img, fmt, alpha)
    if array.shape[0] < 2 or array.shape[1] < 2:
        raise InputError(path, f"image is {array.shape[1]}x{array.shape[0]} pixels: too small to be an image")
    array, was_gray_rgb = _apply_gray(path, array, gray)
    meta = ImageMeta(path=str(path), format=fmt, dtype=array.dtype.name,
                     bit_depth=_BIT_DEPTHS[array.dtype.name], channels=1 if array.ndim == 2 else 3,
                     was_gray_rgb=was_gray_rgb, exif_orientation=orientation,
                     size=(int(array.shape[0]), int(array.shape[1])), had_alpha=had_alpha)
    return array, meta


def _read_bytes(path: Path) -> bytes:
    if not path.exists():
        raise InputError(path, "no such file or directory")
    if path.is_dir():
        raise InputError(path, "is a folder, not an image file")
    try:
        data = path.read_bytes()
    except PermissionError:
        raise InputError(path, "permission denied") from None
    if not data:
        raise InputError(path, "file is empty (0 bytes)")
    return data


def _open(path: Path, data: bytes) -> Image.Image:
    """Decode fully (Pillow decodes lazily) so that every decoding failure surfaces here, as an InputError."""
    try:
        img = Image.open(io.BytesIO(data))
        fmt = img.format
        if fmt not in _READ_FORMATS:
            raise InputError(path, f"is a {fmt} image; mis reads PNG, JPEG, TIFF and BMP")
        if fmt == "TIFF" and getattr(img, "n_frames", 1) > 1:
            raise InputError(path, f"is a TIFF with {img.n_frames} pages; mis reads single-page images")
        img.load()
    except InputError:
        raise
    except Image.DecompressionBombError as exc:
        raise InputError(path, f"image is too large to decode safely ({exc})") from None
    except Exception as exc:  # noqa: BLE001 - Pillow raises OSError, SyntaxError, ValueError, struct.error ...
        raise InputError(path, f"is truncated or not a readable image ({_short(exc)})") from None
    if _is_truncated(img, data):
        raise InputError(path, "is truncated or not a readable image (the file ends before its image data does)")
    return img


def _short(exc: BaseException) -> str:
    """Pillow's message without its in-memory file object ("cannot identify image file <_io.BytesIO object at
    0x7f...>": the file is named by the caller's line already)."""
    text = re.sub(r"\s*<_io\.\w+ object at 0x[0-9a-f]+>", "", " ".join(str(exc).split()))
    return text[:160] if text else type(exc).__name__


def _is_truncated(img: Image.Image, data: bytes) -> bool:
    """Structural end-of-file checks per format (independent of LOAD_TRUNCATED_IMAGES)."""
    if img.format == "PNG":
        return _png_truncated(data)
    if img.format in ("JPEG", "MPO"):
        return _jpeg_truncated(data)
    if img.format == "BMP":
        declared = int.from_bytes(data[2:6], "little")  # bfSize; 0 in some writers' files: nothing to check
        return declared > len(data)
    if img.format == "TIFF":
        tags = img.tag_v2
        offsets = tags.get(273) or tags.get(324) or ()  # StripOffsets, or TileOffsets for tiled files
        counts = tags.get(279) or tags.get(325) or ()   # StripByteCounts / TileByteCounts
        ends = [int(o) + int(c) for o, c in zip(offsets, counts)]
        return bool(ends) and max(ends) > len(data)
    return False


def _png_truncated(data: bytes) -> bool:
    """True unless the chunk chain reaches a complete IEND chunk."""
    pos = 8
    while pos + 8 <= len(data):
        length = int.from_bytes(data[pos:pos + 4], "big")
        kind = data[pos + 4:pos + 8]
        pos += 12 + length  # length, type, data, CRC
        if kind == b"IEND":
            return pos > len(data)
    return True


def _jpeg_truncated(data: bytes) -> bool:
    """True when no EOI marker (FF D9) follows the first scan. Marker segments are skipped by their length so
    an EXIF thumbnail's EOI does not count; inside a scan 0xFF is always stuffed, so FF D9 is only the EOI."""
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            return False  # not a marker where one should be: damaged, not truncated; Pillow has judged it
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
        elif marker == 0xDA:  # start of scan
            return data.find(b"\xff\xd9", pos) < 0
        elif 0xD0 <= marker <= 0xD8 or marker == 0x01:  # markers without a length
            pos += 2
        else:
            pos += 2 + int.from_bytes(data[pos + 2:pos + 4], "big")
    return True


def _orientation(img: Image.Image) -> int:
    try:
        value = int(img.getexif().get(_EXIF_ORIENTATION, 1))
    except Exception:  # noqa: BLE001 - a damaged EXIF block: the pixels are still the image
        return 1
    return value if 1 <= value <= 8 else 1


def _pixels(path: Path, img: Image.Image, fmt: str, alpha: str) -> tuple[np.ndarray, bool]:
    """The image's samples as a numpy array in their stored dtype, alpha handled. Returns (array, had_alpha)."""
    mode = img.mode
    if mode == "P":  # palette: its colours, with the palette's transparency as alpha
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    elif mode == "PA":
        img = img.convert("RGBA")
    elif mode == "1":
        img = img.convert("L")
    elif mode in ("CMYK", "YCbCr", "RGBX"):
        img = img.convert("RGB")
    mode = img.mode
    if mode in ("LA", "RGBA"):
        return _drop_alpha(path, np.asarray(img), mode, alpha), True
    if mode in ("L", "RGB"):
        return np.array(img, dtype=np.uint8), False
    if mode.startswith("I;16"):  # I;16, I;16B, I;16L: 16-bit grayscale in either byte order
        return np.array(img).astype(np.uint16), False
    if mode == "I" and fmt == "PNG":  # older Pillow opens 16-bit PNG as 32-bit "I"; PNG holds <= 16 bits
        return np.array(img).astype(np.uint16), False
    if mode == "F":
        array = np.array(img, dtype=np.float32)
        if not np.isfinite(array).all():
            raise InputError(path, f"has {int((~np.isfinite(array)).sum())} NaN or infinite pixel values")
        return array, False
    raise InputError(path, f"pixel mode {mode} is not supported (expected 8/16-bit grayscale, 8-bit RGB or "
                     "32-bit float)")


def _refuse_wide_colour(path: Path, img: Image.Image, data: bytes) -> None:
    """Pillow reads 16-bit colour (PNG, TIFF) as 8-bit RGB without a word; refuse rather than lose 8 bits."""
    sixteen_bit_colour = False
    if img.format == "PNG" and len(data) > 25:
        sixteen_bit_colour = data[24] == 16 and data[25] in (2, 4, 6)  # IHDR bit depth, colour type
    elif img.format == "TIFF":
        bits = img.tag_v2.get(258) or (8,)  # BitsPerSample
        bits = bits if isinstance(bits, tuple) else (bits,)
        sixteen_bit_colour = len(bits) > 1 and max(int(b) for b in bits) > 8
    if sixteen_bit_colour:
        raise InputError(path, "16-bit colour (or 16-bit with alpha) is not supported: Pillow would read only 8 "
                         "of the 16 bits; save it as 16-bit grayscale or 8-bit RGB")


def _drop_alpha(path: Path, array: np.ndarray, mode: str, alpha: str) -> np.ndarray:
    """The colour channels of an LA/RGBA array. The alpha channel is discarded, not composited on black or
    white: the stored values under it are the measurement, and compositing would change every partly
    transparent pixel. A fully opaque alpha channel carries nothing, so it is dropped even when refusing."""
    channels = "LA, 2 channels" if mode == "LA" else "RGBA, 4 channels"
    if alpha == "refuse" and (array[..., -1] != 255).any():
        raise InputError(path, f"has an alpha channel ({channels}) with transparent pixels; flatten it to "
                         f"{'grayscale' if mode == 'LA' else 'RGB'} first")
    colour = array[..., :-1]
    return np.ascontiguousarray(colour[..., 0] if mode == "LA" else colour)


def _apply_gray(path: Path, array: np.ndarray, gray: bool | None) -> tuple[np.ndarray, bool]:
    """Apply the `gray` policy of `read_image`; returns (array, the file is RGB with R = G = B)."""
    if array.ndim == 2:
        return (np.repeat(array[..., None], 3, axis=2) if gray is False else array), False
    equal = np.array_equal(array[..., 0], array[..., 1]) and np.array_equal(array[..., 0], array[..., 2])
    if gray is False:
        return array, equal
    if equal:
        return np.ascontiguousarray(array[..., 0]), True
    if gray:
        spread = int(np.ptp(array.astype(np.int32), axis=2).max())
        raise InputError(path, f"is colour (R, G, B differ, by up to {spread} levels); a grayscale image is "
                         "expected: convert it to grayscale first")
    return array, False


# --------------------------------------------------------------------------- value range


def value_range(meta: ImageMeta) -> tuple[float, float]:
    """The stored values that map to 0 and 1: the full range of the dtype, or of its `bits_stored` bits.
    Float images are not scaled: (0, 1)."""
    kind = np.dtype(meta.dtype).kind
    if kind == "f":
        return 0.0, 1.0
    bits = meta.bits_stored or np.dtype(meta.dtype).itemsize * 8
    if kind == "i":  # signed (DICOM PixelRepresentation 1, NIfTI int16)
        return float(-(2 ** (bits - 1))), float(2 ** (bits - 1) - 1)
    return 0.0, float(2 ** bits - 1)


def to_unit(array: np.ndarray, meta: ImageMeta) -> np.ndarray:
    """float32 in [0, 1]: integers divided by their range (255, 65535, 4095 for 12 bits stored); float data is
    kept as it is (a float TIFF has no natural range) but must be finite."""
    array = np.asarray(array)
    if array.dtype != np.dtype(meta.dtype):
        raise ValueError(f"array is {array.dtype} but the image meta says {meta.dtype}")
    if array.dtype.kind == "f":
        if not np.isfinite(array).all():
            raise InputError(meta.path, "has NaN or infinite pixel values")
        return array.astype(np.float32)
    lo, hi = value_range(meta)
    return ((array.astype(np.float32) - np.float32(lo)) / np.float32(hi - lo)).astype(np.float32)


def from_unit(x: np.ndarray, meta: ImageMeta) -> np.ndarray:
    """The inverse of `to_unit`: clipped to [0, 1], scaled, rounded, cast to meta's dtype (float: kept)."""
    x = np.asarray(x, dtype=np.float32)
    if not np.isfinite(x).all():
        raise ValueError("cannot convert NaN or infinite values to image samples")
    if np.dtype(meta.dtype).kind == "f":
        return x.astype(meta.dtype)
    lo, hi = value_range(meta)
    scaled = np.rint(np.clip(x, 0.0, 1.0).astype(np.float64) * (hi - lo) + lo)
    return scaled.astype(meta.dtype)


# --------------------------------------------------------------------------- writing


def write_image(path: str | Path, array: np.ndarray, *, bit_depth: int | None = None) -> Path:
    """Write [H, W] or [H, W, 3] atomically; the format comes from the suffix. Returns the path.

    bit_depth (default: from the dtype) must agree with the array: 8 for uint8, 16 for uint16 (PNG and TIFF,
    grayscale only: Pillow writes no 16-bit colour), 32 for float32 (TIFF only). JPEG is 8-bit (quality 95).
    A bad array raises ValueError before anything is written.
    """
    path = Path(path)
    fmt = _WRITE_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ValueError(f"{path}: cannot tell the image format from the suffix (use {', '.join(_WRITE_FORMATS)})")
    image = _to_pil(np.asarray(array), fmt, bit_depth)
    options = {"quality": 95} if fmt == "JPEG" else {}
    with atomic_output(path) as tmp:
        image.save(tmp, format=fmt, **options)
    return path


def _to_pil(array: np.ndarray, fmt: str, bit_depth: int | None) -> Image.Image:
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] == 3)):
        raise ValueError(f"image array must be [H, W] or [H, W, 3], got shape {array.shape}")
    depth = _BIT_DEPTHS.get(array.dtype.name)
    if depth is None:
        raise ValueError(f"image array must be uint8, uint16 or float32, got {array.dtype}")
    if bit_depth is not None and bit_depth != depth:
        raise ValueError(f"bit_depth={bit_depth} but the array is {array.dtype}; convert it with from_unit first")
    if depth == 16 and (array.ndim == 3 or fmt not in ("PNG", "TIFF")):
        raise ValueError(f"16-bit images are written as grayscale PNG or TIFF, not {'colour ' * (array.ndim == 3)}"
                         f"{fmt}")
    if depth == 32 and (array.ndim == 3 or fmt != "TIFF"):
        raise ValueError(f"float32 images are written as grayscale TIFF, not {fmt}")
    native = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("="))
    return Image.fromarray(native)
