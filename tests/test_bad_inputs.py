"""The bad-input corpus (tests/bad_inputs.py) through the real CLI, one case at a time next to a good input:
the exit code, one line on stderr naming the file and its problem, no traceback, no output for the bad item,
the good item done, every input unchanged."""
from __future__ import annotations

import hashlib
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from bad_inputs import (CASES, N_CYCLES, arbin_cell, ct_volume, frame_folder, frame_stack, mel_array, nifti,
                        crowd_image, seaice_scene, speech)
from contract_cases import battery, bwe, count, ct_segmentation, interpolate, seaice, vocoder

runner = CliRunner()
COMMANDS = {"segment": ["segment"], "vocode": ["vocode"], "mel": ["mel"], "bwe": ["bwe"],
            "interpolate": ["interpolate"], "seaice": ["seaice"], "count": ["count"],
            "battery": ["battery", "predict"]}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """Tiny seeded checkpoints per command, also where the corpus' tampered copies start from."""
    folder = tmp_path_factory.mktemp("corpus_checkpoints")
    made = {"segment": ct_segmentation.make_checkpoint(folder), "vocode": vocoder.make_checkpoint(folder)}
    made["mel"] = made["vocode"]
    made["battery"] = battery.make_checkpoint(folder)
    made["bwe"] = bwe.make_checkpoint(folder)
    made["interpolate"] = interpolate.make_checkpoint(folder)
    made["seaice"] = seaice.make_checkpoint(folder)
    made["count"] = count.make_checkpoint(folder)
    for command in ("segment", "vocode", "battery"):
        shutil.copy(made[command], folder / f"{command}.safetensors")
    os.environ["MIS_CORPUS_CHECKPOINTS"] = str(folder)
    assert battery.N_CYCLES == N_CYCLES
    return made


def good_input(command: str, folder: Path) -> Path:
    """A valid input for `command`, named so that no bad case's name contains it."""
    import soundfile as sf

    if command == "segment":
        return nifti(folder / "goodscan.nii.gz", ct_volume((40, 36, 30)) - 600)
    if command == "vocode":
        path = folder / "goodmel.npy"
        np.save(path, mel_array(80, 30))
        return path
    if command == "mel":
        path = folder / "goodspeech.wav"
        sf.write(str(path), speech(), 22050, subtype="PCM_16")
        return path
    if command == "bwe":
        path = folder / "goodphone.wav"
        sf.write(str(path), speech(0.5, 16000), 16000, subtype="PCM_16")
        return path
    if command == "interpolate":
        return frame_folder(folder / "goodseq", frame_stack(3, seed=99))
    if command == "count":
        return crowd_image(folder / "goodcrowd.png", seed=99)
    if command == "seaice":      # goodsar.tif with its partner goodsar_msi.tif
        files = seaice_scene(folder / "goodscene", seed=99)
        files["msi"].rename(folder / "goodsar_msi.tif")
        return files["sar"].rename(folder / "goodsar.tif")
    return arbin_cell(folder / "goodcell.csv", seed=3, cycles=N_CYCLES + 5)


def snapshot(folder: Path) -> dict[str, str]:
    """Every entry below `folder` (links as links): what must not change."""
    state = {}
    for root, dirs, files in os.walk(folder, followlinks=False):
        for name in dirs + files:
            path = Path(root) / name
            if path.is_symlink():
                state[str(path)] = "link->" + os.readlink(path)
            elif path.is_file():
                state[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
            elif not path.is_dir():
                state[str(path)] = "special"
    return state


def command_line(case, good: Path, bad: Path, out: Path, checkpoints: dict) -> list[str]:
    kind, _, command = case.command.partition(":")
    if kind == "model":
        return [*COMMANDS[command], str(good), "--model", str(bad), *output_args(command, out)]
    if kind == "output":
        return [*COMMANDS[command], str(good), "--model", str(checkpoints[command]), *output_args(command, bad)]
    if kind == "seaice":
        return ["seaice", "--pairs", str(seaice_pairs(case, good, bad, out.parent)), "--model",
                str(checkpoints["seaice"]), "-o", str(out)]
    return [*COMMANDS[kind], str(good), str(bad), "--model", str(checkpoints[kind]), *output_args(kind, out)]


def seaice_pairs(case, good: Path, bad: Path, folder: Path) -> Path:
    """The good pair and the bad one, as a CSV outside the inputs (which must stay as they were)."""
    good_msi = good.with_name(good.stem + "_msi.tif")
    if case.name.startswith("msi_"):
        partner = folder / "partners" / f"{bad.stem}_sar.tif"        # a copy of the good SAR for the bad MSI
        partner.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(good, partner)
        bad_pair = (partner, bad)
    else:
        bad_pair = (bad, good_msi)
    pairs = folder / "pairs.csv"
    pairs.write_text("sar,msi\n" + "\n".join(f"{s},{m}" for s, m in [(good, good_msi), bad_pair]) + "\n")
    return pairs


def output_args(command: str, out: Path) -> list[str]:
    return ["--csv", str(out / "lives.csv")] if command == "battery" else ["-o", str(out)]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input(case, checkpoints, tmp_path):
    inputs, out = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    command = case.command.partition(":")[2] or case.command
    good = good_input(command, inputs)
    bad = case.make(inputs)
    before = snapshot(inputs)
    result = runner.invoke(__import__("mis.cli.main", fromlist=["app"]).app,
                           command_line(case, good, bad, out, checkpoints))
    output = result.stdout + result.stderr
    assert "Traceback" not in output, output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    lines = [line for line in result.stderr.splitlines() if line.strip() and not line.startswith("note: ")]
    expected_code = {"error": 1, "usage": 2, "warning": 0}[case.kind]
    assert result.exit_code == expected_code, output
    if case.kind == "warning":
        assert any(line.startswith("warning: ") and re.search(case.problem, line) for line in lines), output
    else:
        named = [line for line in lines if str(bad) in line]
        assert len(named) == 1, f"expected one line naming {bad}:\n{result.stderr}"
        assert re.search(case.problem, named[0]), named[0]
    assert snapshot(inputs) == before, "an input was modified"
    # what -o holds at its top level (a sequence's output is a folder of frames named after it)
    written = sorted({p.relative_to(out).parts[0] for p in out.rglob("*") if p.is_file()}) if out.exists() else []
    if case.kind == "usage":
        assert written == [], written
    else:
        good_stem = good.name.split(".")[0]
        assert written and all(name.startswith(good_stem) or name == "lives.csv" for name in written), written
        assert not any(name.startswith(bad.name.split(".")[0]) for name in written if bad.name.split(".")[0]), written


def test_the_corpus_covers_every_class():
    """The issue's acceptance: at least 150 cases, each command and each kind represented."""
    assert len(CASES) >= 150, len(CASES)
    assert len({c.name for c in CASES}) == len(CASES), "case names must be unique"
    commands = {c.command.partition(":")[0] for c in CASES}
    assert {"segment", "vocode", "mel", "bwe", "interpolate", "seaice", "count", "battery", "model",
            "output"} <= commands
