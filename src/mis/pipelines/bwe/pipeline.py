"""BandwidthExtensionPipeline: narrowband speech -> wideband speech at the checkpoint's target rate (AP-BWE).

As upstream, the network runs at the target rate on the input resampled up to it (a band-limited signal, not
a shorter one). The card holds the rate pair the model was trained for (`preprocessing.input_sample_rate`,
`preprocessing.sample_rate`); audio at another rate is refused unless the caller says which bandwidth to
assume (`input_rate=`, `--input-sr`), in which case it is band-limited to that rate first.

Long inputs are processed in chunks with enough context that the output equals one pass over the whole
signal (to float rounding): the STFT window's reach, the network's receptive field and the overlap-add.
Resampling happens per chunk too (`ResampledSource`), so memory stays flat in the input's length.
"""
from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from mis.errors import InputError
from mis.models.apbwe import APBWEConfig, input_band_bins, quiet_above
from mis.pipelines.base import Pipeline
from mis.pipelines.card_checks import positive_int
from mis.transforms.audio import ArraySource, ResampledSource, istft

TASK = "bwe"
DEFAULT_CHUNK_SECONDS = 8.0
MAX_CHANNELS = 2
# the top of the input band kept with --keep-low-band, and the crossfade below it (fractions of the input Nyquist)
KEEP_BAND_FADE = (0.85, 0.97)


@dataclass
class BweOutput:
    waveform: np.ndarray      # float32 [channels, samples] at `sample_rate`, not clipped
    sample_rate: int
    input_rate: int           # the bandwidth the model assumed: content up to input_rate / 2 came in

    @property
    def clipped_samples(self) -> int:
        return int(np.count_nonzero(np.abs(self.waveform) > 1.0))


def rate_card_problems(card: dict) -> list[str]:
    pre = card.get("preprocessing")
    if not isinstance(pre, dict):
        return ["preprocessing (the rate pair) is missing"]
    problems = positive_int("preprocessing.input_sample_rate", pre.get("input_sample_rate"))
    problems += positive_int("preprocessing.sample_rate", pre.get("sample_rate"))
    if not problems and pre["input_sample_rate"] >= pre["sample_rate"]:
        problems.append(f"preprocessing.input_sample_rate {pre['input_sample_rate']} must be below sample_rate "
                        f"{pre['sample_rate']}")
    return problems


def chunk_margin(config: APBWEConfig) -> int:
    """Samples of context each side of a chunk so that its output equals one pass (a whole number of hops)."""
    hop = config.hop_length
    stft_reach = math.ceil(config.n_fft / 2 / hop)               # frames touched by the chunk's reflect padding
    overlap_add = math.ceil(config.win_length / 2 / hop) + 1     # frames whose window reaches an output sample
    return (stft_reach + config.receptive_frames + overlap_add) * hop


class BandwidthExtensionPipeline(Pipeline):
    """`pipeline(samples [channels, n] or [n], sample_rate)` -> BweOutput at the card's target rate."""

    task = TASK

    def __init__(self, model: torch.nn.Module, card: dict, policy=None, *, chunk_seconds: float = DEFAULT_CHUNK_SECONDS,
                 keep_low_band: bool = False, **base_options):
        super().__init__(model, card, policy, **base_options)
        self.input_rate = int(card["preprocessing"]["input_sample_rate"])
        self.sample_rate = int(card["preprocessing"]["sample_rate"])
        config: APBWEConfig = model.config
        self.hop = config.hop_length
        self.chunk = max(1, round(chunk_seconds * self.sample_rate / self.hop)) * self.hop
        self.margin = chunk_margin(config)
        self.band_bins = input_band_bins(self.input_rate, self.sample_rate, config.n_fft)
        self.keep_low_band = keep_low_band
        self._low_band_weight = self._crossfade(config) if keep_low_band else None

    @classmethod
    def card_problems(cls, card: dict) -> list[str]:
        return rate_card_problems(card)

    def network_call(self, logamp: torch.Tensor, phase: torch.Tensor):
        return self.model(logamp, phase)

    def run_info(self) -> dict:
        return {**super().run_info(), "input_sample_rate": self.input_rate, "sample_rate": self.sample_rate,
                "keep_low_band": self.keep_low_band}

    # ---- inputs ------------------------------------------------------------------------------------
    def assumed_input_rate(self, file_rate: int, input_rate: int | None, source: str = "audio") -> int:
        """The bandwidth to assume for audio recorded at `file_rate` (see the module docstring)."""
        pair = f"this model extends {self.input_rate} Hz audio to {self.sample_rate} Hz"
        if input_rate is not None:
            if input_rate != self.input_rate:
                raise InputError(source, f"--input-sr {input_rate} does not match the model: {pair}; use a model "
                                 f"trained for {input_rate} Hz input")
            if file_rate < input_rate:
                raise InputError(source, f"audio is at {file_rate} Hz, below --input-sr {input_rate}: it has no "
                                 f"content up to {input_rate // 2} Hz to start from")
            return input_rate
        if file_rate >= self.sample_rate:
            raise InputError(source, f"audio is already at {file_rate} Hz, not below the target rate "
                             f"{self.sample_rate} Hz; {pair} (pass --input-sr {self.input_rate} if it is band-limited "
                             f"to {self.input_rate // 2} Hz)")
        if file_rate != self.input_rate:
            hint = (f"pass --input-sr {self.input_rate} to band-limit it to {self.input_rate // 2} Hz first"
                    if file_rate > self.input_rate else f"use a model trained for {file_rate} Hz input")
            raise InputError(source, f"audio is at {file_rate} Hz; {pair}: {hint}")
        return file_rate

    def check_inputs(self, channels: int, source: str = "audio") -> None:
        if channels > MAX_CHANNELS:
            raise InputError(source, f"audio has {channels} channels; bandwidth extension takes mono or stereo "
                             "(split multichannel recordings first)")

    def target_source(self, source, file_rate: int, input_rate: int | None = None, name: str = "audio"):
        """A windowed reader of the band-limited input at the target rate (what the network sees)."""
        self.check_inputs(source.channels, name)
        assumed = self.assumed_input_rate(file_rate, input_rate, name)
        if assumed != file_rate:   # band-limit to the assumed rate, as the training data was made
            source = ResampledSource(source, file_rate, assumed)
        return ResampledSource(source, assumed, self.sample_rate)

    # ---- the network ---------------------------------------------------------------------------------
    def _crossfade(self, config: APBWEConfig) -> torch.Tensor:
        """[F, 1] weight of the input's spectrum: 1 well inside the input band, 0 above it, linear in between."""
        hz = torch.arange(config.freq_bins) * self.sample_rate / config.n_fft
        low, high = (f * self.input_rate / 2 for f in KEEP_BAND_FADE)
        return ((high - hz) / (high - low)).clamp(0, 1)[:, None]

    @torch.inference_mode()
    def extend_window(self, wave: np.ndarray) -> np.ndarray:
        """[C, n] band-limited samples at the target rate -> [C, n] wideband, in one pass."""
        model = self.model
        x = torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float32)).to(self.device)
        logamp, phase = model.analyse(x)
        logamp_wb, phase_wb = self.forward(*quiet_above(logamp, phase, self.band_bins, model.config.log_floor))
        spectrum = torch.polar(torch.exp(logamp_wb.float()), phase_wb.float())
        if self._low_band_weight is not None:
            weight = self._low_band_weight.to(spectrum.device)
            spectrum = weight * torch.polar(torch.exp(logamp), phase) + (1 - weight) * spectrum
        return istft(spectrum, model.config.stft, length=x.shape[-1]).cpu().numpy()

    def stream(self, source) -> Iterator[np.ndarray]:
        """Yield [C, n] pieces of the output; they concatenate to the one-pass output (to float rounding)."""
        total = source.length
        for start in range(0, total, self.chunk):
            stop = min(start + self.chunk, total)
            lo, hi = max(0, start - self.margin), min(total, stop + self.margin)   # lo stays on the hop grid
            yield self.extend_window(source.read(lo, hi))[:, start - lo:stop - lo]

    def batch(self, items: list[np.ndarray], sample_rate: int, input_rate: int | None = None) -> list[np.ndarray]:
        """Several mono signals at one rate; those of equal length go through the network together (as the
        channels of one signal do). Each output equals `pipeline(item, rate).waveform[0]` to float rounding."""
        outputs: list[np.ndarray | None] = [None] * len(items)
        lengths = [len(np.ravel(item)) for item in items]
        for length in dict.fromkeys(lengths):
            group = [i for i, n in enumerate(lengths) if n == length]
            stacked = np.stack([np.ravel(items[i]) for i in group])
            wave = self(stacked, sample_rate, input_rate).waveform
            for row, i in enumerate(group):
                outputs[i] = wave[row]
        return outputs  # type: ignore[return-value]

    def __call__(self, samples: np.ndarray, sample_rate: int, input_rate: int | None = None,
                 source: str = "audio") -> BweOutput:
        samples = np.atleast_2d(np.asarray(samples, dtype=np.float32))
        if samples.shape[-1] == 0:
            raise InputError(source, "audio has no samples")
        if not np.isfinite(samples).all():
            raise InputError(source, "audio contains NaN or infinite samples")
        reader = self.target_source(ArraySource(samples), sample_rate, input_rate, source)
        wave = np.concatenate(list(self.stream(reader)), axis=1)
        return BweOutput(wave, self.sample_rate, self.assumed_input_rate(sample_rate, input_rate, source))


def import_preprocessing(network_config: dict) -> dict:
    """The card's rate pair for imported upstream weights: 16 -> 48 kHz unless `--preprocessing` says otherwise
    (upstream ships one generator per pair: 8k/12k/16k/24k -> 48k and 2k/4k/8k -> 16k)."""
    return {"input_sample_rate": 16000, "sample_rate": 48000}
