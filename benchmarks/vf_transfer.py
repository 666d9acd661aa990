"""Does Volume Fusion pretraining help fine-tuning with few labels? (MIS-FM's claim, tested here.)

1. Pretrain PCT-Net with VF on unlabeled data: synthetic phantoms (labels never read) plus the real
   CTs in ../shared/data/ct (when present).
2. Fine-tune with 1, 2 and 4 labelled phantoms, from the pretrained weights and from scratch, with
   the same budget (steps, batch, LR, data, seed); several seeds.
3. Dice over the six organs on 10 fresh phantoms (seeds never used above), at the input resolution.

The CPU run uses a small PCT-Net (32^3 windows at 8 mm) so it fits in about 30 minutes on 2 cores;
`--full` is the GPU-sized run (the fast 32x64x64 network at 4 mm, more steps).
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from mis.pipelines.ct_segmentation.metrics import dice_hd95
from mis.pipelines.ct_segmentation.phantom import PHANTOM_LABELS, make_phantom
from mis.pipelines.ct_segmentation.pipeline import CTSegmentationPipeline
from mis.pipelines.ct_segmentation.pretrain import PretrainOptions, pretrain_ct
from mis.pipelines.ct_segmentation.train import SegTrainOptions, train_segmentation
from mis.runtime.config import RuntimeConfig

ROOT = Path(__file__).resolve().parents[1]
REAL_CT = ROOT.parent / "shared" / "data" / "ct"
EVAL_SEED = 95_000

SETTINGS = {
    "cpu": dict(network={"input_size": [32, 32, 32]}, spacing=8.0, pretrain_steps=400, pretrain_phantoms=24,
                finetune_steps=150, batch=2),
    "full": dict(network=None, spacing=4.0, pretrain_steps=4000, pretrain_phantoms=100, finetune_steps=1500,
                 batch=2),
}


def real_cts() -> list[str]:
    names = ["totalsegmentator/example_ct.nii.gz", "niivue-images/CT_AVM.nii.gz", "niivue-images/CT_pitch.nii.gz"]
    return [str(REAL_CT / n) for n in names if (REAL_CT / n).exists()]


def mean_dice(checkpoint: Path, phantoms) -> float:
    pipeline = CTSegmentationPipeline.from_checkpoint(checkpoint, RuntimeConfig(device="cpu", precision="fp32"),
                                                      overlap=0.25)
    scores = []
    for phantom in phantoms:
        meta = phantom.volume_meta()
        labels = pipeline(phantom.image, meta).labels
        per_organ = dice_hd95(labels, phantom.labels, sorted(PHANTOM_LABELS), meta.spacing, hd95=False)
        scores.append(np.mean([s["dice"] for s in per_organ.values()]))
    return float(np.mean(scores))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--full", action="store_true", help="GPU-sized run")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--labelled", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--eval-phantoms", type=int, default=10)
    parser.add_argument("--out", type=Path, default=None, help="keep runs here (default: a temporary folder)")
    args = parser.parse_args()
    setting = SETTINGS["full" if args.full else "cpu"]
    quiet = lambda *_: None  # noqa: E731
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        runs = args.out or Path(tmp)
        spacing = (setting["spacing"],) * 3
        pre = pretrain_ct(PretrainOptions(out=runs / "pretrain", inputs=real_cts(),
                                          phantoms=setting["pretrain_phantoms"], steps=setting["pretrain_steps"],
                                          batch_size=setting["batch"], network=setting["network"], spacing=spacing,
                                          device="cpu", progress=False, checkpoint_every=0,
                                          validate_every=setting["pretrain_steps"]), log=quiet)
        pretrain_seconds = time.perf_counter() - start
        print(f"pretext Dice {pre.get('pretext_dice', float('nan')):.3f} after {setting['pretrain_steps']} steps "
              f"({pretrain_seconds / 60:.1f} min)", flush=True)
        evaluation = [make_phantom(EVAL_SEED + i) for i in range(args.eval_phantoms)]
        table: dict[int, dict[str, list[float]]] = {}
        for labelled in args.labelled:
            table[labelled] = {"scratch": [], "vf": []}
            for seed in range(args.seeds):
                for init_name, init in (("scratch", None), ("vf", Path(pre["checkpoint"]))):
                    out = runs / f"n{labelled}_s{seed}_{init_name}"
                    train_segmentation(SegTrainOptions(
                        out=out, phantoms=labelled, phantom_seed=3000 + 100 * seed, val_phantoms=0,
                        steps=setting["finetune_steps"], batch_size=setting["batch"], network=setting["network"],
                        spacing=spacing, init=init, device="cpu", seed=seed, checkpoint_every=0,
                        progress=False), log=quiet)
                    table[labelled][init_name].append(mean_dice(out / "model.safetensors", evaluation))
                    print(f"labelled {labelled} seed {seed} {init_name}: mean Dice {table[labelled][init_name][-1]:.3f} "
                          f"({(time.perf_counter() - start) / 60:.1f} min)", flush=True)
    minutes = (time.perf_counter() - start) / 60
    print(f"Volume Fusion transfer ({'full' if args.full else 'CPU'} setting): pretext Dice "
          f"{pre.get('pretext_dice', float('nan')):.3f} after {setting['pretrain_steps']} steps "
          f"({pretrain_seconds / 60:.1f} min, {len(real_cts())} real CT + {setting['pretrain_phantoms']} phantoms); "
          f"fine-tuning {setting['finetune_steps']} steps; mean Dice over 6 organs on {args.eval_phantoms} fresh "
          f"phantoms; {args.seeds} seeds")
    print(f"{'labelled':>8s} {'scratch':>16s} {'VF-pretrained':>16s} {'delta (points)':>15s}")
    for labelled, row in table.items():
        s, v = np.array(row["scratch"]), np.array(row["vf"])
        print(f"{labelled:8d} {s.mean():8.3f} ± {s.std():.3f} {v.mean():8.3f} ± {v.std():.3f} "
              f"{100 * (v.mean() - s.mean()):+15.1f}")
    gain = np.mean([100 * (np.mean(table[n]["vf"]) - np.mean(table[n]["scratch"])) for n in table if n <= 2])
    print(f"goal: VF beats scratch by >= 2 Dice points with 1-2 labelled volumes: "
          f"{'met' if gain >= 2 else 'NOT met'} ({gain:+.1f}); total {minutes:.1f} min")
    print(json.dumps({str(k): v for k, v in table.items()}))


if __name__ == "__main__":
    main()
