"""One small training loop shared by every task (see `trainer.py`), with its configuration (`config.py`),
data helpers (`data.py`) and run records (`records.py`)."""
from mis.runtime.training.config import (BEST, KEEP, LAST, METRICS, RunOptions, TrainConfig, build_optimizer,
                                         resume_settings)
from mis.runtime.training.data import StepSeededBatches, hold_out_last, to_device
from mis.runtime.training.records import atomic_torch_save
from mis.runtime.training.trainer import Trainer

__all__ = ["BEST", "KEEP", "LAST", "METRICS", "RunOptions", "StepSeededBatches", "TrainConfig", "Trainer",
           "atomic_torch_save", "build_optimizer", "hold_out_last", "resume_settings", "to_device"]
