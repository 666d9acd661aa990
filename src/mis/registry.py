"""The model registry: data only, importable without torch.

It drives `mis models list`, the CLI's default checkpoints and the rebuilding of a network from a
checkpoint card. Unknown names raise an error that lists the valid ones.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mis.errors import UsageError

WEIGHTS_DIR = Path(__file__).parent / "weights"


@dataclass(frozen=True)
class ModelFamily:
    module: str        # python module holding the network family
    network: str       # nn.Module class, built as Network(Config.from_dict(card["config"]))
    config: str        # dataclass config class


@dataclass(frozen=True)
class TaskEntry:
    task: str
    command: str
    pipeline: str      # "module:Class" of the pipeline
    family: str        # key in MODEL_FAMILIES
    default_checkpoint: str  # file name in mis/weights
    fast_checkpoint: str     # the CPU-friendly checkpoint used by --fast
    field: str
    description: str


MODEL_FAMILIES: dict[str, ModelFamily] = {
    "pctnet": ModelFamily("mis.models.pctnet", "PCTNet", "PCTNetConfig"),
    "fpnn": ModelFamily("mis.models.fpnn", "FPNNEnsemble", "FPNNConfig"),
    "apnet": ModelFamily("mis.models.apnet", "APNet", "APNetConfig"),
}

TASKS: dict[str, TaskEntry] = {
    "ct_segmentation": TaskEntry(
        task="ct_segmentation",
        command="segment",
        pipeline="mis.pipelines.ct_segmentation.pipeline:CTSegmentationPipeline",
        family="pctnet",
        default_checkpoint="ct_pctnet_demo.safetensors",
        # Only the fast configuration can be trained on a CPU here, so it is both the default and
        # the --fast model until a full-size checkpoint is imported (`mis models import`).
        fast_checkpoint="ct_pctnet_demo.safetensors",
        field="Medical",
        description="3D CT organ segmentation with PCT-Net (MIS-FM)",
    ),
    "battery_life": TaskEntry(
        task="battery_life",
        command="battery predict",
        pipeline="mis.pipelines.battery.pipeline:BatteryLifePipeline",
        family="fpnn",
        default_checkpoint="battery_fpnn_n100.safetensors",
        fast_checkpoint="battery_fpnn_n40.safetensors",   # fewer cycles: an earlier, rougher answer
        field="Tabular",
        description="Early prediction of battery cycle life with FPNN (first N cycles)",
    ),
    "vocoder": TaskEntry(
        task="vocoder",
        command="vocode",
        pipeline="mis.pipelines.vocoder.pipeline:VocoderPipeline",
        family="apnet",
        default_checkpoint="vocoder_apnet_demo_22k.safetensors",
        fast_checkpoint="vocoder_apnet_demo_22k.safetensors",
        field="Audio",
        description="APNet neural vocoder: log-mel -> amplitude + phase spectra -> waveform",
    ),
}


def task_entry(task: str) -> TaskEntry:
    if task not in TASKS:
        raise UsageError(f"unknown task {task!r}; valid tasks: {', '.join(sorted(TASKS))}")
    return TASKS[task]


def model_family(name: str) -> ModelFamily:
    if name not in MODEL_FAMILIES:
        raise UsageError(f"unknown model family {name!r}; valid families: {', '.join(sorted(MODEL_FAMILIES))}")
    return MODEL_FAMILIES[name]


def resolve_checkpoint(task: str, model: str | None) -> Path:
    """`--model` may be a path, a file name in the shipped weights folder, or empty (the task default)."""
    entry = task_entry(task)
    if not model:
        return WEIGHTS_DIR / entry.default_checkpoint
    path = Path(model)
    if path.exists():
        return path
    shipped = WEIGHTS_DIR / model
    if shipped.exists():
        return shipped
    shipped = WEIGHTS_DIR / f"{model}.safetensors"
    if shipped.exists():
        return shipped
    names = sorted(p.name for p in WEIGHTS_DIR.glob("*.safetensors"))
    raise UsageError(f"model {model!r} is neither a file nor a shipped checkpoint; shipped: {', '.join(names) or 'none'}")
