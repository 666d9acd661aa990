"""VocoderPipeline: a log-mel array in the checkpoint's convention -> waveform.

Long inputs are vocoded in chunks of frames with enough context on each side that every chunk's
spectra and samples equal those of one pass over the whole input (to float rounding): the network's
receptive field for the spectra, and the STFT window's reach for the overlap-add. Memory is flat in
the input length apart from the output itself, which `stream` yields chunk by chunk.
"""
from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from mis.errors import CheckpointError, InputError, UsageError
from mis.models.apnet import APNetConfig
from mis.pipelines.base import Pipeline
from mis.pipelines.card_checks import number, positive_int
from mis.runtime.device import ComputePolicy
from mis.transforms.audio import (MelConfig, STFTConfig, amplitude_from_mel, framing_mismatches, griffin_lim,
                                  mel_pseudo_inverse)

TASK = "vocoder"
DEFAULT_CHUNK_FRAMES = 1024
# A full-scale sine gives a magnitude mel of about n_fft/4 (log ~ 5.5 for n_fft 1024); 12 leaves a wide margin.
MAX_LOG_MEL = 12.0


@dataclass
class VocoderOutput:
    waveform: np.ndarray       # float32 samples [(frames - 1) * hop], not clipped
    sample_rate: int

    @property
    def clipped_samples(self) -> int:
        """Samples beyond full scale (a WAV writer clips them): a mel louder than the model knows."""
        return int(np.count_nonzero(np.abs(self.waveform) > 1.0))


def receptive_frames(config: APNetConfig) -> int:
    """Frames of context each side that influence one output frame's spectra."""
    reach = (config.input_conv_kernel_size - 1) // 2 + (config.output_conv_kernel_size - 1) // 2
    reach += max((k - 1) // 2 * (sum(d) + len(d)) for k, d in zip(config.resblock_kernel_sizes,
                                                                     config.resblock_dilation_sizes))
    return reach


def fold_weight_norm(model: torch.nn.Module) -> torch.nn.Module:
    """Bake weight-norm parametrizations into plain weights: identical outputs, no per-call norm."""
    from torch.nn.utils import parametrize

    for module in model.modules():
        if parametrize.is_parametrized(module, "weight"):
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
    return model


def mel_card_problems(card: dict) -> list[str]:
    """The card's mel convention must be complete and physically possible."""
    mel = card["preprocessing"].get("mel")
    if not isinstance(mel, dict):
        return ["preprocessing.mel (the mel convention) is missing"]
    try:
        config = MelConfig.from_dict(mel)
    except (TypeError, ValueError) as exc:
        return [f"preprocessing.mel: {exc}"]
    problems = []
    for name in ("sample_rate", "n_fft", "hop_length", "win_length", "n_mels"):
        problems += positive_int(f"preprocessing.mel.{name}", getattr(config, name))
    if not problems and config.win_length > config.n_fft:
        problems.append(f"preprocessing.mel.win_length {config.win_length} exceeds n_fft {config.n_fft}")
    top = config.fmax if config.fmax is not None else (config.sample_rate or 0) / 2
    if not (number(config.fmin) and number(top) and 0 <= config.fmin < top <= (config.sample_rate or 0) / 2):
        problems.append(f"preprocessing.mel fmin {config.fmin!r} / fmax {config.fmax!r} must satisfy "
                        "0 <= fmin < fmax <= sample_rate / 2")
    if not (number(config.log_floor) and config.log_floor > 0):
        problems.append(f"preprocessing.mel.log_floor must be > 0, not {config.log_floor!r}")
    if config.mel_scale not in ("slaney", "htk") or config.norm not in ("slaney", None):
        problems.append(f"preprocessing.mel mel_scale {config.mel_scale!r} / norm {config.norm!r} unknown")
    return problems


def check_framing(network: APNetConfig, mel: MelConfig) -> None:
    """The network's ISTFT and its card's mel convention must frame audio alike (else wrong length and pitch)."""
    differ = framing_mismatches(network.stft, mel)
    if network.n_mels != mel.n_mels:
        differ.append(f"n_mels {network.n_mels} vs {mel.n_mels}")
    if network.amplitude_prior:   # the prior inverts the mel filterbank: it must be the card's
        differ += [f"{name} {getattr(network, name)} vs {getattr(mel, name)}" for name in ("sample_rate", "fmin", "fmax")
                   if getattr(network, name) != getattr(mel, name)]
    if differ:
        raise CheckpointError(f"checkpoint's network and mel convention disagree: {', '.join(differ)}")


def check_mel(mel: np.ndarray, config: MelConfig, source: str = "mel") -> np.ndarray:
    """Shape, orientation and value range against the card's convention; one clear message each."""
    if mel.ndim != 2:
        raise InputError(source, f"mel must be 2-D [n_mels, frames], got shape {mel.shape}")
    if mel.shape[0] != config.n_mels:
        if mel.shape[1] == config.n_mels:
            raise InputError(source, f"mel has shape {mel.shape}: looks like [frames, n_mels]; transpose it to "
                             f"[{config.n_mels}, frames]")
        raise InputError(source, f"mel has {mel.shape[0]} mel bands; this model expects {config.n_mels} "
                         f"({config.sample_rate} Hz, fmax {config.fmax})")
    if mel.shape[1] < 2:
        raise InputError(source, f"mel has {mel.shape[1]} frame(s); need at least 2")
    if not np.isfinite(mel).all():
        raise InputError(source, "mel contains NaN or infinite values")
    floor = config.log_min
    if float(mel.min()) >= 0.0 and float(mel.max()) > 0.0:
        raise InputError(source, "mel has no negative values: looks like a linear (not log) mel; this model expects "
                         f"natural-log mels, log(max(mel, {config.log_floor:g}))")
    if float(mel.max()) > MAX_LOG_MEL:
        raise InputError(source, f"mel values reach {float(mel.max()):.3g}; a natural-log magnitude mel of audio in "
                         f"[-1, 1] stays below {MAX_LOG_MEL:g} (another scale, e.g. dB or unnormalised audio?)")
    lowest = float(mel.min())
    on_floor = np.count_nonzero(np.abs(mel - lowest) < 1e-4)
    clamped = 2 <= on_floor < mel.size // 2 and float(mel.max()) - lowest > 2.0  # a spectrum clamped by log(max(x, eps))
    if clamped and lowest < -1.5 and abs(lowest - round(lowest)) < 1e-4 and abs(lowest - floor) > 0.05:
        # log10 of a power-of-ten eps is a whole number (-5, -10); the natural log of one never is
        raise InputError(source, f"mel values sit on a floor of {lowest:.0f} = log10(1e{lowest:.0f}): looks like a "
                         "log10 mel (ESPnet / ParallelWaveGAN convention); this model expects natural-log mels: "
                         "multiply by ln(10) = 2.3026")
    if float(mel.min()) < floor - 0.05:
        raise InputError(source, f"mel values go down to {float(mel.min()):.2f}, below log({config.log_floor:g}) = "
                         f"{floor:.2f}: another log base, floor or dB scale than this model's natural-log convention")
    return mel.astype(np.float32)


def length_groups(lengths: list[int], max_ratio: float = 1.5) -> list[list[int]]:
    """Indices grouped by similar length (longest / shortest <= max_ratio), so padding wastes little."""
    groups: list[list[int]] = []
    for i in sorted(range(len(lengths)), key=lambda i: lengths[i]):
        if groups and lengths[i] <= max_ratio * lengths[groups[-1][0]]:
            groups[-1].append(i)
        else:
            groups.append([i])
    return groups


def refined_phase(logamp: torch.Tensor, phase: torch.Tensor, prior_logamp: torch.Tensor | None, config: STFTConfig,
                  iterations: int, prior_iterations: int = 0) -> torch.Tensor:
    """The phase `mis vocode` synthesises the network's amplitude with: fast Griffin-Lim from the network's phase,
    its first `prior_iterations` on the mel's pseudo-inverse amplitude (`prior_logamp`), the rest on the network's.

    Why the prior first: Griffin-Lim on the network's amplitude alone lost the pitch where voicing starts and stops
    (frames within 3 of a change: 31.3 cents median against Griffin-Lim-from-the-mel's 25.3, on 28 selection clips)
    and on low voices (pYIN's floor of 60 Hz found for an 80-90 Hz voice); settling the phase on the amplitude the
    mel itself gives, then making it consistent with the network's sharper harmonics, keeps both (25.5 there; README,
    vocoder). All [B, F, T]."""
    prior_iterations = min(prior_iterations, iterations)
    if prior_iterations:
        phase = griffin_lim(torch.exp(prior_logamp), phase, config, prior_iterations)
    if iterations - prior_iterations:
        phase = griffin_lim(torch.exp(logamp), phase, config, iterations - prior_iterations)
    return phase


class VocoderPipeline(Pipeline):
    """`pipeline(mel [n_mels, T])` -> VocoderOutput with (T - 1) * hop samples at the card's sample rate."""

    task = TASK

    def __init__(self, model: torch.nn.Module, card: dict, policy: ComputePolicy | None = None, *,
                 chunk_frames: int = DEFAULT_CHUNK_FRAMES, phase_refine: int | None = None,
                 refine_prior: int | None = None, **base_options):
        super().__init__(model, card, policy, **base_options)
        # Griffin-Lim iterations started from the network's phase (0: pure APNet), the first `refine_prior` of them
        # on the mel's pseudo-inverse amplitude, the rest on the network's; the card holds the model's defaults
        # (models trained with an amplitude prior on a CPU ship with refinement on)
        inference = card.get("inference", {})
        self.phase_refine = int(inference.get("phase_refine", 0) if phase_refine is None else phase_refine)
        if self.phase_refine < 0:
            raise ValueError(f"phase_refine must be >= 0, not {self.phase_refine}")
        if refine_prior is not None and not 0 <= refine_prior <= self.phase_refine:
            raise UsageError(f"--refine-prior {refine_prior}: at most the --phase-refine iterations "
                             f"({self.phase_refine})")
        # the card's default applies to fewer iterations too: it is "start on the prior", capped by the total
        self.refine_prior = min(int(inference.get("phase_refine_prior", 0) if refine_prior is None else refine_prior),
                                self.phase_refine)
        self.mel_config = MelConfig.from_dict(card["preprocessing"]["mel"])
        self.prior_basis = mel_pseudo_inverse(self.mel_config) if self.refine_prior else None
        check_framing(model.config, self.mel_config)
        self.chunk_frames = int(chunk_frames)
        self.context = receptive_frames(model.config)
        # Frames whose overlap-add reaches a sample: the window spans n_fft samples around each frame centre.
        self.ola_frames = math.ceil(model.config.n_fft / (2 * model.config.hop_length)) + 1
        # each Griffin-Lim iteration reaches one window's worth of frames further: chunks need that much more context
        self.refine_frames = self.phase_refine * (math.ceil(model.config.n_fft / model.config.hop_length) - 1)

    @classmethod
    def card_problems(cls, card: dict) -> list[str]:
        return mel_card_problems(card)

    @staticmethod
    def prepare(model: torch.nn.Module, card: dict) -> torch.nn.Module:
        return fold_weight_norm(model)

    def network_call(self, mel: torch.Tensor, lengths: torch.Tensor | None = None):
        return self.model.spectra(mel, lengths)

    @property
    def sample_rate(self) -> int:
        return self.mel_config.sample_rate

    def check_inputs(self, mel: np.ndarray, source: str = "mel") -> np.ndarray:
        return check_mel(mel, self.mel_config, source)

    def __call__(self, mel: np.ndarray) -> VocoderOutput:
        return VocoderOutput(np.concatenate(list(self.stream(mel))), self.sample_rate)

    def _spectra(self, mel: torch.Tensor, lengths: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        logamp, phase = self.forward(mel, lengths)
        return logamp.float(), phase.float()   # the ISTFT runs in fp32 whatever the network's precision

    def _waveform(self, logamp: torch.Tensor, phase: torch.Tensor, mel: torch.Tensor) -> torch.Tensor:
        """Synthesis from [B, F, T] spectra (and their [B, n_mels, T] mel), after the phase refinement if any."""
        if self.phase_refine:
            prior = amplitude_from_mel(mel, self.prior_basis) if self.refine_prior else None
            phase = refined_phase(logamp, phase, prior, self.model.config.stft, self.phase_refine, self.refine_prior)
        _, _, wave = self.model.synthesize(logamp, phase)
        return wave

    def run_info(self) -> dict:
        return {**super().run_info(), "phase_refine": self.phase_refine, "phase_refine_prior": self.refine_prior}

    @torch.inference_mode()
    def batch(self, mels: list[np.ndarray]) -> list[np.ndarray]:
        """Several short mels (each at most `chunk_frames`) in padded forward passes; each output equals
        `pipeline(mel)` to float rounding (frames past an item's length are masked at every layer).
        Batching fills the CPU's matrix units better than one short utterance at a time."""
        if any(mel.shape[1] > self.chunk_frames for mel in mels):
            raise ValueError("batch() is for mels of at most chunk_frames frames; stream() the longer ones")
        waves: list[np.ndarray | None] = [None] * len(mels)
        for group in length_groups([mel.shape[1] for mel in mels]):
            frames = max(mels[i].shape[1] for i in group)
            padded = np.zeros((len(group), mels[group[0]].shape[0], frames), dtype=np.float32)
            for row, i in enumerate(group):
                padded[row, :, :mels[i].shape[1]] = mels[i]
            lengths = torch.tensor([mels[i].shape[1] for i in group], device=self.device)
            x = torch.from_numpy(padded).to(self.device)
            logamp, phase = self._spectra(x, lengths)
            for row, i in enumerate(group):
                n = mels[i].shape[1]
                wave = self._waveform(logamp[row:row + 1, :, :n], phase[row:row + 1, :, :n], x[row:row + 1, :, :n])
                waves[i] = wave[0].float().cpu().numpy()
        return waves  # type: ignore[return-value]

    @torch.inference_mode()
    def spectra(self, mel: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """(log-amplitude, phase) [F, T] in one pass (tests compare chunked output against this)."""
        x = torch.from_numpy(np.ascontiguousarray(mel))[None].to(self.device)
        logamp, phase = self._spectra(x)
        return logamp[0], phase[0]

    @torch.inference_mode()
    def stream(self, mel: np.ndarray) -> Iterator[np.ndarray]:
        """Yield the waveform in consecutive pieces; the pieces concatenate to the one-pass output."""
        frames = mel.shape[1]
        hop = self.model.config.hop_length
        total = (frames - 1) * hop
        pad = self.ola_frames + self.refine_frames
        for start in range(0, frames, self.chunk_frames):
            stop = min(start + self.chunk_frames, frames)
            # spectra for frames [start - pad, stop + pad), computed with network context around them
            spec_lo, spec_hi = max(0, start - pad), min(frames, stop + pad)
            net_lo, net_hi = max(0, spec_lo - self.context), min(frames, spec_hi + self.context)
            x = torch.from_numpy(np.ascontiguousarray(mel[:, net_lo:net_hi]))[None].to(self.device)
            logamp, phase = self._spectra(x)
            keep = slice(spec_lo - net_lo, spec_hi - net_lo)
            wave = self._waveform(logamp[..., keep], phase[..., keep], x[..., keep])
            # samples [start*hop, stop*hop) of the whole signal, located inside this chunk's ISTFT
            first, last = start * hop, min(stop * hop, total)
            if last <= first:
                continue
            offset = spec_lo * hop
            yield wave[0, first - offset:last - offset].float().cpu().numpy()
