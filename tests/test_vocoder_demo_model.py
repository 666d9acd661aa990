"""The shipped APNet demo: loads, vocodes the sample mel, keeps its (full-band) LSD below Griffin-Lim's.

The demo is under-trained (README): Griffin-Lim beats it in PESQ and in-band LSD; these tests guard what
it does do, so that a regression in loading, chunking or the mel convention shows up.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from typer.testing import CliRunner

from conftest import shared_file
from mis.checkpoints import read_card
from mis.cli.main import app
from mis.io.audio import read_audio
from mis.pipelines.vocoder.evaluate import griffin_lim, log_spectral_distance
from mis.transforms.audio import log_mel
from mis.pipelines.vocoder.pipeline import VocoderPipeline
from mis.registry import resolve_checkpoint

runner = CliRunner()
SAMPLE = Path(__file__).resolve().parents[1] / "sample_data" / "audio"


def test_card_records_convention_and_held_out_clips():
    card = read_card(resolve_checkpoint("vocoder", None))
    assert card["preprocessing"]["mel"]["sample_rate"] == 22050 and card["preprocessing"]["mel"]["hop_length"] == 256
    assert card["training"]["held_out_files"] == ["LJ001-0021.wav", "LJ001-0022.wav", "LJ001-0023.wav",
                                                  "LJ001-0024.wav"]
    assert not set(card["training"]["held_out_files"]) & set(card["training"]["train_files"])


def test_sample_mel_vocodes_from_the_cli(tmp_path):
    result = runner.invoke(app, ["vocode", str(SAMPLE / "synthetic_vowels.npy"), "-o", str(tmp_path / "out.wav")])
    assert result.exit_code == 0, result.output
    samples, rate = sf.read(tmp_path / "out.wav")
    mel = np.load(SAMPLE / "synthetic_vowels.npy")
    assert rate == 22050 and len(samples) == (mel.shape[1] - 1) * 256 and np.abs(samples).max() > 0.01


def test_held_out_clip_has_lower_lsd_than_griffin_lim():
    clip = shared_file("audio/ljspeech_22k/LJ001-0024.wav")
    pipeline = VocoderPipeline.from_checkpoint(resolve_checkpoint("vocoder", None))
    samples, _ = read_audio(clip)
    samples = samples[: 3 * 22050]
    mel = log_mel(torch.from_numpy(samples)[None], pipeline.mel_config)[0].numpy()
    ours = log_spectral_distance(pipeline(mel).waveform, samples, pipeline.mel_config)
    baseline = log_spectral_distance(griffin_lim(mel, pipeline.mel_config, length=len(samples)), samples,
                                     pipeline.mel_config)
    assert ours < baseline
