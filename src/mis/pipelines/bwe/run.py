"""File-level glue for `mis bwe`: a job for the shared batch runner (bad items are reported and skipped; each
output is streamed into a temporary file and renamed when complete; --skip-existing/--overwrite; torchrun)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

from mis.errors import InputError
from mis.io.atomic import atomic_output
from mis.io.audio import AudioFile
from mis.io.files import source_target_pairs
from mis.pipelines.bwe.pipeline import BandwidthExtensionPipeline
from mis.runtime.batch import BatchJob, run_batch
from mis.runtime.config import RuntimeConfig
from mis.runtime.executor import RunSummary, WorkItem

# WAV subtypes kept from the input; anything else (MP3, OGG, 8-bit, A-law ...) becomes 16-bit PCM
KEPT_SUBTYPES = ("PCM_16", "PCM_24", "PCM_32", "FLOAT", "DOUBLE")


def plan(inputs: list[str], output: Path) -> list[WorkItem]:
    pairs = source_target_pairs(inputs, output, kinds=("audio",), suffix=".wav", stem_suffix="")
    return [WorkItem(str(source), source, target, problem) for source, target, problem in pairs]


def output_subtype(subtype: str) -> str:
    return subtype if subtype in KEPT_SUBTYPES else "PCM_16"


def bwe_job(pipeline: BandwidthExtensionPipeline, input_rate: int | None = None) -> BatchJob:
    """Reading opens and checks the file's header (readable, rate, channels) without decoding its samples;
    writing streams the output chunk by chunk, so memory stays flat however long the recording, and decodes the
    file once. NaN samples or a silent file abandon the output (written to a temporary file), so no file is left."""
    def read(item: WorkItem):
        audio = AudioFile(item.source)
        return audio, pipeline.target_source(audio, audio.sample_rate, input_rate, str(item.source))

    def compute(batch):
        return batch   # the network runs while writing, chunk by chunk

    def write(item: WorkItem, output) -> dict:
        audio, source = output
        try:
            return write_stream(item, audio, source, output_subtype(audio.meta.subtype))
        finally:
            audio.close()

    def write_stream(item: WorkItem, audio: AudioFile, source, subtype: str) -> dict:
        clipped = samples = 0
        with atomic_output(item.target) as tmp:
            with sf.SoundFile(str(tmp), "w", samplerate=pipeline.sample_rate, channels=audio.channels,
                              subtype=subtype, format="WAV") as handle:
                for piece in pipeline.stream(source):
                    if not np.isfinite(piece).all():   # the atomic write is abandoned: no output file
                        raise InputError(item.source, "bandwidth extension produced non-finite samples")
                    clipped += int(np.count_nonzero(np.abs(piece) > 1.0))
                    handle.write(np.clip(piece, -1.0, 1.0).T if subtype.startswith("PCM") else piece.T)
                    samples += piece.shape[1]
                if audio.peak == 0.0:
                    raise InputError(item.source, "audio is silent (all samples are zero): nothing to extend")
        return {"seconds_audio": round(samples / pipeline.sample_rate, 2), "from_hz": audio.sample_rate,
                "channels": audio.channels, "subtype": subtype, "clipped_samples": clipped}

    return BatchJob(read=read, compute=compute, write=write, description="bwe")


def bwe_files(pipeline: BandwidthExtensionPipeline, items: list[WorkItem], runtime: RuntimeConfig | None = None, *,
              input_rate: int | None = None, skip_existing: bool = False, overwrite: bool = False) -> RunSummary | None:
    return run_batch(items, lambda device: bwe_job(pipeline.on_device(device) if device else pipeline, input_rate),
                     runtime or RuntimeConfig(quiet=True), skip_existing=skip_existing, overwrite=overwrite)
