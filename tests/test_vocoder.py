"""Vocoder: mel convention (vs librosa), APNet, chunked == one-pass, input checks, losses, CLI end to end."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from conftest import shared_file
from mis.checkpoints import build_card, read_card, read_state, save_checkpoint
from mis.cli.main import app
from mis.errors import InputError
from mis.io.audio import read_audio, read_mel
from mis.io.files import resolve_inputs
from mis.importing import key_map, map_keys
from mis.models.apnet import APNet, APNetConfig, apnet_paper_16k, count_parameters
from mis.pipelines.vocoder import losses as L
from mis.pipelines.vocoder.evaluate import griffin_lim, score_pair
from mis.pipelines.vocoder.mel import MEL_16K, MEL_22K
from mis.transforms import audio as A
from mis.transforms.audio import log_mel, mel_filterbank, stft
from mis.pipelines.vocoder.pipeline import VocoderPipeline, check_mel

runner = CliRunner()
TINY = APNetConfig(asp_channels=16, psp_channels=16)


def speech_like(seconds: float = 1.0, rate: int = 22050, seed: int = 0) -> np.ndarray:
    """A seeded harmonic signal with a moving pitch and some noise (no real audio needed)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    f0 = 140 + 30 * np.sin(2 * np.pi * 1.5 * t)
    phase = 2 * np.pi * np.cumsum(f0) / rate
    wave = sum(np.sin(k * phase) / k for k in range(1, 12)) * 0.15
    return (wave + 0.005 * rng.standard_normal(len(t))).astype(np.float32)


@pytest.fixture(scope="module")
def tiny_vocoder(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("vocoder") / "tiny.safetensors"
    card = build_card("apnet", TINY.to_dict(), task="vocoder", preprocessing={"mel": MEL_22K.to_dict()})
    save_checkpoint(path, APNet(TINY), card)
    return path


@pytest.mark.parametrize("config", [MEL_22K, MEL_16K], ids=["22k", "16k"])
def test_filterbank_equals_librosa_slaney(config):
    librosa = pytest.importorskip("librosa")
    expected = librosa.filters.mel(sr=config.sample_rate, n_fft=config.n_fft, n_mels=config.n_mels,
                                   fmin=config.fmin, fmax=config.fmax, htk=False, norm="slaney")
    np.testing.assert_allclose(mel_filterbank(config).numpy(), expected, atol=1e-6, rtol=0)


def test_log_mel_matches_a_librosa_computation():
    librosa = pytest.importorskip("librosa")
    wave = speech_like()
    spectrum = librosa.stft(wave, n_fft=1024, hop_length=256, win_length=1024, window="hann", center=True,
                            pad_mode="reflect")
    magnitude = np.sqrt(np.abs(spectrum) ** 2 + 1e-9)
    fbank = librosa.filters.mel(sr=22050, n_fft=1024, n_mels=80, fmin=0, fmax=8000)
    expected = np.log(np.maximum(fbank @ magnitude, 1e-5))
    ours = log_mel(torch.from_numpy(wave)[None], MEL_22K)[0].numpy()
    assert ours.shape == expected.shape == (80, len(wave) // 256 + 1)
    np.testing.assert_allclose(ours, expected, atol=2e-4)


def test_paper_configuration_and_shapes():
    model = APNet(apnet_paper_16k())
    assert count_parameters(model) == 72_191_494  # 72.19 M, as measured on the upstream module
    with torch.no_grad():
        logamp, phase, real, imag, wave = APNet(TINY)(torch.randn(2, 80, 50))
    assert logamp.shape == phase.shape == real.shape == (2, 513, 50)
    assert wave.shape == (2, 49 * 256)
    assert float(phase.abs().max()) <= math.pi + 1e-6


def test_upstream_weight_norm_keys_map_onto_ours():
    ours = set(APNet(TINY).state_dict())
    upstream = {k.replace(".parametrizations.weight.original0", ".weight_g")
                 .replace(".parametrizations.weight.original1", ".weight_v") for k in ours}
    assert set(map_keys(dict.fromkeys(upstream), key_map("apnet"))) == ours


def test_chunked_vocoding_equals_one_pass(tiny_vocoder):
    pipeline = VocoderPipeline.from_checkpoint(tiny_vocoder, chunk_frames=64)
    mel = np.random.default_rng(1).normal(-5, 2, (80, 301)).astype(np.float32)
    chunked = pipeline(mel).waveform
    with torch.no_grad():
        full = pipeline.model(torch.from_numpy(mel)[None])[4][0].numpy()
    assert chunked.shape == full.shape == (300 * 256,)
    np.testing.assert_allclose(chunked, full, atol=1e-5)


def test_mel_checks_name_the_problem():
    good = np.full((80, 20), -5.0, dtype=np.float32)
    assert check_mel(good, MEL_22K).shape == (80, 20)
    cases = [(good.T, "looks like \\[frames, n_mels\\]"), (np.full((100, 20), -5.0), "100 mel bands"),
             (np.abs(good), "linear"), (good - 20, "below log"), (good[:, :1], "at least 2")]
    for mel, message in cases:
        with pytest.raises(InputError, match=message):
            check_mel(mel, MEL_22K, "x.npy")


def test_read_mel_rejects_bad_files(tmp_path):
    for name, array, message in [("empty.npy", np.zeros((80, 0), np.float32), "empty"),
                                 ("nan.npy", np.full((80, 4), np.nan, np.float32), "NaN"),
                                 ("flat.npy", np.zeros(80, np.float32), "2-D"),
                                 ("cube.npy", np.zeros((2, 80, 4), np.float32), "2-D")]:
        np.save(tmp_path / name, array)
        with pytest.raises(InputError, match=message):
            read_mel(tmp_path / name)
    sf.write(tmp_path / "speech.wav", speech_like(0.2), 22050)
    with pytest.raises(InputError, match="audio file, not a mel"):
        read_mel(tmp_path / "speech.wav")


def test_losses_behave_as_defined():
    wave = torch.from_numpy(speech_like(0.5)[:43 * 256])[None]  # a whole number of hops: ISTFT gives it back
    target = L.targets(wave, MEL_22K)
    shifted = A.phase_losses(target["phase"] + 2 * math.pi, target["phase"])
    assert all(abs(float(v) + 1.0) < 1e-5 for v in shifted.values())  # anti-wrapping: 2*pi costs nothing
    spectrum = stft(wave, MEL_22K)
    assert float(A.consistency_loss(spectrum.real, spectrum.imag, MEL_22K)) < 1e-6
    noisy = A.consistency_loss(spectrum.real + torch.randn_like(spectrum.real), spectrum.imag, MEL_22K)
    assert float(noisy) > 0.1


def test_spectral_convergence_weighs_the_loud_harmonics():
    wave = torch.from_numpy(speech_like(0.5))[None]
    logamp = L.targets(wave, MEL_22K)["logamp"]
    assert float(L.spectral_convergence(logamp, logamp)) < 1e-4
    peaks = logamp > logamp.quantile(0.98)
    # the same log-domain error (hence the same MSE) costs far more on the few loud bins than on the quiet ones
    on_peaks, off_peaks = logamp - 1.0 * peaks, logamp - 1.0 * (~peaks & (torch.rand_like(logamp) < peaks.float().mean()))
    assert abs(float(F.mse_loss(on_peaks, logamp)) - float(F.mse_loss(off_peaks, logamp))) < 0.01
    assert float(L.spectral_convergence(on_peaks, logamp)) > 5 * float(L.spectral_convergence(off_peaks, logamp))
    output = {"logamp": on_peaks, "phase": torch.zeros_like(logamp), "real": torch.zeros_like(logamp),
              "imag": torch.zeros_like(logamp)}
    target = L.targets(wave, MEL_22K)
    paper = L.spectral_losses(output, target, MEL_22K)["total"]
    assert float(L.spectral_losses(output, target, MEL_22K, 45.0)["total"] - paper) > 1.0


def test_frame_convergence_counts_the_quiet_frames_the_segment_wide_ratio_ignores():
    amplitude = torch.full((1, 513, 8), 1e-3)
    amplitude[..., :6] = 1.0                                    # six loud frames, then two quiet ones (a voicing offset)
    amplitude[..., 6:] = 0.15
    target = torch.log(amplitude + 1e-5)
    quiet_halved = target.clone()
    quiet_halved[..., 6:] = torch.log(0.5 * amplitude[..., 6:])
    assert float(L.spectral_convergence(quiet_halved, target)) < 0.05
    assert abs(float(L.frame_convergence(quiet_halved, target)) - 0.5 * 2 / 8) < 0.01   # 2 of 8 frames off by half
    silent = target.clone()
    silent[..., 6:] = math.log(1e-5)                          # silent frames floored: their noise cannot take over
    silent_target = silent.clone()
    silent_target[..., 6:] = math.log(2e-5)
    assert float(L.frame_convergence(silent, silent_target)) < 0.01
    output = {"logamp": quiet_halved, "phase": torch.zeros_like(target), "real": torch.zeros_like(target),
              "imag": torch.zeros_like(target)}
    targets = {"logamp": target, "phase": torch.zeros_like(target), "real": torch.zeros_like(target),
               "imag": torch.zeros_like(target)}
    plain = L.spectral_losses(output, targets, MEL_22K, 45.0, 0.0)["total"]
    framed = L.spectral_losses(output, targets, MEL_22K, 45.0, 0.0, frame_convergence_weight=45.0)["total"]
    assert abs(float(framed - plain) - 45 * 0.125) < 0.5


def test_metrics_and_griffin_lim_baseline():
    wave = speech_like(1.5)
    perfect = score_pair(wave, wave, MEL_22K)
    assert perfect["lsd_db"] == 0 and perfect["mcd_db"] == 0 and perfect["stoi"] > 0.999
    mel = log_mel(torch.from_numpy(wave)[None], MEL_22K)[0].numpy()
    baseline = griffin_lim(mel, MEL_22K, length=len(wave))
    scores = score_pair(baseline, wave, MEL_22K)
    assert baseline.shape == wave.shape and scores["lsd_db"] > 1 and 0 < scores["stoi"] < 1


def test_training_writes_a_loadable_checkpoint(tmp_path):
    from mis.models.discriminators import DiscriminatorConfig
    from mis.pipelines.vocoder.train import VocoderTrainOptions, train_vocoder

    clips = []
    for i in range(3):
        clips.append(tmp_path / f"clip{i}.wav")
        sf.write(clips[-1], speech_like(1.0, seed=i), 22050)
    options = VocoderTrainOptions(out=tmp_path / "run", network=TINY, steps=2, batch_size=2, segment=2048,
                                  val_files=1, validate_every=1, progress=False,
                                  discriminator=DiscriminatorConfig(channels=4, scale_channels=8))
    result = train_vocoder(clips, options)
    card = read_card(result["checkpoint"])
    assert card["training"]["held_out_files"] == ["clip2.wav"] and card["metrics"]["val_lsd"] > 0
    assert VocoderPipeline.from_checkpoint(result["checkpoint"])(np.full((80, 10), -5.0, np.float32)).waveform.shape == (2304,)


def test_training_can_start_from_a_checkpoint_of_the_same_network(tiny_vocoder, tmp_path):
    import dataclasses

    from mis.errors import UsageError
    from mis.models.discriminators import DiscriminatorConfig
    from mis.pipelines.vocoder.train import VocoderTrainOptions, train_vocoder

    clips = []
    for i in range(2):
        clips.append(tmp_path / f"clip{i}.wav")
        sf.write(clips[-1], speech_like(1.0, seed=i), 22050)
    options = VocoderTrainOptions(out=tmp_path / "run", network=TINY, steps=1, batch_size=2, segment=2048, lr=0.0,
                                  val_files=0, progress=False, init=tiny_vocoder,
                                  discriminator=DiscriminatorConfig(channels=4, scale_channels=8))
    result = train_vocoder(clips, options)     # a learning rate of 0: the weights stay the checkpoint's
    start, trained = read_state(tiny_vocoder), read_state(result["checkpoint"])
    assert start.keys() == trained.keys() and all(torch.equal(start[k], trained[k]) for k in start)
    card = read_card(result["checkpoint"])
    assert card["training"]["init"] == tiny_vocoder.name
    assert card["training"]["init_training"] == {"command": read_card(tiny_vocoder).get("training", {}).get("command"),
                                                 "seconds": read_card(tiny_vocoder).get("metrics", {}).get("seconds")}
    wider = dataclasses.replace(TINY, asp_channels=TINY.asp_channels * 2)
    other = dataclasses.replace(options, out=tmp_path / "other", network=wider)
    with pytest.raises(UsageError, match="not an APNet checkpoint of the network"):
        train_vocoder(clips, other)


def test_training_through_the_phase_refinement_reaches_the_amplitude_and_picks_by_pitch(tmp_path):
    import dataclasses

    from mis.errors import UsageError
    from mis.models.discriminators import DiscriminatorConfig
    from mis.pipelines.vocoder.train import VocoderTrainOptions, refined_output, train_vocoder

    torch.manual_seed(0)
    wave = torch.from_numpy(speech_like(0.5))[None]
    target = L.targets(wave, MEL_22K)
    options = VocoderTrainOptions(out=tmp_path / "run", network=TINY, steps=2, batch_size=2, segment=2048,
                                  val_files=1, validate_every=1, progress=False, phase_refine=4, refine_prior=2,
                                  refined_weight=45.0, discriminator=DiscriminatorConfig(channels=4, scale_channels=8))
    generator = APNet(TINY)
    logamp = target["logamp"].clone().requires_grad_(True)
    phase = torch.zeros_like(logamp, requires_grad=True)
    mel = log_mel(wave, MEL_22K)
    loss = L.multi_resolution_stft_loss(refined_output(generator, logamp, phase, mel, options)[:, :wave.shape[1]],
                                        wave)
    loss.backward()
    assert logamp.grad.abs().sum() > 0 and phase.grad is None   # the phase predictor keeps its own losses
    halved = refined_output(generator, target["logamp"] - math.log(2), phase.detach(), mel, options)[:, :wave.shape[1]]
    assert float(L.multi_resolution_stft_loss(halved, wave)) > float(loss.detach()) + 0.1
    clips = []
    for i in range(2):
        clips.append(tmp_path / f"clip{i}.wav")
        sf.write(clips[-1], speech_like(1.0, seed=i), 22050)
    card = read_card(train_vocoder(clips, options)["checkpoint"])
    assert card["training"]["refined_weight"] == 45.0 and card["training"]["best_metric"] == "val_f0"
    assert card["metrics"]["val_f0"] is not None and card["inference"]["phase_refine"] == 4
    assert card["inference"]["phase_refine_prior"] == 2
    with pytest.raises(UsageError, match="at most --phase-refine"):
        train_vocoder(clips, dataclasses.replace(options, out=tmp_path / "more", refine_prior=5))
    with pytest.raises(UsageError, match="give --phase-refine"):
        train_vocoder(clips, dataclasses.replace(options, out=tmp_path / "other", phase_refine=0, refine_prior=0))


def test_cli_mel_then_vocode_and_bad_inputs(tiny_vocoder, tmp_path):
    wav = tmp_path / "speech.wav"
    sf.write(wav, speech_like(0.6, rate=16000), 16000)  # another rate: `mis mel` resamples
    result = runner.invoke(app, ["mel", str(wav), "--model", str(tiny_vocoder), "-o", str(tmp_path / "mels")])
    assert result.exit_code == 0, result.output
    mel = np.load(tmp_path / "mels" / "speech_mel.npy")
    assert mel.shape == (80, int(0.6 * 22050) // 256 + 1)
    bad = tmp_path / "mels" / "transposed.npy"
    np.save(bad, mel.T.copy())
    out = tmp_path / "wavs"
    result = runner.invoke(app, ["--json", "vocode", str(tmp_path / "mels"), "--model", str(tiny_vocoder), "-o",
                                 str(out)])
    assert result.exit_code == 1
    items = {Path(i["source"]).name: i for i in json.loads(result.stdout)["items"]}
    assert items["speech_mel.npy"]["status"] == "done" and "transpose" in items["transposed.npy"]["error"]
    assert items["speech_mel.npy"]["clipped_samples"] == 0
    assert sorted(p.name for p in out.iterdir()) == ["speech_mel.wav"]  # no partial output for the bad one
    samples, rate = sf.read(out / "speech_mel.wav")
    assert rate == 22050 and len(samples) == (mel.shape[1] - 1) * 256


def test_real_speech_round_trip_through_mel_keeps_shape(tiny_vocoder, tmp_path):
    clip = shared_file("audio/ljspeech_22k/LJ001-0001.wav")
    result = runner.invoke(app, ["mel", str(clip), "--model", str(tiny_vocoder), "-o", str(tmp_path / "m.npy")])
    assert result.exit_code == 0, result.output
    mel = np.load(tmp_path / "m.npy")
    info = sf.info(str(clip))
    assert mel.shape == (80, info.frames // 256 + 1) and mel.min() >= math.log(1e-5) - 1e-6


def test_upstream_style_checkpoint_imports_and_vocodes_identically(tmp_path):
    torch.manual_seed(3)
    original = APNet(TINY).eval()
    upstream = {k.replace(".parametrizations.weight.original0", ".weight_g")
                 .replace(".parametrizations.weight.original1", ".weight_v"): v
                for k, v in original.state_dict().items()}
    source = tmp_path / "g_00001000"
    torch.save({"generator": upstream}, source)
    target = tmp_path / "imported.safetensors"
    result = runner.invoke(app, ["models", "import", str(source), "--task", "vocoder", "-o", str(target),
                                 "--config", json.dumps({"asp_channels": 16, "psp_channels": 16, "hop_length": 256,
                                                         "win_length": 1024})])
    assert result.exit_code == 0, result.output
    pipeline = VocoderPipeline.from_checkpoint(target)
    assert pipeline.mel_config.hop_length == 256 and pipeline.mel_config.sample_rate == 22050
    mel = np.random.default_rng(2).normal(-5, 2, (80, 40)).astype(np.float32)
    with torch.no_grad():
        expected = original(torch.from_numpy(mel)[None])[4][0].numpy()
    np.testing.assert_allclose(pipeline(mel).waveform, expected, atol=1e-5)


def test_yin_f0_tracks_a_known_pitch_and_agrees_with_librosa():
    from mis.pipelines.vocoder.evaluate import yin_f0

    rate = 22050
    t = np.arange(rate) / rate
    f0 = 150 + 30 * np.sin(2 * np.pi * t)
    wave = sum(np.sin(k * 2 * np.pi * np.cumsum(f0) / rate) / k for k in (1, 2, 3)).astype(np.float32)
    ours = yin_f0(wave, rate)
    centres = np.arange(len(ours)) * 256 + 512
    truth = f0[centres]
    assert np.all(ours > 0)
    assert np.median(np.abs(1200 * np.log2(ours / truth))) < 10
    assert np.all(yin_f0(0.01 * np.random.default_rng(0).standard_normal(rate), rate)[5:-5] == 0)  # noise: unvoiced
    librosa = pytest.importorskip("librosa")
    reference = librosa.yin(wave, fmin=60, fmax=500, sr=rate, frame_length=1024, hop_length=256,
                            trough_threshold=0.15, center=False)
    assert np.median(np.abs(1200 * np.log2(ours / reference[:len(ours)]))) < 15


def test_a_log10_mel_is_told_apart_from_a_natural_log_mel():
    wave = np.concatenate([speech_like(0.5), np.zeros(4096, np.float32)])  # silence reaches the floor
    power = torch.exp(log_mel(torch.from_numpy(wave)[None], MEL_22K, mel_filterbank(MEL_22K))[0]).numpy()
    natural = np.log(np.maximum(power, 1e-5))
    assert check_mel(natural, MEL_22K).shape == natural.shape
    with pytest.raises(InputError, match="looks like a log10 mel"):
        check_mel(np.log10(np.maximum(power, 1e-5)), MEL_22K)


def test_out_of_range_mels_and_too_short_audio_are_refused(tiny_vocoder, tmp_path):
    with pytest.raises(InputError, match="mel values reach"):
        check_mel(np.full((80, 10), 40.0, np.float32) - np.eye(80, 10, dtype=np.float32) * 45, MEL_22K)
    short = tmp_path / "short.wav"
    sf.write(short, speech_like(0.01), 22050)
    result = runner.invoke(app, ["evaluate", "vocoder", str(short), "--model", str(tiny_vocoder)])
    assert result.exit_code == 1 and "too short" in result.output and "Traceback" not in result.output
    # with a good file beside it, the good one is still scored and the bad ones are listed
    good = tmp_path / "good.wav"
    sf.write(good, speech_like(0.5), 22050)
    result = runner.invoke(app, ["--json", "evaluate", "vocoder", str(short), str(good), str(tmp_path / "gone.wav"),
                                 "--model", str(tiny_vocoder)])
    report = json.loads(result.stdout)
    assert result.exit_code == 1 and [c["file"] for c in report["cases"]] == [str(good)]
    assert [e["file"] for e in report["errors"]] == [str(short), str(tmp_path / "gone.wav")]


def test_mel_notes_downmixed_and_band_limited_sources(tiny_vocoder, tmp_path):
    wav = tmp_path / "phone.wav"
    mono = speech_like(0.5, rate=8000)
    sf.write(wav, np.stack([mono, 0.5 * mono], axis=1), 8000)  # stereo telephone-band recording
    result = runner.invoke(app, ["--json", "mel", str(wav), "--model", str(tiny_vocoder), "-o", str(tmp_path / "m")])
    assert result.exit_code == 0, result.output
    note = json.loads(result.stdout)["items"][0]["note"]
    assert "2 channels averaged to mono" in note and "no content above 4000 Hz" in note


def test_padded_batch_equals_single_items(tiny_vocoder):
    pipeline = VocoderPipeline.from_checkpoint(tiny_vocoder, chunk_frames=64)
    rng = np.random.default_rng(3)
    mels = [rng.normal(-5, 2, (80, n)).astype(np.float32) for n in (40, 7, 64, 45, 2, 60)]
    batched = pipeline.batch(mels)
    for mel, wave in zip(mels, batched):
        single = pipeline(mel).waveform
        assert wave.shape == single.shape == ((mel.shape[1] - 1) * 256,)
        np.testing.assert_allclose(wave, single, atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match="chunk_frames"):
        pipeline.batch([rng.normal(-5, 2, (80, 65)).astype(np.float32)])


def test_spectra_masking_is_what_makes_padding_harmless():
    torch.manual_seed(1)
    model = APNet(TINY).eval()
    short = torch.randn(1, 80, 20) - 5
    padded = torch.cat([short, torch.randn(1, 80, 30)], dim=-1)  # garbage after the item's 20 frames
    with torch.no_grad():
        alone = model.spectra(short)[0]
        masked = model.spectra(padded, torch.tensor([20]))[0][..., :20]
        unmasked = model.spectra(padded)[0][..., :20]
    torch.testing.assert_close(masked, alone, atol=1e-5, rtol=1e-4)
    assert (unmasked - alone).abs().max() > 1e-3  # the receptive field does reach into the padding


def test_cli_vocode_folder_batches_short_and_streams_long(tiny_vocoder, tmp_path):
    rng = np.random.default_rng(4)
    mels = tmp_path / "mels"
    mels.mkdir()
    lengths = {"a": 30, "b": 1500, "c": 70, "d": 100}  # b: longer than the 1024-frame chunk; c, d: one padded pass
    for name, n in lengths.items():
        np.save(mels / f"{name}.npy", np.clip(rng.normal(-5, 2, (80, n)), -11.5, 2).astype(np.float32))
    result = runner.invoke(app, ["--batch-size", "4", "vocode", str(mels), "--model", str(tiny_vocoder), "-o",
                                 str(tmp_path / "wavs")])
    assert result.exit_code == 0, result.output
    pipeline = VocoderPipeline.from_checkpoint(tiny_vocoder)
    for name, n in lengths.items():
        samples, _ = sf.read(tmp_path / "wavs" / f"{name}.wav", dtype="float32")
        alone = np.clip(pipeline(np.load(mels / f"{name}.npy")).waveform, -1, 1)
        assert len(samples) == (n - 1) * 256
        np.testing.assert_allclose(samples, alone, atol=2 / 32768)  # PCM_16 rounding
    # The default (batch size 1) gives each file exactly the bytes of vocoding it alone.
    result = runner.invoke(app, ["vocode", str(mels), "--model", str(tiny_vocoder), "-o", str(tmp_path / "one")])
    assert result.exit_code == 0, result.output
    for name in ("a", "c"):
        single = tmp_path / f"{name}_alone.wav"
        assert runner.invoke(app, ["vocode", str(mels / f"{name}.npy"), "--model", str(tiny_vocoder), "-o",
                                   str(single)]).exit_code == 0
        assert (tmp_path / "one" / f"{name}.wav").read_bytes() == single.read_bytes()


def test_masked_spectra_keep_a_low_precision_dtype():
    model = APNet(TINY).to(torch.bfloat16).eval()
    with torch.no_grad():
        logamp, _ = model.spectra(torch.randn(2, 80, 12, dtype=torch.bfloat16) - 5, torch.tensor([12, 7]))
    assert logamp.dtype == torch.bfloat16


def test_read_mel_names_pickled_and_npz_files(tmp_path):
    pickled, archive = tmp_path / "objects.npy", tmp_path / "archive.npy"
    np.save(pickled, np.array([{"mel": 1}], dtype=object), allow_pickle=True)
    with open(archive, "wb") as handle:
        np.savez(handle, mel=np.zeros((80, 4)))
    with pytest.raises(InputError, match="pickled objects, which are never loaded"):
        read_mel(pickled)
    with pytest.raises(InputError, match=r"\.npz archive"):
        read_mel(archive)
    text = tmp_path / "notes.npy"
    text.write_text("not an array")
    with pytest.raises(InputError, match="no NumPy header"):
        read_mel(text)


def test_vocode_reports_clipped_samples(tmp_path):
    torch.manual_seed(0)
    loud = APNet(TINY)
    with torch.no_grad():
        loud.ASP_output_conv.bias.fill_(6.0)  # log-amplitude 6 in every bin: far beyond full scale
    path = tmp_path / "loud.safetensors"
    save_checkpoint(path, loud, build_card("apnet", TINY.to_dict(), task="vocoder",
                                           preprocessing={"mel": MEL_22K.to_dict()}))
    np.save(tmp_path / "m.npy", np.full((80, 20), -4.0, np.float32))
    result = runner.invoke(app, ["--json", "vocode", str(tmp_path / "m.npy"), "--model", str(path), "-o",
                                 str(tmp_path / "loud.wav")])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["items"][0]["clipped_samples"] > 100


def test_pipeline_refuses_a_card_whose_mel_framing_differs_from_the_network():
    from mis.errors import CheckpointError

    card = build_card("apnet", TINY.to_dict(), task="vocoder", preprocessing={"mel": MEL_16K.to_dict()})
    with pytest.raises(CheckpointError, match="hop_length 256 vs 80"):
        VocoderPipeline(APNet(TINY), card)


def test_a_truncated_wav_is_refused_and_mp3_files_are_found_in_folders(tmp_path):
    wav = tmp_path / "cut.wav"
    sf.write(wav, speech_like(0.5), 22050, subtype="PCM_16")
    whole = wav.read_bytes()
    assert read_audio(wav)[1].frames == 11025
    wav.write_bytes(whole[: len(whole) // 2])  # libsndfile alone reads this as a shorter recording
    with pytest.raises(InputError, match="truncated WAV"):
        read_audio(wav)
    (tmp_path / "talk.mp3").write_bytes(b"")
    assert (tmp_path / "talk.mp3") in resolve_inputs([tmp_path], kinds=("audio",))


def test_mel_records_its_convention_and_vocode_checks_it(tmp_path):
    wav = tmp_path / "take.wav"
    sf.write(wav, speech_like(0.5), 22050, subtype="PCM_16")
    result = runner.invoke(app, ["mel", str(wav), "--preset", "22k", "-o", str(tmp_path / "mels")])
    assert result.exit_code == 0, result.output
    sidecar = json.loads((tmp_path / "mels" / "take_mel.json").read_text())
    assert sidecar["mel"] == MEL_22K.to_dict() and sidecar["frames"] == np.load(tmp_path / "mels" / "take_mel.npy").shape[1]
    result = runner.invoke(app, ["mel", str(wav), "--preset", "16k", "-o", str(tmp_path / "mels16")])
    result = runner.invoke(app, ["vocode", str(tmp_path / "mels16" / "take_mel.npy"), "-o", str(tmp_path / "w")])
    assert result.exit_code == 1 and "another mel convention" in result.stderr and "sample_rate 16000 vs 22050" \
        in result.stderr
    assert not (tmp_path / "w").exists() or not list((tmp_path / "w").iterdir())


def test_amplitude_prior_starts_from_the_mel_pseudo_inverse_and_leaves_upstream_keys_alone():
    from mis.transforms.audio import amplitude_from_mel, mel_pseudo_inverse

    plain = APNet(TINY)
    prior = APNet(APNetConfig(asp_channels=16, psp_channels=16, amplitude_prior=True))
    assert set(prior.state_dict()) == set(plain.state_dict())   # imported weights map as before
    with torch.no_grad():   # a zero residual: the prior alone
        conv = prior.ASP_output_conv
        conv.parametrizations.weight.original0.zero_()   # the weight-norm gain: w = g v / |v| = 0
        conv.bias.zero_()
    mel = torch.from_numpy(log_mel(torch.from_numpy(speech_like(0.5))[None], MEL_22K)[0].numpy())[None]
    logamp, _ = prior.spectra(mel)
    expected = amplitude_from_mel(mel, mel_pseudo_inverse(MEL_22K))
    torch.testing.assert_close(logamp, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("prior", [0, 2])
def test_phase_refinement_streams_in_chunks_equal_to_one_pass(tmp_path, prior):
    torch.manual_seed(1)
    config = APNetConfig(asp_channels=16, psp_channels=16, amplitude_prior=True)
    card = build_card("apnet", config.to_dict(), task="vocoder", preprocessing={"mel": MEL_22K.to_dict()})
    card["inference"] = {"phase_refine": 4, "phase_refine_prior": prior}
    mel = log_mel(torch.from_numpy(speech_like(1.5))[None], MEL_22K)[0].numpy()
    one_pass = VocoderPipeline(APNet(config), card, chunk_frames=100_000)
    torch.manual_seed(1)
    chunked = VocoderPipeline(APNet(config), card, chunk_frames=32)
    assert one_pass.phase_refine == 4 and chunked.refine_frames == 12
    assert one_pass.run_info()["phase_refine_prior"] == prior
    whole, pieces = one_pass(mel).waveform, chunked(mel).waveform
    np.testing.assert_allclose(pieces, whole, atol=1e-4)
    pure = VocoderPipeline(APNet(config), card, phase_refine=0)
    assert pure.run_info()["phase_refine"] == 0 and not np.allclose(pure(mel).waveform, whole, atol=1e-3)


def test_refinement_on_the_prior_first_starts_from_the_mels_own_amplitude():
    from mis.errors import UsageError
    from mis.pipelines.vocoder.pipeline import refined_phase
    from mis.transforms.audio import amplitude_from_mel, mel_pseudo_inverse

    wave = torch.from_numpy(speech_like(0.5))[None]
    mel = log_mel(wave, MEL_22K)
    prior = amplitude_from_mel(mel, mel_pseudo_inverse(MEL_22K))
    start = torch.zeros_like(prior)
    network, other = prior + 0.5, prior - 1.0
    # all iterations on the prior: the network's amplitude does not enter
    torch.testing.assert_close(refined_phase(network, start, prior, MEL_22K, 3, 3),
                               refined_phase(other, start, prior, MEL_22K, 3, 3))
    # split: the prior's iterations, then the network amplitude's from where they ended
    from mis.transforms.audio import griffin_lim
    expected = griffin_lim(torch.exp(network), griffin_lim(torch.exp(prior), start, MEL_22K, 2), MEL_22K, 1)
    torch.testing.assert_close(refined_phase(network, start, prior, MEL_22K, 3, 2), expected)
    assert not torch.allclose(refined_phase(network, start, prior, MEL_22K, 3, 0), expected, atol=1e-3)
    config = APNetConfig(asp_channels=16, psp_channels=16, amplitude_prior=True)
    card = build_card("apnet", config.to_dict(), task="vocoder", preprocessing={"mel": MEL_22K.to_dict()},
                      inference={"phase_refine": 4, "phase_refine_prior": 4})
    assert VocoderPipeline(APNet(config), card, phase_refine=2).refine_prior == 2   # the card's, capped
    with pytest.raises(UsageError, match="at most"):
        VocoderPipeline(APNet(config), card, phase_refine=2, refine_prior=3)


def test_griffin_lim_refinement_improves_a_given_phase():
    """Refining from a rough phase brings the STFT of the result closer to the target amplitude."""
    from mis.transforms.audio import griffin_lim, istft, stft

    wave = torch.from_numpy(speech_like(1.0))[None]
    spectrum = stft(wave, MEL_22K)
    amplitude = spectrum.abs()
    rough = torch.angle(spectrum) + 0.8 * torch.randn(spectrum.shape, generator=torch.Generator().manual_seed(0))

    def inconsistency(phase):
        again = stft(istft(torch.polar(amplitude, phase), MEL_22K), MEL_22K)[..., :amplitude.shape[-1]].abs()
        return float((again - amplitude).abs().mean())

    assert inconsistency(griffin_lim(amplitude, rough, MEL_22K, 16)) < 0.6 * inconsistency(rough)


def test_f0_frame_error_counts_gross_pitch_and_voicing_errors():
    from mis.pipelines.vocoder.evaluate import f0_frame_error

    rate = 22050
    t = np.arange(rate) / rate
    voice = (0.4 * np.sin(2 * np.pi * 150 * t) + 0.2 * np.sin(2 * np.pi * 300 * t)).astype(np.float32)
    assert f0_frame_error(voice, voice, rate) == 0.0
    octave = (0.4 * np.sin(2 * np.pi * 300 * t) + 0.2 * np.sin(2 * np.pi * 600 * t)).astype(np.float32)
    assert f0_frame_error(octave, voice, rate) > 90              # every frame off by an octave
    half_silent = voice.copy()
    half_silent[rate // 2:] = 0
    assert 35 < f0_frame_error(half_silent, voice, rate) < 65    # the voicing lost in half the frames


def test_f0_rmse_splits_into_voicing_boundaries_and_held_pitch():
    from mis.pipelines.vocoder.evaluate import _rmse_cents_split, near_voicing_changes

    reference = np.array([0] * 2 + [200] * 14 + [0] * 4, dtype=float)
    near = np.flatnonzero(near_voicing_changes(reference))
    assert near.tolist() == [0, 1, 2, 3, 4, 13, 14, 15, 16, 17, 18]   # 3 frames either side of each change
    onset_sharp = reference.copy()
    onset_sharp[2] *= 2 ** (100 / 1200)                  # a semitone sharp on the first voiced frame only
    split = _rmse_cents_split(onset_sharp, reference)
    assert split["f0_rmse_interior_cents"] == 0.0
    assert abs(split["f0_rmse_boundary_cents"] - 100 / math.sqrt(6)) < 0.1   # 6 voiced frames near a change
    held_flat = reference.copy()
    held_flat[8] *= 2 ** (-100 / 1200)
    split = _rmse_cents_split(held_flat, reference)
    assert split["f0_rmse_boundary_cents"] == 0.0
    assert abs(split["f0_rmse_interior_cents"] - 100 / math.sqrt(8)) < 0.1


def test_f0_rmse_measures_a_known_detune_and_ignores_one_octave_slip_of_the_tracker():
    from mis.pipelines.vocoder.evaluate import f0_rmse_cents, f0_rmse_yin_cents, pyin_f0

    rate = 22050
    t = np.arange(rate) / rate

    def voice(f0: np.ndarray) -> np.ndarray:
        return sum(np.sin(k * 2 * np.pi * np.cumsum(f0) / rate) / k for k in (1, 2, 3)).astype(np.float32)

    gliding = 150 + 30 * np.sin(2 * np.pi * t)
    assert f0_rmse_cents(voice(gliding), voice(gliding), rate) == 0.0
    assert 90 < f0_rmse_cents(voice(gliding * 2 ** (100 / 1200)), voice(gliding), rate) < 110   # a semitone sharp
    # one 20 ms burst where the second harmonic dominates: raw YIN may call it the octave, pYIN's track does not
    reference = voice(np.full(rate, 200.0))
    burst = slice(rate // 2, rate // 2 + 441)
    reference[burst] = (0.1 * np.sin(2 * np.pi * 200 * t[burst])
                        + np.sin(2 * np.pi * 400 * t[burst])).astype(np.float32)
    tracked = pyin_f0(reference, rate)
    assert np.all(np.abs(1200 * np.log2(tracked[tracked > 0] / 200)) < 50)
    assert f0_rmse_cents(voice(np.full(rate, 200.0)), reference, rate) < 20
    assert f0_rmse_yin_cents(voice(np.full(rate, 200.0)), reference, rate) is not None
