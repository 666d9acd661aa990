"""The one scoring rule for sea-ice maps (evaluation and training validation): a confusion count with ice as the
positive class, and F1, IoU, accuracy, precision and recall from it. numpy only (training needs no rasterio)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Confusion:
    tp: int = 0
    fp: int = 0
    fn: int = 0
    tn: int = 0

    def add(self, predicted: np.ndarray, truth: np.ndarray) -> None:
        self.tp += int(np.sum(predicted & truth))
        self.fp += int(np.sum(predicted & ~truth))
        self.fn += int(np.sum(~predicted & truth))
        self.tn += int(np.sum(~predicted & ~truth))

    def scores(self) -> dict[str, float | int]:
        total = self.tp + self.fp + self.fn + self.tn
        return {"f1": 2 * self.tp / max(2 * self.tp + self.fp + self.fn, 1),
                "iou": self.tp / max(self.tp + self.fp + self.fn, 1),
                "accuracy": (self.tp + self.tn) / max(total, 1),
                "precision": self.tp / max(self.tp + self.fp, 1), "recall": self.tp / max(self.tp + self.fn, 1),
                "pixels": total}
