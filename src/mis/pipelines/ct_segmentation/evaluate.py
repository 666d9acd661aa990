"""`mis evaluate segment`: Dice and HD95 per label between prediction and reference folders."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from mis.errors import InputError
from mis.io.files import resolve_inputs
from mis.io.nifti import read_nifti
from mis.pipelines.ct_segmentation.labels import apply_labels_map, class_names
from mis.pipelines.ct_segmentation.metrics import dice_hd95


def _case_name(path: Path) -> str:
    name = path.name
    for ending in (".nii.gz", ".nii"):
        if name.endswith(ending):
            name = name[: -len(ending)]
    for suffix in ("_seg", "_labels", "_label", "_gt"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    return name


def pair_cases(pred: list[str], ref: list[str]) -> tuple[list[tuple[Path, Path]], list[str]]:
    """(prediction, reference) pairs by case name, and the reference cases that have no prediction."""
    preds = {_case_name(p): p for p in resolve_inputs(pred, kinds=("nifti",))}
    refs = {_case_name(r): r for r in resolve_inputs(ref, kinds=("nifti",))}
    common = sorted(set(preds) & set(refs))
    if not common:
        raise InputError(", ".join(ref), f"no reference case matches a prediction "
                         f"(predictions: {', '.join(sorted(preds)[:5])}; references: {', '.join(sorted(refs)[:5])})")
    return [(preds[c], refs[c]) for c in common], [str(refs[c]) for c in sorted(set(refs) - set(preds))]


def names_from_sidecar(pred_path: Path) -> dict[int, str] | None:
    sidecar = pred_path.with_name(_strip(pred_path.name) + ".json")
    if sidecar.exists():
        labels = json.loads(sidecar.read_text()).get("labels")
        if labels:
            return {int(k): v for k, v in labels.items()}
    return None


def _strip(name: str) -> str:
    for ending in (".nii.gz", ".nii"):
        if name.endswith(ending):
            return name[: -len(ending)]
    return name


def evaluate_segmentations(pred: list[str], ref: list[str], labels_map: dict[str, list[int]] | None = None,
                           *, hd95: bool = True) -> dict:
    """Scores per case and their means. A reference without a prediction and a pair that cannot be scored
    (unreadable, other shape or grid) are listed under "errors" instead of silently leaving the mean."""
    cases, errors = [], []
    names: dict[int, str] | None = class_names(labels_map) if labels_map else None
    pairs, unpredicted = pair_cases(pred, ref)
    errors += [{"case": _case_name(Path(r)), "error": f"{r}: no prediction for this reference case"}
               for r in unpredicted]
    for pred_path, ref_path in pairs:
        try:
            cases.append(_score_case(pred_path, ref_path, labels_map, names, hd95))
        except InputError as exc:
            errors.append({"case": _case_name(ref_path), "error": str(exc)})
    return {"cases": cases, "mean": _means(cases), "errors": errors}


def _score_case(pred_path: Path, ref_path: Path, labels_map, names, hd95: bool) -> dict:
    p, p_meta = read_nifti(pred_path)
    r, r_meta = read_nifti(ref_path)
    if p.shape != r.shape:
        raise InputError(pred_path, f"shape {p.shape} differs from reference {ref_path} {r.shape}")
    if not np.allclose(p_meta.affine, r_meta.affine, atol=1e-3):
        raise InputError(pred_path, f"affine differs from reference {ref_path}")
    r_ids = apply_labels_map(np.rint(r).astype(np.int64), labels_map)
    p_ids = np.rint(p).astype(np.int64)
    case_names = names or names_from_sidecar(pred_path) or {
        int(i): f"label_{int(i)}" for i in sorted(set(np.unique(p_ids)) | set(np.unique(r_ids))) if i}
    scores = dice_hd95(p_ids, r_ids, sorted(case_names), p_meta.spacing, hd95=hd95)
    return {"case": _case_name(ref_path), "prediction": str(pred_path), "reference": str(ref_path),
            "labels": {case_names[k]: v for k, v in scores.items()}}


def _means(cases: list[dict]) -> dict:
    per_label: dict[str, dict[str, list[float]]] = {}
    for case in cases:
        for name, score in case["labels"].items():
            entry = per_label.setdefault(name, {"dice": [], "hd95_mm": []})
            entry["dice"].append(score["dice"])
            if score["hd95_mm"] is not None:
                entry["hd95_mm"].append(score["hd95_mm"])
    return {name: {"dice": float(np.mean(v["dice"])),
                   "hd95_mm": float(np.mean(v["hd95_mm"])) if v["hd95_mm"] else None,
                   "cases": len(v["dice"])} for name, v in per_label.items()}
