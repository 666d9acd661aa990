"""Audio files and mel arrays: read/write with one clear error per bad file. Imports no torch.

`read_audio` returns (float32 mono samples in [-1, 1], AudioMeta); `read_mel` returns the array
stored in a .npy file after checking it is a finite 2-D float array.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from mis.errors import InputError
from mis.io.atomic import atomic_output

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".aiff", ".aif", ".mp3")  # libsndfile >= 1.1 reads MP3
# A WAV whose data chunk declares this size (or 0) was written as a stream and never finalised: no length to check.
_STREAMING_SIZES = (0, 0xFFFFFFFF)


@dataclass
class AudioMeta:
    source: str
    sample_rate: int
    channels: int
    frames: int
    subtype: str

    @property
    def seconds(self) -> float:
        return self.frames / self.sample_rate


def is_audio_name(path: Path) -> bool:
    return Path(path).suffix.lower() in AUDIO_SUFFIXES and not Path(path).name.startswith(".")


def read_audio(path: str | Path) -> tuple[np.ndarray, AudioMeta]:
    """Mono float32 samples (channels averaged) and the file's format."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "file not found")
    if path.stat().st_size == 0:
        raise InputError(path, "file is empty")
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError, TypeError) as exc:
        raise InputError(path, f"not a readable audio file ({str(exc).strip() or type(exc).__name__})") from None
    if data.shape[0] == 0:
        raise InputError(path, "audio has no samples")
    missing = _missing_wav_bytes(path)
    if missing:
        raise InputError(path, f"truncated WAV: {missing} bytes of the audio its header declares are missing")
    samples = data.mean(axis=1)
    if not np.isfinite(samples).all():
        raise InputError(path, "audio contains NaN or infinite samples")
    return samples, AudioMeta(str(path), int(rate), int(data.shape[1]), int(data.shape[0]), info.subtype)


class AudioFile:
    """An audio file read in windows of frames, [channels, n] float32 (flat memory for long recordings).
    Opening checks what can be checked without reading the samples (readable, not empty, not truncated)."""

    def __init__(self, path: str | Path):
        self.path = path = Path(path)
        if not path.is_file():
            raise InputError(path, "file not found")
        if path.stat().st_size == 0:
            raise InputError(path, "file is empty")
        try:
            info = sf.info(str(path))
        except (sf.LibsndfileError, RuntimeError, TypeError) as exc:
            raise InputError(path, f"not a readable audio file ({str(exc).strip() or type(exc).__name__})") from None
        if info.frames <= 0:
            raise InputError(path, "audio has no samples")
        missing = _missing_wav_bytes(path)
        if missing:
            raise InputError(path, f"truncated WAV: {missing} bytes of the audio its header declares are missing")
        self.meta = AudioMeta(str(path), int(info.samplerate), int(info.channels), int(info.frames), info.subtype)
        self.channels, self.length, self.sample_rate = self.meta.channels, self.meta.frames, self.meta.sample_rate
        self._handle: sf.SoundFile | None = None
        self._kept, self._kept_start = np.zeros((0, self.channels), np.float32), 0
        self.peak = 0.0   # the largest absolute sample read so far (a silent file is known once it has been read)

    def read(self, start: int, stop: int) -> np.ndarray:
        """Frames [start, stop) as [channels, n]. Windows are read forward through one open file, keeping only
        what the next window may overlap (a compressed file is decoded once, not again from a seek point for
        every window). A window before the kept ones reopens the file."""
        if self._handle is None or start < self._kept_start:
            self._reopen(start)
        try:
            if stop > self._kept_start + self._kept.shape[0]:
                more = self._handle.read(stop - self._kept_start - self._kept.shape[0], dtype="float32",
                                         always_2d=True)
                self._kept = np.concatenate([self._kept, more]) if self._kept.size else more
                self.peak = max(self.peak, float(np.abs(more).max(initial=0.0)))
        except (sf.LibsndfileError, RuntimeError) as exc:
            self.close()
            raise InputError(self.path, f"audio could not be read ({str(exc).strip() or type(exc).__name__})") from None
        data = self._kept[start - self._kept_start:stop - self._kept_start]
        self._kept, self._kept_start = self._kept[start - self._kept_start:], start   # the next window starts later
        if not np.isfinite(data).all():
            raise InputError(self.path, "audio contains NaN or infinite samples")
        return data.T

    def _reopen(self, start: int) -> None:
        self.close()
        try:
            self._handle = sf.SoundFile(str(self.path))
            if start:
                self._handle.seek(start)
        except (sf.LibsndfileError, RuntimeError) as exc:
            raise InputError(self.path, f"audio could not be read ({str(exc).strip() or type(exc).__name__})") from None
        self._kept, self._kept_start = np.zeros((0, self.channels), np.float32), start

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
        self._handle = None



def _missing_wav_bytes(path: Path) -> int:
    """How many bytes of a RIFF/WAVE data chunk are missing from the file (libsndfile reads what is there
    and says nothing, so a cut-off copy would pass as a shorter recording)."""
    size = path.stat().st_size
    with open(path, "rb") as fh:
        if fh.read(4) != b"RIFF" or fh.read(8)[4:] != b"WAVE":
            return 0
        while True:
            header = fh.read(8)
            if len(header) < 8:
                return 0
            chunk_id, chunk_size = header[:4], int.from_bytes(header[4:], "little")
            if chunk_id == b"data":
                return 0 if chunk_size in _STREAMING_SIZES else max(0, fh.tell() + chunk_size - size)
            fh.seek(chunk_size + (chunk_size & 1), 1)  # chunks are padded to an even size


def write_wav(path: str | Path, samples: np.ndarray, sample_rate: int) -> Path:
    """PCM_16 WAV, written atomically; samples are clipped to [-1, 1]."""
    samples = np.clip(np.asarray(samples, dtype=np.float32), -1.0, 1.0)
    with atomic_output(path) as tmp:
        sf.write(str(tmp), samples, int(sample_rate), subtype="PCM_16", format="WAV")
    return Path(path)


def _check_declared_size(path: Path) -> None:
    """Compare the .npy header's shape and dtype with the bytes the file holds before allocating anything: a
    damaged header declaring (80, 10**12) would otherwise ask for terabytes."""
    try:
        with open(path, "rb") as handle:
            major, _ = np.lib.format.read_magic(handle)
            read_header = (np.lib.format.read_array_header_1_0 if major == 1
                           else np.lib.format.read_array_header_2_0)
            shape, _, dtype = read_header(handle)
            offset = handle.tell()
    except Exception as exc:  # numpy parses the header as Python literals: a damaged one raises many kinds
        reason = " ".join(str(exc).split())[:120] or type(exc).__name__
        raise InputError(path, f"not a readable .npy array (damaged header: {reason})") from None
    if dtype.hasobject:
        raise InputError(path, "not a readable .npy array (holds pickled objects, which are never loaded)")
    declared = math.prod(shape) * dtype.itemsize
    available = path.stat().st_size - offset
    if declared > available:
        raise InputError(path, f"the .npy header declares shape {shape} ({declared / 1e6:.4g} MB) but the file "
                         f"holds {available / 1e6:.4g} MB: truncated file or a damaged header")


def read_mel(path: str | Path) -> np.ndarray:
    """A .npy mel spectrogram: 2-D, floating point, finite (shape checks against a model are the caller's)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "file not found")
    if path.suffix.lower() in AUDIO_SUFFIXES:
        raise InputError(path, "this is an audio file, not a mel spectrogram (.npy); make one with `mis mel`")
    with open(path, "rb") as handle:
        magic = handle.read(6)
    if magic != b"\x93NUMPY" and not magic.startswith(b"PK"):  # np.load would try it as a pickle
        raise InputError(path, "not a .npy file (no NumPy header); save the mel with numpy.save")
    if magic == b"\x93NUMPY":
        _check_declared_size(path)
    try:
        mel = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        reason = "holds pickled objects, which are never loaded" if "pickle" in str(exc) else str(exc).splitlines()[0]
        raise InputError(path, f"not a readable .npy array ({reason})") from None
    if isinstance(mel, np.lib.npyio.NpzFile):
        mel.close()
        raise InputError(path, "this is an .npz archive, not a .npy array; save the mel with numpy.save")
    if not isinstance(mel, np.ndarray) or mel.dtype.kind not in "fiu":
        raise InputError(path, f"expected a numeric array, got {getattr(mel, 'dtype', type(mel))}")
    if mel.size == 0:
        raise InputError(path, f"mel array is empty (shape {mel.shape})")
    if mel.ndim == 3 and mel.shape[0] == 1:
        mel = mel[0]  # a batch of one, as TTS front ends often save it
    if mel.ndim != 2:
        raise InputError(path, f"mel must be 2-D [n_mels, frames], got shape {mel.shape}")
    if not np.isfinite(mel).all():
        raise InputError(path, "mel contains NaN or infinite values")
    return mel.astype(np.float32)
