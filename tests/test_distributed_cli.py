"""Every batch command under torchrun (2 CPU processes, gloo): each input is handled by exactly one rank,
each output is written once, and rank 0 prints the one combined summary."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from contract_cases import battery, ct_segmentation, vocoder

HERE = Path(__file__).resolve().parent
SRC = str(HERE.parent / "src")
SAMPLE = HERE.parent / "sample_data"


def torchrun(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1", "MIS_QUIET": "1"}
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone",
               "-m", "mis", "--json", *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)


def one_summary(done: subprocess.CompletedProcess) -> dict:
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    document = json.loads(done.stdout)   # exactly one JSON document: rank 1 printed nothing
    return document


pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed unavailable")]


def test_vocode_a_folder_under_torchrun(tmp_path):
    checkpoint = vocoder.make_checkpoint(tmp_path)
    mels = tmp_path / "mels"
    mels.mkdir()
    for i, mel in enumerate(vocoder.inputs(5)):
        np.save(mels / f"m{i}.npy", mel)
    report = one_summary(torchrun("vocode", str(mels), "--model", str(checkpoint), "-o", str(tmp_path / "out")))
    assert [Path(item["source"]).name for item in report["items"]] == [f"m{i}.npy" for i in range(5)]
    assert report["done"] == 5 and report["failed"] == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [f"m{i}.wav" for i in range(5)]


def test_battery_predict_under_torchrun(tmp_path):
    from mis.io.battery import read_cells
    from mis.pipelines.battery.synthetic import as_npz_arrays, synthetic_cell, write_arbin_csv

    checkpoint = battery.make_checkpoint(tmp_path)
    cells = tmp_path / "cells"
    cells.mkdir()
    for seed in range(3):
        write_arbin_csv(synthetic_cell(seed, n_cycles=25, name=f"arbin{seed}"), cells / f"arbin{seed}.csv",
                        points=120)
    np.savez(cells / "pack.npz", **as_npz_arrays([synthetic_cell(10 + i, 30, name=f"cell{i}") for i in range(2)]))
    expected = sorted(c.name for f in sorted(cells.iterdir()) for c in read_cells(f))
    done = torchrun("battery", "predict", str(cells), "--model", str(checkpoint), "--csv",
                    str(tmp_path / "lives.csv"), "--plot", str(tmp_path / "plots"))
    report = one_summary(done)
    assert sorted(row["cell"] for row in report["cells"]) == expected and not any(r["error"] for r in report["cells"])
    assert len((tmp_path / "lives.csv").read_text().splitlines()) == len(expected) + 1
    assert sorted(p.stem for p in (tmp_path / "plots").glob("*.png")) == expected


def test_segment_under_torchrun(tmp_path):
    checkpoint = ct_segmentation.make_checkpoint(tmp_path)
    scans = tmp_path / "scans"
    scans.mkdir()
    import nibabel as nib

    for i, (image, meta) in enumerate(ct_segmentation.inputs(3)):
        nib.save(nib.Nifti1Image(image.astype(np.int16), meta.affine), scans / f"case{i}.nii.gz")
    report = one_summary(torchrun("segment", str(scans), "--model", str(checkpoint), "-o", str(tmp_path / "out")))
    assert report["done"] == 3 and [Path(i["source"]).name for i in report["items"]] == [
        f"case{i}.nii.gz" for i in range(3)]
    assert sorted(p.name for p in (tmp_path / "out").glob("*_seg.nii.gz")) == [f"case{i}_seg.nii.gz" for i in range(3)]
