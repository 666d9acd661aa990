"""The shipped APNet demo: loads, vocodes the sample mel, and as `mis vocode` runs it by default (its card's
Griffin-Lim refinement from the network's phase) beats Griffin-Lim from the same mel on a clip it never saw.

Its training files and its two validation clips (which picked the shipped step) are in the card; LJ001-0021..0024
are in neither, and are what the README's table and these tests measure on.
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
from mis.pipelines.vocoder.evaluate import f0_rmse_cents, griffin_lim, pesq_wideband
from mis.transforms.audio import log_mel
from mis.pipelines.vocoder.pipeline import VocoderPipeline
from mis.registry import resolve_checkpoint

runner = CliRunner()
SAMPLE = Path(__file__).resolve().parents[1] / "sample_data" / "audio"
UNSEEN = ["LJ001-0021.wav", "LJ001-0022.wav", "LJ001-0023.wav", "LJ001-0024.wav"]


def test_card_records_convention_training_and_the_clips_it_never_saw():
    card = read_card(resolve_checkpoint("vocoder", None))
    assert card["preprocessing"]["mel"]["sample_rate"] == 22050 and card["preprocessing"]["mel"]["hop_length"] == 256
    assert card["training"]["held_out_files"] == ["LJ001-0019.wav", "LJ001-0020.wav"]
    seen = set(card["training"]["held_out_files"]) | set(card["training"]["train_files"])
    assert not seen & set(UNSEEN)
    assert card["inference"] == {"phase_refine": 32, "phase_refine_prior": 16} and card["config"]["amplitude_prior"]


def test_sample_mel_vocodes_from_the_cli(tmp_path):
    result = runner.invoke(app, ["vocode", str(SAMPLE / "synthetic_vowels.npy"), "-o", str(tmp_path / "out.wav")])
    assert result.exit_code == 0, result.output
    samples, rate = sf.read(tmp_path / "out.wav")
    mel = np.load(SAMPLE / "synthetic_vowels.npy")
    assert rate == 22050 and len(samples) == (mel.shape[1] - 1) * 256 and np.abs(samples).max() > 0.01


def test_default_vocoding_beats_griffin_lim_on_an_unseen_clip():
    clip = shared_file("audio/ljspeech_22k/LJ001-0024.wav")
    pipeline = VocoderPipeline.from_checkpoint(resolve_checkpoint("vocoder", None))
    samples, _ = read_audio(clip)
    samples = samples[: 3 * 22050]
    mel = log_mel(torch.from_numpy(samples)[None], pipeline.mel_config)[0].numpy()
    ours = pipeline(mel).waveform
    baseline = griffin_lim(mel, pipeline.mel_config, length=len(samples))
    assert pesq_wideband(ours, samples, 22050) > pesq_wideband(baseline, samples, 22050)
    assert f0_rmse_cents(ours, samples, 22050) < f0_rmse_cents(baseline, samples, 22050) + 10
