"""The sea-ice ablation of issue 17: the dual-encoder ViSual_IceD against one U-Net on stacked inputs, SAR only and
MSI only, each trained with the same budget and seeds on synthetic paired scenes (clouds over the MSI, wind over the
SAR) and scored on the same 24 fresh scenes no arm has seen. The stacked-input U-Net is the named baseline.

Arms can be run separately (each is independent and deterministic) and their rows merged into one table:

    python benchmarks/seaice_ablation.py --steps 1000 [--modes dual stacked sar msi] [--json rows.json] [--merge a.json b.json]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch


def table(rows: list[dict]) -> str:
    order = {m: k for k, m in enumerate(("dual", "stacked", "sar", "msi"))}
    rows = sorted(rows, key=lambda r: order.get(r["mode"], 9))
    baseline = next((r for r in rows if r["mode"] == "stacked"), None)
    lines = ["| network | parameters | F1 | IoU | accuracy | F1 - stacked (points) | training s |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        delta = f"{100 * (r['f1'] - baseline['f1']):+.2f}" if baseline else "n/a"
        lines.append(f"| {r['mode']} | {r['parameters']:,} | {r['f1']:.4f} | {r['iou']:.4f} | {r['accuracy']:.4f} "
                     f"| {delta} | {r['seconds']:.0f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--modes", nargs="+", default=["dual", "stacked", "sar", "msi"],
                        choices=["dual", "stacked", "sar", "msi"])
    parser.add_argument("--test-scenes", type=int, default=24)
    parser.add_argument("--out", type=Path, default=Path("runs/seaice_ablation"))
    parser.add_argument("--json", type=Path, help="write the rows measured here")
    parser.add_argument("--merge", type=Path, nargs="*", default=[], help="rows of earlier runs to add to the table")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from mis.pipelines.seaice.train import ablation

    rows = ablation(args.out, steps=args.steps, test_scenes=args.test_scenes, modes=tuple(args.modes),
                    log=lambda line: print(line, file=sys.stderr, flush=True)) if args.modes else []
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    for path in args.merge:
        rows += [r for r in json.loads(path.read_text()) if r["mode"] not in {x["mode"] for x in rows}]
    print(f"{args.steps} steps, same seeds, scored on {args.test_scenes} fresh synthetic scenes (baseline: stacked)")
    print(table(rows))


if __name__ == "__main__":
    main()
