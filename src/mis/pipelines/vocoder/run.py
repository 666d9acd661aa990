"""File-level glue for `mis mel` and `mis vocode`: jobs for the shared batch runner (bad items are reported
and skipped; outputs are written atomically; --skip-existing/--overwrite; torchrun sharding)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

import json

from mis.errors import InputError
from mis.io.atomic import atomic_output, atomic_write_json
from mis.io.audio import read_mel
from mis.io.files import source_target_pairs
from mis.pipelines.vocoder.mel import MelPipeline, convention_differences, mel_sidecar
from mis.pipelines.vocoder.pipeline import VocoderPipeline
from mis.runtime.batch import BatchJob, run_batch
from mis.runtime.config import RuntimeConfig
from mis.runtime.executor import RunSummary, WorkItem
from mis.transforms.audio import MelConfig, read_audio_at


def plan(inputs: list[str], output: Path, kind: str, suffix: str, stem_suffix: str) -> list[WorkItem]:
    pairs = source_target_pairs(inputs, output, kinds=(kind,), suffix=suffix, stem_suffix=stem_suffix)
    return [WorkItem(str(source), source, target, problem) for source, target, problem in pairs]


def source_note(meta, config: MelConfig) -> str:
    """What the user should know about a source that was converted: downmixed, or band-limited below fmax."""
    notes = []
    if meta.channels > 1:
        notes.append(f"{meta.channels} channels averaged to mono")
    nyquist, top = meta.sample_rate / 2, config.fmax or config.sample_rate / 2
    if nyquist < top:
        notes.append(f"source has no content above {nyquist:g} Hz: mel bands {nyquist:g}-{top:g} Hz are empty")
    return "; ".join(notes)


def mel_job(pipeline: MelPipeline) -> BatchJob:
    config = pipeline.config

    def read(item: WorkItem):
        samples, meta = read_audio_at(item.source, config.sample_rate)
        pipeline.check_inputs(samples, str(item.source))
        return samples, meta, str(item.source)

    def compute(batch):
        return [(pipeline(samples, source).mel, meta) for samples, meta, source in batch]

    def write(item: WorkItem, output):
        mel, meta = output
        # the convention travels with the mel (sidecar first, the .npy last: its presence means complete)
        atomic_write_json(mel_sidecar(item.target), {"mel": config.to_dict(), "source": item.key,
                                                     "frames": int(mel.shape[1])})
        with atomic_output(item.target) as tmp:
            with open(tmp, "wb") as handle:
                np.save(handle, mel.astype(np.float32))
        return {"frames": mel.shape[1], "resampled_from": meta.sample_rate if meta.sample_rate != config.sample_rate
                else "", "note": source_note(meta, config)}

    return BatchJob(read=read, compute=compute, write=write, description="mel")


def mel_files(pipeline: MelPipeline, items: list[WorkItem], runtime: RuntimeConfig | None = None, *,
              skip_existing: bool = False, overwrite: bool = False) -> RunSummary | None:
    return run_batch(items, lambda device: mel_job(pipeline), runtime or RuntimeConfig(quiet=True),
                     skip_existing=skip_existing, overwrite=overwrite)


def check_recorded_convention(mel_path: Path, pipeline: VocoderPipeline) -> None:
    """A mel made by `mis mel` carries its convention in a sidecar; one made in another convention (a 16 kHz
    preset for a 22.05 kHz model) is refused instead of vocoded into audio of the wrong length and pitch."""
    sidecar = mel_sidecar(mel_path)
    if not sidecar.is_file():
        return
    try:
        made = json.loads(sidecar.read_text(encoding="utf-8")).get("mel", {})
    except (OSError, ValueError, AttributeError):
        return   # not our sidecar: nothing recorded to compare
    differences = convention_differences(made if isinstance(made, dict) else {}, pipeline.mel_config)
    if differences:
        raise InputError(mel_path, f"made in another mel convention than this model's ({', '.join(differences)}, "
                         f"per {sidecar.name}); remake it with `mis mel --model` for this vocoder or vocode it "
                         "with a model of that convention")


def vocode_job(pipeline: VocoderPipeline) -> BatchJob:
    """With batch_size > 1, short mels (up to the chunk length) are vocoded together in padded batches;
    longer ones always stream chunk by chunk into their file in write() (flat memory). Batch size 1 (the
    default) gives each file the same bytes as vocoding it alone; a padded batch equals that to float
    rounding (the GEMM's rounding depends on the batch shape, so the 16-bit WAV may differ by 1 LSB)."""
    def read(item: WorkItem):
        check_recorded_convention(item.source, pipeline)
        return pipeline.check_inputs(read_mel(item.source), str(item.source))

    def is_short(mel: np.ndarray) -> bool:
        return mel.shape[1] <= pipeline.chunk_frames

    def compute(batch: list[np.ndarray]):
        short = [i for i, mel in enumerate(batch) if is_short(mel)]
        outputs: list = [(mel, None) for mel in batch]
        for i, wave in zip(short, pipeline.batch([batch[i] for i in short])):
            outputs[i] = (batch[i], wave)
        return outputs

    def write(item: WorkItem, output: tuple[np.ndarray, np.ndarray | None]):
        mel, wave = output
        pieces = pipeline.stream(mel) if wave is None else [wave]
        samples = clipped = 0
        with atomic_output(item.target) as tmp:
            with sf.SoundFile(str(tmp), "w", samplerate=pipeline.sample_rate, channels=1, subtype="PCM_16",
                              format="WAV") as handle:
                for piece in pieces:
                    if not np.isfinite(piece).all():  # the atomic write is abandoned: no output file
                        raise InputError(item.source, "vocoding produced non-finite samples (mel values out of range?)")
                    handle.write(np.clip(piece, -1.0, 1.0))
                    samples += len(piece)
                    clipped += int(np.count_nonzero(np.abs(piece) > 1.0))
        # Clipped samples say the mel is louder than the model's training range (or not speech).
        return {"seconds_audio": round(samples / pipeline.sample_rate, 2), "frames": mel.shape[1],
                "clipped_samples": clipped}

    return BatchJob(read=read, compute=compute, write=write, batch_size=pipeline.batch_size,
                    batchable=lambda first, other: is_short(first) and is_short(other), description="vocode")


def vocode_files(pipeline: VocoderPipeline, items: list[WorkItem], runtime: RuntimeConfig | None = None, *,
                 skip_existing: bool = False, overwrite: bool = False) -> RunSummary | None:
    return run_batch(items, lambda device: vocode_job(pipeline.on_device(device) if device else pipeline),
                     runtime or RuntimeConfig(quiet=True), skip_existing=skip_existing, overwrite=overwrite)
