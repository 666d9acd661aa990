"""Bandwidth extension (AP-BWE): the network, streaming, rate rules, metrics, training, import and the CLI."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from typer.testing import CliRunner

from mis.checkpoints import build_card, read_card, save_checkpoint
from mis.cli.main import app
from mis.errors import InputError
from mis.models.apbwe import APBWE, APBWEConfig, apbwe_paper, count_parameters
from mis.pipelines.bwe.evaluate import narrowband_pair, scores
from mis.pipelines.bwe.pipeline import BandwidthExtensionPipeline, chunk_margin
from mis.pipelines.vocoder.synthetic import synthetic_speech
from mis.transforms.audio import ArraySource, ResampledSource, resample

runner = CliRunner()
TINY = APBWEConfig(channels=16, layers=2)


def make_checkpoint(path: Path, input_rate: int = 16000, rate: int = 48000, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    save_checkpoint(path, APBWE(TINY), build_card("apbwe", TINY.to_dict(), task="bwe", preprocessing={
        "input_sample_rate": input_rate, "sample_rate": rate}))
    return path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("bwe") / "tiny.safetensors")


def speech(seconds: float, rate: int, seed: int = 0) -> np.ndarray:
    return synthetic_speech(seconds, rate, seed=seed)


def test_paper_configuration_has_the_published_size_and_upstream_names():
    model = APBWE(apbwe_paper())
    assert count_parameters(model) == 29_760_515      # 29.76 M, as the paper
    names = set(model.state_dict())
    for name in ("conv_pre_mag.weight", "norm_pre_pha.bias", "convnext_mag.7.dwconv.weight",
                 "convnext_pha.0.pwconv2.weight", "convnext_mag.3.gamma", "linear_post_pha_i.bias"):
        assert name in names


def test_amplitude_is_a_residual_on_the_input():
    model = APBWE(TINY)
    with torch.no_grad():
        model.linear_post_mag.weight.zero_()
        model.linear_post_mag.bias.zero_()
    logamp, phase = torch.randn(1, TINY.freq_bins, 20), torch.rand(1, TINY.freq_bins, 20) * 6 - 3
    out, _ = model(logamp, phase)
    torch.testing.assert_close(out, logamp)


@pytest.mark.parametrize("rates", [(16000, 48000), (8000, 16000), (44100, 48000), (48000, 16000), (22050, 16000)])
def test_windowed_resampling_equals_resampling_the_whole_signal(rates):
    source, target = rates
    signal = np.random.default_rng(1).standard_normal((2, source * 3 // 2)).astype(np.float32)
    whole = resample(signal, source, target)
    windowed = ResampledSource(ArraySource(signal), source, target)
    assert windowed.length == whole.shape[-1]
    for start, stop in [(0, 999), (777, 5003), (whole.shape[-1] - 1234, whole.shape[-1])]:
        np.testing.assert_allclose(windowed.read(start, stop), whole[:, start:stop], atol=2e-6)


def test_chunked_output_equals_one_pass_and_stereo_is_per_channel(tiny):
    one_pass = BandwidthExtensionPipeline.from_checkpoint(tiny, chunk_seconds=100)
    chunked = BandwidthExtensionPipeline.from_checkpoint(tiny, chunk_seconds=0.3)
    left, right = speech(2.5, 16000, seed=1), speech(2.5, 16000, seed=2)
    whole = one_pass(np.stack([left, right]), 16000).waveform
    assert whole.shape == (2, 2.5 * 48000)
    np.testing.assert_allclose(chunked(np.stack([left, right]), 16000).waveform, whole, atol=1e-4)
    np.testing.assert_allclose(one_pass(right, 16000).waveform[0], whole[1], atol=1e-5)
    assert chunk_margin(TINY) % TINY.hop_length == 0


def test_rate_rules_name_the_problem(tiny):
    pipeline = BandwidthExtensionPipeline.from_checkpoint(tiny)
    wide = speech(0.5, 48000)
    with pytest.raises(InputError, match="already at 48000 Hz.*--input-sr 16000"):
        pipeline(wide, 48000, source="a.wav")
    assert pipeline(wide, 48000, input_rate=16000).waveform.shape == (1, 24000)
    with pytest.raises(InputError, match="at 8000 Hz.*model trained for 8000 Hz"):
        pipeline(speech(0.5, 8000), 8000, source="b.wav")
    with pytest.raises(InputError, match="--input-sr 8000 does not match"):
        pipeline(wide, 48000, input_rate=8000, source="c.wav")
    with pytest.raises(InputError, match="NaN"):
        pipeline(np.full(8000, np.nan, np.float32), 16000, source="d.wav")


def test_keep_low_band_keeps_the_input_spectrum_below_its_nyquist(tiny):
    from mis.transforms.audio import STFTConfig, stft

    samples = speech(1.0, 16000)
    kept = BandwidthExtensionPipeline.from_checkpoint(tiny, keep_low_band=True)(samples, 16000).waveform[0]
    plain = BandwidthExtensionPipeline.from_checkpoint(tiny)(samples, 16000).waveform[0]
    upsampled = resample(samples, 16000, 48000)
    config = STFTConfig(n_fft=1024, hop_length=256, win_length=1024)
    low = slice(5, 130)                                          # 0.2 - 6 kHz of 0 - 24 kHz
    spectra = [stft(torch.from_numpy(x)[None], config)[0, low, 4:-4].abs() for x in (kept, plain, upsampled)]
    assert float((spectra[0] - spectra[2]).abs().max()) < 0.05 * float(spectra[2].max())
    assert float((spectra[1] - spectra[2]).abs().max()) > 0.2 * float(spectra[2].max())   # untrained: different


def test_metrics_as_upstream_and_the_sinc_baseline():
    reference = speech(1.5, 48000)
    perfect = scores(reference, reference)
    assert perfect["lsd"] == 0 and perfect["snr"] > 100 and perfect["apd_ip"] == 0
    low, baseline = narrowband_pair(reference, 48000, 16000)
    assert len(low) == 24000 and baseline.shape == reference.shape
    sinc = scores(baseline, reference)
    assert sinc["lsd"] > 0.3 and sinc["snr"] > 5      # the low band is right, the high band is missing
    assert scores(np.zeros_like(reference) + 1e-6, reference)["lsd"] > sinc["lsd"]


def test_training_writes_a_loadable_checkpoint_with_gan_and_resumes(tmp_path):
    from mis.pipelines.bwe.train import BweTrainOptions, train_bwe

    clips = []
    for i in range(3):
        clips.append(tmp_path / f"clip{i}.wav")
        sf.write(clips[-1], speech(0.6, 48000, seed=i), 48000)
    options = BweTrainOptions(out=tmp_path / "run", network=TINY, steps=2, gan_start=1, batch_size=2,
                              segment=1600, val_files=1, validate_every=2, disc_channels=4, progress=False)
    result = train_bwe(clips, options)
    card = read_card(result["checkpoint"])
    assert card["preprocessing"] == {"input_sample_rate": 16000, "sample_rate": 48000}
    assert card["training"]["held_out_files"] == ["clip2.wav"] and card["metrics"]["sinc_val_lsd"] > 0
    pipeline = BandwidthExtensionPipeline.from_checkpoint(result["checkpoint"])
    assert np.isfinite(pipeline(speech(0.3, 16000), 16000).waveform).all()
    import dataclasses

    again = train_bwe(clips, dataclasses.replace(options, steps=3, resume=True))
    assert json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])["step"] == 3
    assert again["checkpoint"] == result["checkpoint"]


def test_upstream_state_dict_imports_by_name(tmp_path):
    model = APBWE(TINY)
    upstream = {"generator": {f"module.{k}": v for k, v in model.state_dict().items()}}
    torch.save(upstream, tmp_path / "g_8kto16k")
    result = runner.invoke(app, ["models", "import", str(tmp_path / "g_8kto16k"), "--task", "bwe", "-o",
                                 str(tmp_path / "ours.safetensors"), "--config", json.dumps(TINY.to_dict()),
                                 "--preprocessing", '{"input_sample_rate": 8000, "sample_rate": 16000}'])
    assert result.exit_code == 0, result.output
    imported = BandwidthExtensionPipeline.from_checkpoint(tmp_path / "ours.safetensors")
    assert (imported.input_rate, imported.sample_rate) == (8000, 16000)
    logamp, phase = torch.randn(1, TINY.freq_bins, 9), torch.zeros(1, TINY.freq_bins, 9)
    with torch.no_grad():
        torch.testing.assert_close(imported.model(logamp, phase), model.eval()(logamp, phase))


def write(path: Path, samples: np.ndarray, rate: int, subtype: str = "PCM_16") -> Path:
    sf.write(str(path), samples, rate, subtype=subtype)
    return path


def test_cli_extends_a_folder_keeps_the_sample_format_and_skips_bad_files(tiny, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    write(folder / "a_24bit.wav", speech(0.7, 16000), 16000, "PCM_24")
    write(folder / "b_stereo.flac", np.stack([speech(0.5, 16000, 1), speech(0.5, 16000, 2)], axis=1), 16000)
    write(folder / "c_eight_channels.wav", np.zeros((4000, 8), np.float32) + 0.1, 16000)
    write(folder / "d_silent.wav", np.zeros(8000, np.float32), 16000)
    write(folder / "e_wideband.wav", speech(0.5, 48000), 48000, "FLOAT")
    (folder / "f_not_audio.wav").write_text("hello")
    nan = write(folder / "g_nan.wav", speech(0.5, 16000), 16000, "FLOAT")
    data = bytearray(nan.read_bytes())
    data[-40:-36] = np.array([np.nan], np.float32).tobytes()
    nan.write_bytes(bytes(data))
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    out = tmp_path / "out"
    result = runner.invoke(app, ["--json", "bwe", str(folder), "-m", str(tiny), "-o", str(out)])
    assert result.exit_code == 1, result.output
    report = json.loads(result.stdout)
    status = {Path(r["source"]).name: r for r in report["items"]}
    assert status["a_24bit.wav"]["status"] == status["b_stereo.flac"]["status"] == "done"
    reasons = {name: status[name]["error"] or "" for name in status}
    assert "8 channels" in reasons["c_eight_channels.wav"] and "silent" in reasons["d_silent.wav"]
    assert "already at 48000 Hz" in reasons["e_wideband.wav"] and "NaN" in reasons["g_nan.wav"]
    assert "not a readable audio file" in reasons["f_not_audio.wav"]
    assert sorted(p.name for p in out.iterdir()) == ["a_24bit.wav", "b_stereo.wav"]
    assert sf.info(str(out / "a_24bit.wav")).subtype == "PCM_24" and sf.info(str(out / "a_24bit.wav")).samplerate == 48000
    assert sf.info(str(out / "b_stereo.wav")).channels == 2
    assert before == {p.name: p.read_bytes() for p in folder.iterdir()}


def test_cli_rate_options_and_evaluate(tiny, tmp_path):
    source = write(tmp_path / "wide.wav", speech(0.6, 48000), 48000, "FLOAT")
    result = runner.invoke(app, ["bwe", str(source), "-m", str(tiny), "--input-sr", "16000", "-o",
                                 str(tmp_path / "x.wav")])
    assert result.exit_code == 0, result.output
    assert sf.info(str(tmp_path / "x.wav")).subtype == "FLOAT"
    result = runner.invoke(app, ["bwe", str(source), "-m", str(tiny), "--target-sr", "16000", "-o",
                                 str(tmp_path / "y.wav")])
    assert result.exit_code == 2 and "--target-sr 16000" in result.output and not (tmp_path / "y.wav").exists()
    result = runner.invoke(app, ["--json", "evaluate", "bwe", str(source), "-m", str(tiny)])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["cases"][0]["sinc_lsd"] > 0 and set(report["mean"]) >= {"lsd", "sinc_lsd", "snr", "apd_iaf"}


def test_training_under_bf16_autocast_validates(tmp_path):
    """Validation runs inside the trainer's autocast: every array it hands to numpy must come back as float32."""
    from mis.pipelines.bwe.train import BweTrainOptions, train_bwe

    clips = []
    for i in range(2):
        clips.append(tmp_path / f"clip{i}.wav")
        sf.write(clips[-1], speech(0.5, 48000, seed=i), 48000)
    options = BweTrainOptions(out=tmp_path / "run", network=TINY, steps=2, gan_start=1, batch_size=1, segment=1600,
                              val_files=1, validate_every=2, disc_channels=4, progress=False, precision="bf16")
    assert read_card(train_bwe(clips, options)["checkpoint"])["metrics"]["val_lsd"] > 0


def test_audio_file_windows_read_forward_equal_the_whole_decode(tmp_path):
    """Streaming reads go forward through one open file, keeping the overlap; a window before it reopens the file."""
    from mis.io.audio import AudioFile

    path = tmp_path / "speech.mp3"
    sf.write(str(path), speech(6.0, 16000, seed=3), 16000, format="MP3")
    whole, _ = sf.read(str(path), dtype="float32")
    audio = AudioFile(path)
    for start, stop in [(0, 30000), (20000, 52000), (50000, 96000)]:   # overlapping, forward, as stream() reads
        np.testing.assert_allclose(audio.read(start, stop)[0], whole[start:stop], atol=1e-6)
    np.testing.assert_allclose(audio.read(1000, 2000)[0], whole[1000:2000], atol=1e-6)   # backwards: reopened
    audio.close()
