"""Bandwidth extension real-time factor at 48 kHz on the CPU: mis's pipeline vs the same network as a plain
fp32 eager loop, and peak memory for 10 s vs 10 min of input.

The baseline is upstream's inference (inference_48k.py) on the trained module as is: resample 16 -> 48 kHz,
STFT, `model(mag, pha)` under torch.no_grad() in fp32, ISTFT, in one pass (with our input preparation,
silence above the input band, so that both give the same audio). mis runs the pipeline as
`mis bwe` does: windowed resampling, chunks with context (flat memory), inference_mode, in fp32 (the CPU
default: same audio as the baseline to 1e-4, checked) and with `--precision bf16` (autocast; about twice as
fast on CPUs with native bf16), with the LSD between the bf16 and the fp32 output of the same input.

Memory: `mis bwe` on a 10 s and a 10 min file, each in a fresh process (peak RSS).

    python benchmarks/bwe_rtf.py [--seconds 10] [--minutes 10]
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from mis.checkpoints import build_card
from mis.models.apbwe import APBWE, apbwe_demo, apbwe_paper, count_parameters, input_band_bins
from mis.pipelines.bwe.evaluate import scores
from mis.pipelines.bwe.pipeline import BandwidthExtensionPipeline
from mis.pipelines.vocoder.synthetic import synthetic_speech
from mis.runtime.device import resolve_policy
from vocoder_rtf import timed   # median of runs after a warm-up, as every real-time table here
from mis.transforms.audio import resample

NETWORKS = (("AP-BWE demo", apbwe_demo()), ("AP-BWE paper", apbwe_paper()))
CARD = {"preprocessing": {"input_sample_rate": 16000, "sample_rate": 48000}}


def plain_loop(model: APBWE, samples: np.ndarray) -> np.ndarray:
    """Upstream's inference: the whole file, fp32, no_grad."""
    with torch.no_grad():
        wave = torch.from_numpy(resample(samples, 16000, 48000))[None]
        return model.extend(wave, input_band_bins(16000, 48000, model.config.n_fft))[0].numpy()


def pipelines(config) -> tuple[APBWE, BandwidthExtensionPipeline, BandwidthExtensionPipeline]:
    """The same seeded weights: a plain module, mis in fp32, mis in bf16."""
    torch.manual_seed(0)
    plain = APBWE(config).eval()
    card = {**build_card("apbwe", config.to_dict(), task="bwe", preprocessing=CARD["preprocessing"])}
    built = []
    for precision in ("fp32", "bf16"):
        model = APBWE(config)
        model.load_state_dict(plain.state_dict())
        built.append(BandwidthExtensionPipeline(model, card, resolve_policy("cpu", precision)))
    return plain, built[0], built[1]


def speed_table(seconds: float) -> None:
    samples = synthetic_speech(seconds, 16000, seed=3)
    print(f"AP-BWE 16 -> 48 kHz on {seconds:.0f} s of audio, CPU; x real time = audio seconds / wall seconds")
    print(f"{'network':>13} | {'params':>7} | {'threads':>7} | {'plain fp32 s':>12} | {'mis fp32 s':>10} | "
          f"{'mis bf16 s':>10} | {'speed-up fp32 / bf16':>20} | {'x real time fp32 / bf16':>23} | {'LSD bf16-fp32':>13}")
    for name, config in NETWORKS:
        plain, fp32, bf16 = pipelines(config)
        reference = plain_loop(plain, samples)
        ours = fp32(samples, 16000).waveform[0]
        assert np.abs(ours - reference).max() < 1e-4 or name == "AP-BWE paper" and np.abs(ours - reference).max() < 1e-3
        quality = scores(bf16(samples, 16000).waveform[0], ours)["lsd"]
        for threads in (1, 2):
            torch.set_num_threads(threads)
            base = timed(lambda: plain_loop(plain, samples), repeats=1 if "paper" in name else 3)
            mine32 = timed(lambda: fp32(samples, 16000), repeats=1 if "paper" in name else 3)
            mine = timed(lambda: bf16(samples, 16000), repeats=1 if "paper" in name else 3)
            speed = f"{base / mine32:.2f}x / {base / mine:.2f}x"
            real_time = f"{seconds / mine32:.1f}x / {seconds / mine:.1f}x"
            print(f"{name:>13} | {count_parameters(plain) / 1e6:6.2f}M | {threads:>7} | {base:12.3f} | {mine32:10.3f} | "
                  f"{mine:10.3f} | {speed:>20} | {real_time:>23} | {quality:13.4f}", flush=True)


MEMORY_SCRIPT = """
import resource, sys, torch
from mis.checkpoints import build_card, save_checkpoint
from mis.models.apbwe import APBWE, apbwe_demo
from mis.pipelines.bwe.pipeline import BandwidthExtensionPipeline
from mis.pipelines.bwe.run import bwe_files, plan
from mis.runtime.config import RuntimeConfig
torch.set_num_threads(2)
config = apbwe_demo()
save_checkpoint(sys.argv[2], APBWE(config), build_card("apbwe", config.to_dict(), task="bwe",
                preprocessing={"input_sample_rate": 16000, "sample_rate": 48000}))
pipeline = BandwidthExtensionPipeline.from_checkpoint(sys.argv[2], RuntimeConfig(device="cpu", quiet=True))
summary = bwe_files(pipeline, plan([sys.argv[1]], sys.argv[3]), RuntimeConfig(device="cpu", quiet=True))
assert summary.failed == 0
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""


def memory_table(minutes: float) -> None:
    print(f"\npeak RSS of `mis bwe` (demo network, 16 kHz WAV in, 48 kHz WAV out), a fresh process each")
    print(f"{'input':>8} | {'peak RSS MB':>11} | {'wall s':>6}")
    with tempfile.TemporaryDirectory() as folder:
        for seconds in (10.0, minutes * 60):
            source = Path(folder) / f"in_{seconds:.0f}.wav"
            piece = synthetic_speech(10.0, 16000, seed=4)
            with sf.SoundFile(str(source), "w", samplerate=16000, channels=1, subtype="PCM_16") as handle:
                for _ in range(int(seconds // 10)):
                    handle.write(piece)
            start = time.perf_counter()
            out = subprocess.run([sys.executable, "-c", MEMORY_SCRIPT, str(source), str(Path(folder) / "m.safetensors"),
                                  str(Path(folder) / f"out_{seconds:.0f}")], capture_output=True, text=True, check=True)
            print(f"{seconds:7.0f}s | {float(out.stdout.split()[-1]):11.0f} | {time.perf_counter() - start:6.1f}",
                  flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--minutes", type=float, default=10.0)
    args = parser.parse_args()
    speed_table(args.seconds)
    memory_table(args.minutes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
