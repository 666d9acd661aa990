"""Vocoder real-time factor on the CPU: mis's VocoderPipeline vs the same network as a plain fp32 eager loop.

The baseline is what a user gets from the trained module as is: `model(mel)` under torch.no_grad()
with weight norm still parametrized (recomputed every call), in one pass. mis folds weight norm into
the weights, runs under inference_mode and vocodes in chunks (flat memory). Both produce the same
audio (checked). Also reports peak RSS growth for 10 s and 60 s inputs (flat-memory check).

Second table, a corpus of short utterances (what `mis vocode mels/` gets from a TTS front end): the
plain loop vocodes one mel at a time; mis vocodes batches of 8 consecutive files in padded passes
with per-layer masking (`VocoderPipeline.batch`, as `mis --batch-size 8 vocode` does), same audio (checked).

    python benchmarks/vocoder_rtf.py [--seconds 10] [--utterances 16]
"""
from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time

import numpy as np
import torch

from mis.checkpoints import build_card
from mis.models.apnet import APNet, apnet_22k, apnet_demo_22k, count_parameters
from mis.pipelines.vocoder.mel import MEL_22K
from mis.pipelines.vocoder.pipeline import VocoderPipeline


def timed(function, repeats: int = 3) -> float:
    function()  # warm-up
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        runs.append(time.perf_counter() - start)
    return statistics.median(runs)


NETWORKS = (("APNet demo 22k", apnet_demo_22k()), ("APNet full 22k", apnet_22k()))


def plain_and_ours(config, card: dict) -> tuple[APNet, VocoderPipeline]:
    """The same seeded weights twice: as a user's plain module, and inside mis's pipeline."""
    torch.manual_seed(0)
    plain = APNet(config).eval()
    ours = APNet(config)
    ours.load_state_dict(plain.state_dict())
    return plain, VocoderPipeline(ours, card)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--utterances", type=int, default=16, help="corpus size for the batched table")
    args = parser.parse_args()
    frames = int(args.seconds * MEL_22K.sample_rate / MEL_22K.hop_length) + 1
    mel = np.random.default_rng(0).normal(-6, 2, (80, frames)).astype(np.float32)
    card = build_card("apnet", {}, task="vocoder", preprocessing={"mel": MEL_22K.to_dict()})
    torch.set_num_threads(2)
    pipeline = VocoderPipeline(APNet(apnet_demo_22k()), card)
    growth = []
    for seconds in (10, 60):
        n = int(seconds * MEL_22K.sample_rate / MEL_22K.hop_length) + 1
        long_mel = np.random.default_rng(1).normal(-6, 2, (80, n)).astype(np.float32)
        before = peak_rss_mb()
        for _ in pipeline.stream(long_mel):  # what `mis vocode` does: pieces go straight to the file
            pass
        growth.append(peak_rss_mb() - before)
    print(f"peak RSS growth while streaming (demo network): 10 s input {growth[0]:.0f} MB, 60 s input "
          f"{growth[1]:.0f} MB (flat: the 60 s run needs no more than the 10 s one)")
    print(f"{args.seconds:.0f} s of 22.05 kHz audio ({frames} frames); median of 3 runs after a warm-up")
    print(f"{'network':>18} | {'params':>7} | {'threads':>7} | {'plain eager s':>13} | {'mis s':>7} | "
          f"{'speed-up':>8} | {'mis x real time':>15}")
    for name, config in NETWORKS:
        plain, pipeline = plain_and_ours(config, card)
        x = torch.from_numpy(mel)[None]
        with torch.no_grad():
            same = np.abs(plain(x)[4][0].numpy() - pipeline(mel).waveform).max()
        assert same < 1e-4, same
        for threads in (1, 2):
            torch.set_num_threads(threads)

            def baseline():
                with torch.no_grad():
                    plain(x)

            base, mine = timed(baseline), timed(lambda: pipeline(mel))
            print(f"{name:>18} | {count_parameters(plain) / 1e6:6.2f}M | {threads:>7} | {base:13.3f} | {mine:7.3f} | "
                  f"{base / mine:7.2f}x | {args.seconds / mine:14.1f}x")
    refined_table(mel, args.seconds)
    corpus_table(card, args.utterances)
    return 0


def refined_table(mel: np.ndarray, seconds: float) -> None:
    """The shipped demo as `mis vocode` runs it by default (its card's phase refinement) vs the pure network."""
    from mis.registry import resolve_checkpoint
    from mis.runtime.config import RuntimeConfig

    runtime = RuntimeConfig(device="cpu", precision="fp32", quiet=True)
    default = VocoderPipeline.from_checkpoint(resolve_checkpoint("vocoder", None), runtime)
    if not default.phase_refine:
        return
    pure = VocoderPipeline.from_checkpoint(resolve_checkpoint("vocoder", None), runtime, phase_refine=0)
    print(f"\nthe shipped demo on {seconds:.0f} s, default (Griffin-Lim {default.phase_refine} from the network's "
          f"phase, the first {default.refine_prior} on the mel's pseudo-inverse amplitude) vs the pure network")
    print(f"{'threads':>7} | {'pure s':>7} | {'default s':>9} | {'pure x real time':>16} | {'default x real time':>19}")
    for threads in (1, 2):
        torch.set_num_threads(threads)
        plain, refined = timed(lambda: pure(mel)), timed(lambda: default(mel))
        print(f"{threads:>7} | {plain:7.3f} | {refined:9.3f} | {seconds / plain:15.1f}x | {seconds / refined:18.1f}x",
              flush=True)


def corpus_table(card: dict, count: int, batch: int = 8) -> None:
    rng = np.random.default_rng(2)
    seconds = rng.uniform(1.0, 5.0, count)  # sentence-length utterances
    mels = [rng.normal(-6, 2, (80, int(s * MEL_22K.sample_rate / MEL_22K.hop_length) + 1)).astype(np.float32)
            for s in seconds]
    total = float(sum((m.shape[1] - 1) * MEL_22K.hop_length for m in mels)) / MEL_22K.sample_rate
    print(f"\n{count} utterances of 1-5 s ({total:.0f} s of audio); mis vocodes batches of {batch} consecutive "
          f"files (--batch-size {batch})")
    print(f"{'network':>18} | {'threads':>7} | {'plain loop s':>12} | {'mis s':>7} | {'speed-up':>8} | "
          f"{'mis x real time':>15}")
    for name, config in NETWORKS:
        plain, pipeline = plain_and_ours(config, card)

        def plain_loop():
            with torch.no_grad():
                return [plain(torch.from_numpy(m)[None])[4][0].numpy() for m in mels]

        def batched():
            return [w for start in range(0, len(mels), batch) for w in pipeline.batch(mels[start:start + batch])]

        worst = max(np.abs(a - b).max() for a, b in zip(plain_loop(), batched()))
        assert worst < 1e-4, worst
        for threads in (1, 2):
            torch.set_num_threads(threads)
            base, mine = timed(plain_loop, repeats=2), timed(batched, repeats=2)
            print(f"{name:>18} | {threads:>7} | {base:12.2f} | {mine:7.2f} | {base / mine:7.2f}x | "
                  f"{total / mine:14.1f}x", flush=True)


if __name__ == "__main__":
    sys.exit(main())
