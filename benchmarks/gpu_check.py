"""The one prepared device check: CUDA, mixed precision and speed of every pipeline, through the CLI.

Run it on a lent GPU machine (README, "GPU check"): `bash benchmarks/gpu_check.sh` installs the few
packages that machine lacks from carried wheels and calls this script. Without CUDA it prints
"skipped" (so `make bench` stays quiet), unless `--cpu`, a smoke test with tiny sizes that checks the
script itself on this CPU.

Each step runs a `mis` command the way a user would (wall seconds include the process start) and records
its baseline in the same run (fp32 vs AMP; GPU vs the CPU of the same machine):

1. segment: the shipped PCT-Net on the sample phantom, --precision fp32 and bf16. AMP must not change
   the segmentation: mean Dice between the two label maps (goal >= 0.98).
2. pretrain ct (Volume Fusion): the paper-size PCT-Net (--full), fp32 vs bf16 seconds per step, finite loss.
3. train vocoder: the paper-size 22.05 kHz APNet with its discriminators on seeded synthetic speech,
   fp32 vs bf16 seconds per step (the frame-level and the GAN phase), finite losses.
4. vocode: the shipped demo APNet on 60 s of mel, in process, CUDA vs the machine's CPU (real-time factors).
5. train battery: the shipped recipe (5 members x 300 steps) on seeded synthetic cells, CUDA vs CPU.
6. train bwe: the paper-size AP-BWE (16 -> 48 kHz) with MPD + MRAD + MRPD on seeded synthetic speech, fp32 vs
   bf16 seconds per step, finite losses.
7. bwe: the shipped 16 -> 48 kHz demo on 60 s of audio, in process, CUDA (auto precision) vs the machine's CPU.
8. train interpolate / interpolate: GaraMoSt paper preset fp32 vs bf16 steps; the real DSA pair, N = 3.
9. train count / count: the paper M-SFANet fp32 vs bf16 seconds per step (batch 8, 256 px crops); M-SFANet vs
   M-SegNet (paper widths, seeded weights) images per second at 640 x 480, batch 1 and 8, CUDA vs the CPU.
10. train seaice / seaice: ViSual_IceD at upstream's widths fp32 vs bf16 seconds per step on synthetic scenes; the
   shipped demo on a 1024 px scene (MSI 4096 px) in process, CUDA vs the CPU (no rasterio there: arrays in memory).

The report is written after every check, so a run cut short by its time limit still says what it measured.

    python benchmarks/gpu_check.py [--out DIR] [--cpu]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_CT = ROOT / "sample_data" / "ct" / "phantom_abdomen.nii.gz"


def mis(*args: str, device: str, precision: str = "auto") -> tuple[float, str]:
    """Run `mis --device D --precision P ARGS` in a subprocess; (seconds, output). Fails loudly."""
    command = [sys.executable, "-c", "from mis.cli.main import app; app()", "--quiet", "--device", device,
               "--precision", precision, *args]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command[3:])} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return seconds, done.stdout + done.stderr


def seconds_per_step(run_dir: Path, key: str = "seconds") -> dict:
    """Seconds per step between consecutive logged rows of a run's metrics.jsonl, and the last row."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    rows = [r for r in rows if key in r and "step" in r]
    intervals = [[b["step"], round((b[key] - a[key]) / (b["step"] - a["step"]), 4)] for a, b in zip(rows, rows[1:])]
    finite = all(np.isfinite(v) for r in rows for v in r.values() if isinstance(v, float))
    return {"s_per_step_by_step": intervals, "last": rows[-1] if rows else None, "all_finite": bool(finite)}


def dice_agreement(a_path: Path, b_path: Path) -> float:
    import nibabel as nib

    a, b = (np.asarray(nib.load(str(p)).dataobj) for p in (a_path, b_path))
    scores = [2 * np.sum((a == k) & (b == k)) / (np.sum(a == k) + np.sum(b == k))
              for k in np.union1d(np.unique(a), np.unique(b)) if k != 0]
    return float(np.mean(scores)) if scores else 1.0


def check_segment(tmp: Path, device: str, smoke: bool) -> dict:
    out = {}
    for precision in ("fp32", "bf16"):
        target = tmp / f"seg_{precision}.nii.gz"
        mis("segment", str(SAMPLE_CT), "-o", str(target), device=device, precision=precision)  # warm-up
        seconds, _ = mis("segment", str(SAMPLE_CT), "-o", str(target), "--overwrite", device=device,
                         precision=precision)
        out[f"{precision}_s"] = round(seconds, 2)
    out["dice_fp32_vs_bf16"] = round(dice_agreement(tmp / "seg_fp32.nii.gz", tmp / "seg_bf16.nii.gz"), 4)
    out["amp_keeps_segmentation"] = out["dice_fp32_vs_bf16"] >= 0.98
    return out


def check_pretrain(tmp: Path, device: str, smoke: bool) -> dict:
    out = {}
    size = ["--phantoms", "2"] if smoke else ["--full", "--phantoms", "4"]
    steps = "4" if smoke else "40"
    for precision in ("fp32", "bf16"):
        run = tmp / f"vf_{precision}"
        seconds, _ = mis("pretrain", "ct", "-o", str(run), "--steps", steps, *size, device=device,
                         precision=precision)
        out[precision] = {"wall_s": round(seconds, 1), **seconds_per_step(run)}
    return out


def synthetic_speech_dir(tmp: Path, count: int, seconds: float) -> Path:
    import soundfile as sf

    from mis.pipelines.vocoder.synthetic import synthetic_speech

    folder = tmp / "speech"
    folder.mkdir(exist_ok=True)
    for i in range(count):
        sf.write(folder / f"clip{i:02d}.wav", synthetic_speech(seconds, 22050, seed=i), 22050)
    return folder


def check_train_vocoder(tmp: Path, device: str, smoke: bool) -> dict:
    clips = synthetic_speech_dir(tmp, 3 if smoke else 8, 2.0)
    preset = ["--preset", "demo22k", "--batch", "1", "--disc-channels", "4"] if smoke else \
        ["--preset", "22k", "--batch", "16"]
    steps, gan_start = ("6", "3") if smoke else ("120", "60")
    out = {}
    for precision in ("fp32", "bf16"):
        run = tmp / f"voc_{precision}"
        seconds, _ = mis("train", "vocoder", str(clips), "-o", str(run), "--steps", steps, "--gan-start",
                         gan_start, "--val-files", "1", *preset, device=device, precision=precision)
        out[precision] = {"wall_s": round(seconds, 1), **seconds_per_step(run)}
    return out


def check_vocode(tmp: Path, device: str, smoke: bool) -> dict:
    """In-process (no start-up in the numbers): median of 3 after a warm-up, the device vs this machine's CPU."""
    import torch

    from mis.pipelines.vocoder.pipeline import VocoderPipeline
    from mis.registry import resolve_checkpoint
    from mis.runtime.config import RuntimeConfig

    seconds_audio = 5.0 if smoke else 60.0
    frames = int(seconds_audio * 22050 / 256) + 1
    mel = np.clip(np.random.default_rng(0).normal(-6, 2, (80, frames)), -11.5, 2).astype(np.float32)
    out = {"audio_s": seconds_audio}
    for where in dict.fromkeys((device, "cpu")):
        pipeline = VocoderPipeline.from_checkpoint(resolve_checkpoint("vocoder", None), RuntimeConfig(device=where))
        pipeline(mel)
        runs = []
        for _ in range(3):
            if where == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            pipeline(mel)
            runs.append(time.perf_counter() - start)
        out[f"{where}_x_real_time"] = round(seconds_audio / float(np.median(runs)), 1)
    return out


def check_train_bwe(tmp: Path, device: str, smoke: bool) -> dict:
    import soundfile as sf

    from mis.pipelines.vocoder.synthetic import synthetic_speech

    clips = tmp / "speech48k"
    clips.mkdir(exist_ok=True)
    for i in range(3 if smoke else 8):
        sf.write(clips / f"clip{i:02d}.wav", synthetic_speech(2.0, 48000, seed=i), 48000)
    preset = ["--preset", "demo", "--batch", "2", "--disc-channels", "4"] if smoke else ["--preset", "paper"]
    steps, gan_start = ("6", "3") if smoke else ("120", "60")
    out = {}
    for precision in ("fp32", "bf16"):
        run = tmp / f"bwe_{precision}"
        seconds, _ = mis("train", "bwe", str(clips), "-o", str(run), "--steps", steps, "--gan-start", gan_start,
                         "--val-files", "1", *preset, device=device, precision=precision)
        out[precision] = {"wall_s": round(seconds, 1), **seconds_per_step(run)}
    return out


def check_bwe(tmp: Path, device: str, smoke: bool) -> dict:
    """In-process: median of 3 after a warm-up, the device vs this machine's CPU (each at --precision auto)."""
    import torch

    from mis.pipelines.bwe.pipeline import BandwidthExtensionPipeline
    from mis.pipelines.vocoder.synthetic import synthetic_speech
    from mis.registry import resolve_checkpoint
    from mis.runtime.config import RuntimeConfig

    seconds_audio = 5.0 if smoke else 60.0
    samples = synthetic_speech(seconds_audio, 16000, seed=5)
    out = {"audio_s": seconds_audio}
    for where in dict.fromkeys((device, "cpu")):
        pipeline = BandwidthExtensionPipeline.from_checkpoint(resolve_checkpoint("bwe", None),
                                                              RuntimeConfig(device=where))
        pipeline(samples, 16000)
        runs = []
        for _ in range(3):
            if where == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            pipeline(samples, 16000)
            runs.append(time.perf_counter() - start)
        out[f"{where}_x_real_time"] = round(seconds_audio / float(np.median(runs)), 1)
        out[f"{where}_precision"] = pipeline.policy.precision
    return out


def check_train_battery(tmp: Path, device: str, smoke: bool) -> dict:
    data = ROOT / "sample_data" / "battery" / "synthetic_cells.npz"
    size = ["--members", "1", "--steps", "5"] if smoke else []
    out = {}
    for where in dict.fromkeys((device, "cpu")):
        seconds, _ = mis("train", "battery", str(data), "--split", "all", "-o", str(tmp / f"bat_{where}"), *size,
                         device=where, precision="fp32")
        out[f"{where}_s"] = round(seconds, 1)
    return out


def check_train_interpolate(tmp: Path, device: str, smoke: bool) -> dict:
    """GaraMoSt training steps per second, fp32 vs bf16 (paper preset, batch 8 as upstream, 192 px crops: the synthetic pool is 224 px)."""
    size = ["--preset", "demo", "--crop", "64", "--batch", "2", "--synthetic", "2"] if smoke else \
        ["--preset", "paper", "--crop", "192", "--batch", "8", "--synthetic", "16"]
    steps = "4" if smoke else "60"
    out = {}
    for precision in ("fp32", "bf16"):
        run = tmp / f"interp_{precision}"
        seconds, _ = mis("train", "interpolate", "-o", str(run), "--steps", steps, "--validate-every", steps, *size,
                         device=device, precision=precision)
        out[precision] = {"wall_s": round(seconds, 1), **seconds_per_step(run)}
    return out


def check_interpolate(tmp: Path, device: str, smoke: bool) -> dict:
    """The real 1024 x 1024 DSA pair, N = 3, shipped demo and the paper config (seeded weights): seconds on the
    device vs this machine's CPU, encoder once per pair."""
    import torch

    from mis.checkpoints import build_card
    from mis.io.image import read_image, to_unit
    from mis.models.garamost import GaraMoSt, GaraMoStConfig
    from mis.pipelines.interpolate.pipeline import InterpolationPipeline, even_times
    from mis.registry import resolve_checkpoint
    from mis.runtime.config import RuntimeConfig
    from mis.runtime.device import resolve_policy

    pair = ROOT.parent / "shared" / "data" / "dsa"
    frames = [to_unit(*read_image(pair / name)) for name in ("DSA_a.png", "DSA_b.png")]
    if smoke:
        frames = [f[:256, :256] for f in frames]
    out = {}
    for where in dict.fromkeys((device, "cpu")):
        for network in ("demo", "paper"):
            if network == "demo":
                pipeline = InterpolationPipeline.from_checkpoint(resolve_checkpoint("interpolate", None),
                                                                 RuntimeConfig(device=where))
            else:
                torch.manual_seed(0)
                config = GaraMoStConfig.paper(3)
                card = build_card("garamost", config.to_dict(), task="interpolate", preprocessing={"bit_depth": 8})
                pipeline = InterpolationPipeline(GaraMoSt(config), card, resolve_policy(where, "auto"))
            pipeline(frames[0], frames[1], even_times(3))
            if where == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            pipeline(frames[0], frames[1], even_times(3))
            if where == "cuda":
                torch.cuda.synchronize()
            out[f"{where}_{network}_n3_s"] = round(time.perf_counter() - start, 3)
            out[f"{where}_{network}_precision"] = pipeline.policy.precision
    return out


def check_train_count(tmp: Path, device: str, smoke: bool) -> dict:
    """M-SFANet training steps, fp32 vs bf16 (paper widths from scratch, batch 8 as upstream, 256 px crops)."""
    size = ["--preset", "demo", "--crop", "64", "--batch", "2", "--synthetic", "2"] if smoke else \
        ["--preset", "paper", "--crop", "256", "--batch", "8", "--synthetic", "16"]
    steps = "4" if smoke else "60"
    out = {}
    for precision in ("fp32", "bf16"):
        run = tmp / f"count_{precision}"
        seconds, _ = mis("train", "count", "-o", str(run), "--steps", steps, "--validate-every", steps, *size,
                         device=device, precision=precision)
        out[precision] = {"wall_s": round(seconds, 1), **seconds_per_step(run)}
    return out


def _timed(call, where: str, repeats: int = 3) -> float:
    import torch

    call()
    if where == "cuda":
        torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        if where == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def check_count(tmp: Path, device: str, smoke: bool) -> dict:
    """Images per second at 640 x 480, paper-width M-SFANet vs M-SegNet (seeded weights), batch 1 and 8."""
    import torch

    from mis.checkpoints import build_card
    from mis.models.sfanet import SFANet, SFANetConfig
    from mis.pipelines.count.pipeline import CountPipeline, preprocessing_for
    from mis.pipelines.count.synthetic import make_crowd_scene
    from mis.runtime.device import resolve_policy

    h, w = (96, 128) if smoke else (480, 640)
    images = [make_crowd_scene(k, height=h, width=w).image for k in range(8)]
    out = {"size": f"{w}x{h}"}
    for where in dict.fromkeys((device, "cpu")):
        for variant in ("m-sfanet", "m-segnet"):
            torch.manual_seed(0)
            config = SFANetConfig.demo(variant) if smoke else SFANetConfig.paper(variant)
            card = build_card("sfanet", config.to_dict(), task="count", preprocessing=preprocessing_for(3))
            pipeline = CountPipeline(SFANet(config), card, resolve_policy(where, "auto"), batch_size=8)
            for batch in ((1, 8) if where == "cuda" else (1,)):
                seconds = _timed(lambda: pipeline.batch(images[:batch]), where, repeats=3 if where == "cuda" else 1)
                out[f"{where}_{variant}_batch{batch}_images_per_s"] = round(batch / seconds, 2)
            out[f"{where}_{variant}_precision"] = pipeline.policy.precision
    return out


def check_train_seaice(tmp: Path, device: str, smoke: bool) -> dict:
    """ViSual_IceD training steps at upstream's widths, fp32 vs bf16 (batch 8, 64 px coarse, MSI 4x finer)."""
    size = ["--scenes", "2", "--crop", "16", "--batch", "2"] if smoke else ["--preset", "paper", "--scenes", "8"]
    steps = "4" if smoke else "60"
    out = {}
    for precision in ("fp32", "bf16"):
        run = tmp / f"seaice_{precision}"
        seconds, _ = mis("train", "seaice", "-o", str(run), "--steps", steps, "--validate-every", steps, *size,
                         device=device, precision=precision)
        out[precision] = {"wall_s": round(seconds, 1), **seconds_per_step(run)}
    return out


def check_seaice(tmp: Path, device: str, smoke: bool) -> dict:
    """The shipped demo on a synthetic scene held in memory (1024 px coarse, MSI 4096 px): seconds, CUDA vs CPU."""
    from mis.pipelines.seaice.pipeline import SeaIcePipeline
    from mis.pipelines.seaice.synthetic import make_scene
    from mis.registry import resolve_checkpoint
    from mis.runtime.config import RuntimeConfig

    scene = make_scene(3, coarse_size=128 if smoke else 1024)
    out = {"coarse_px": scene.sar.shape[-1]}
    for where in dict.fromkeys((device, "cpu")):
        pipeline = SeaIcePipeline.from_checkpoint(resolve_checkpoint("seaice", None), RuntimeConfig(device=where))
        seconds = _timed(lambda: pipeline(scene.sar, scene.msi), where, repeats=1)
        out[f"{where}_s"] = round(seconds, 2)
        out[f"{where}_precision"] = pipeline.policy.precision
    return out


def environment() -> dict:
    import torch

    info = {"torch": torch.__version__, "cuda": torch.cuda.is_available(), "cpu_threads": torch.get_num_threads()}
    if torch.cuda.is_available():
        info.update(device=torch.cuda.get_device_name(), bf16=torch.cuda.is_bf16_supported(),
                    memory_gib=round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1))
    return info


# cheap and new first: a run cut short by its limit loses the long training checks last
CHECKS = {"segment": check_segment, "count": check_count, "train_count": check_train_count,
          "seaice": check_seaice, "train_seaice": check_train_seaice, "interpolate": check_interpolate,
          "train_interpolate": check_train_interpolate, "vocode": check_vocode, "bwe": check_bwe,
          "train_battery": check_train_battery, "pretrain_ct": check_pretrain, "train_vocoder": check_train_vocoder,
          "train_bwe": check_train_bwe}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", ".")))
    parser.add_argument("--cpu", action="store_true", help="smoke test of this script on the CPU, tiny sizes")
    parser.add_argument("--only", nargs="+", choices=list(CHECKS), default=list(CHECKS))
    args = parser.parse_args()
    env = environment()
    if not env["cuda"] and not args.cpu:
        print("skipped: no CUDA device (run on a lent GPU machine, or --cpu for a smoke test)")
        return 0
    device = "cpu" if args.cpu else "cuda"
    report: dict = {"environment": env, "device": device}
    print(json.dumps(env), flush=True)
    failed = False
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.only:
            start = time.perf_counter()
            try:
                report[name] = CHECKS[name](Path(tmp), device, args.cpu)
            except Exception as exc:  # noqa: BLE001 - record it and go on: one device call must tell everything
                report[name] = {"error": str(exc)[-3000:]}
                failed = True
            report[name]["check_s"] = round(time.perf_counter() - start, 1)
            print(name, json.dumps(report[name]), flush=True)
            args.out.mkdir(parents=True, exist_ok=True)
            (args.out / "gpu_check.json").write_text(json.dumps(report, indent=2))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
