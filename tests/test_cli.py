"""The CLI end to end: Typer's runner for most, one real subprocess of the installed `mis`."""
from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
from typer.testing import CliRunner

from mis.cli.main import app

from conftest import shared_file

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_help_imports_no_torch():
    code = "import sys; from mis.cli.main import app; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_real_subprocess_help_and_version():
    done = subprocess.run([sys.executable, "-m", "mis", "--help"], capture_output=True, text=True, check=True)
    assert "segment" in done.stdout and "Runtime" in done.stdout
    done = subprocess.run([sys.executable, "-m", "mis", "--version"], capture_output=True, text=True, check=True)
    assert done.stdout.startswith("mis ")


def test_info_json():
    result = invoke("--json", "info")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["torch"] and report["devices"][0]["name"] == "cpu"


def test_models_list_and_info(tiny_ct_checkpoint):
    result = invoke("--json", "models", "list")
    assert result.exit_code == 0
    assert json.loads(result.output)[0]["task"] == "ct_segmentation"
    result = invoke("--json", "models", "info", tiny_ct_checkpoint)
    assert json.loads(result.output)["family"] == "pctnet"


def test_bad_device_is_a_usage_error(tiny_ct_checkpoint, phantom_file, tmp_path):
    result = invoke("--device", "tpu", "segment", phantom_file, "-o", tmp_path, "--model", tiny_ct_checkpoint)
    assert result.exit_code == 2
    assert "Traceback" not in result.output


def make_bad_inputs(folder: Path, good: Path) -> dict[str, Path]:
    folder.mkdir()
    data = gzip.compress(good.read_bytes()) if not good.name.endswith(".gz") else good.read_bytes()
    truncated = folder / "truncated.nii.gz"
    truncated.write_bytes(data[: len(data) // 2])
    four_d = folder / "four_d.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((20, 20, 20, 3), np.int16), np.eye(4)), four_d)
    nan = folder / "all_nan.nii.gz"
    nib.save(nib.Nifti1Image(np.full((20, 20, 20), np.nan, np.float32), np.eye(4)), nan)
    text = folder / "notes.nii.gz"
    text.write_text("this is not an image")
    empty = folder / "empty_series"
    empty.mkdir()
    return {"truncated": truncated, "four_d": four_d, "all_nan": nan, "text": text, "empty": empty}


def test_segment_batch_continues_past_bad_inputs(tiny_ct_checkpoint, phantom_file, tmp_path):
    bad = make_bad_inputs(tmp_path / "bad", phantom_file)
    out = tmp_path / "out"
    inputs = [bad["truncated"], phantom_file, bad["four_d"], bad["all_nan"], bad["text"], bad["empty"]]
    before = {p: (p.read_bytes() if p.is_file() else None) for p in inputs}
    result = invoke("--json", "segment", *inputs, "-o", out, "--model", tiny_ct_checkpoint, "--statistics")
    assert result.exit_code == 1, result.output
    report = json.loads(result.stdout)
    statuses = {Path(item["source"]).name: item["status"] for item in report["items"]}
    assert statuses["case1.nii.gz"] == "done"
    assert report["failed"] == 5, report
    for item in report["items"]:
        if item["status"] == "failed":
            assert Path(item["source"]).name in item["error"] or item["source"] in item["error"]
            assert "\n" not in item["error"] and "Traceback" not in item["error"]
    written = sorted(p.name for p in out.iterdir())
    assert written == ["case1_seg.json", "case1_seg.nii.gz", "case1_seg_statistics.json", "statistics.csv"], written
    for path, content in before.items():  # inputs are only read
        assert content is None or path.read_bytes() == content


def test_segment_outputs_and_skip_existing(tiny_ct_checkpoint, phantom_file, tmp_path):
    out = tmp_path / "out"
    args = ["segment", phantom_file, "-o", out, "--model", tiny_ct_checkpoint, "--preview", "--statistics",
            "--save-probabilities", "--roi-subset", "liver,spleen"]
    result = invoke("--json", *args)
    assert result.exit_code == 0, result.output
    seg, _ = nib.load(out / "case1_seg.nii.gz"), None
    assert seg.shape == nib.load(phantom_file).shape
    np.testing.assert_allclose(seg.affine, nib.load(phantom_file).affine, atol=1e-5)
    sidecar = json.loads((out / "case1_seg.json").read_text())
    assert sidecar["labels"] == {"1": "liver", "2": "spleen"}
    stats = json.loads((out / "case1_seg_statistics.json").read_text())
    assert set(stats) == {"liver", "spleen"}
    assert (out / "case1_seg_preview.png").read_bytes()[:4] == b"\x89PNG"
    assert nib.load(out / "case1_seg_probabilities.nii.gz").shape[-1] == 7
    # an existing output is an error without --overwrite, skipped with --skip-existing
    result = invoke("--json", *args)
    assert result.exit_code == 1 and "exists" in result.stdout
    result = invoke("--json", *args, "--skip-existing")
    assert result.exit_code == 0 and json.loads(result.stdout)["skipped"] == 1


def test_dicom_series_segments(tiny_ct_checkpoint, tmp_path):
    """A contiguous real DICOM series (the MONAI fixture without its far-away slice) segments."""
    source = shared_file("ct/monai/CT_DICOM")
    series = tmp_path / "series"
    series.mkdir()
    for name in ("7136", "7166", "7196"):
        shutil.copy(source / name, series / name)
    result = invoke("--json", "segment", series, "-o", tmp_path / "out", "--model", tiny_ct_checkpoint)
    report = json.loads(result.stdout)
    assert report["items"][0]["status"] == "done", report
    seg = nib.load(tmp_path / "out" / "series_seg.nii.gz")
    assert seg.shape == (16, 16, 3)
    result = invoke("--json", "segment", source, "-o", tmp_path / "out2", "--model", tiny_ct_checkpoint)
    assert "non-contiguous" in json.loads(result.stdout)["items"][0]["error"]


def test_evaluate_segment(tiny_ct_checkpoint, phantom_file, tmp_path):
    ref_dir = tmp_path / "ref"
    ref_dir.mkdir()
    shutil.copy(phantom_file.with_name("case1_labels.nii.gz"), ref_dir / "case1.nii.gz")
    pred_dir = tmp_path / "pred"
    pred_dir.mkdir()
    shutil.copy(phantom_file.with_name("case1_labels.nii.gz"), pred_dir / "case1_seg.nii.gz")
    result = invoke("--json", "evaluate", "segment", "--pred", pred_dir, "--ref", ref_dir)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert all(abs(v["dice"] - 1.0) < 1e-6 for v in report["mean"].values())
    # a reference without a prediction and a prediction on another grid are reported, the rest still scored
    shutil.copy(phantom_file.with_name("case1_labels.nii.gz"), ref_dir / "case2.nii.gz")
    shutil.copy(phantom_file.with_name("case1_labels.nii.gz"), ref_dir / "case3.nii.gz")
    moved = nib.load(pred_dir / "case1_seg.nii.gz")
    nib.save(nib.Nifti1Image(np.asanyarray(moved.dataobj), moved.affine * 2), pred_dir / "case3_seg.nii.gz")
    result = invoke("--json", "evaluate", "segment", "--pred", pred_dir, "--ref", ref_dir)
    report = json.loads(result.stdout)
    assert result.exit_code == 1 and [c["case"] for c in report["cases"]] == ["case1"]
    assert [e["case"] for e in report["errors"]] == ["case2", "case3"]
    assert "no prediction" in report["errors"][0]["error"] and "affine differs" in report["errors"][1]["error"]


def test_one_output_file_for_many_inputs_and_contradictory_flags_are_usage_errors(tmp_path):
    mels = tmp_path / "mels"
    mels.mkdir()
    for name in ("a", "b"):
        np.save(mels / f"{name}.npy", np.full((80, 4), -5.0, np.float32))
    result = runner.invoke(app, ["vocode", str(mels), "-o", str(tmp_path / "z.wav")])
    assert result.exit_code == 2 and "names one .wav file but there are 2 inputs" in result.output
    assert not (tmp_path / "z.wav").exists()
    result = runner.invoke(app, ["vocode", str(mels), "-o", str(tmp_path / "w"), "--skip-existing",
                                     "--overwrite"])
    assert result.exit_code == 2 and "contradict" in result.output and not (tmp_path / "w").exists()


def test_repeated_help_is_printed_from_the_cache_without_typer(tmp_path):
    env = {**os.environ, "MIS_CACHE_DIR": str(tmp_path)}
    first = subprocess.run([sys.executable, "-m", "mis", "--help"], env=env, capture_output=True, text=True,
                           check=True)
    assert len(list(tmp_path.glob("help-*.txt"))) == 1
    code = ("import sys; sys.argv = ['mis', '--help']; from mis.cli.entry import main; main(); "
            "assert 'typer' not in sys.modules and 'rich' not in sys.modules, 'rendered again'")
    second = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert second.stdout == first.stdout and "Usage: mis" in second.stdout


def test_help_cache_key_follows_layout_settings_and_only_help_is_cached(monkeypatch):
    from mis.cli import entry

    key = entry.cache_key(["--help"])
    monkeypatch.setenv("COLUMNS", "61")
    assert entry.cache_key(["--help"]) != key != entry.cache_key(["segment", "--help"])
    assert entry.is_help_request(["train", "vocoder", "-h"]) and entry.is_help_request(["--help"])
    assert not entry.is_help_request(["--json", "--help"]) and not entry.is_help_request(["segment", "x.nii"])


def test_outputs_never_replace_inputs_and_clashes_fail_only_their_items(tiny_ct_checkpoint, phantom_file, tmp_path):
    folder = tmp_path / "cases"
    folder.mkdir()
    shutil.copy(phantom_file, folder / "a.nii.gz")
    original = (folder / "a.nii.gz").read_bytes()
    # -o naming the input itself, even with --overwrite: refused for that item, the input untouched
    result = invoke("--json", "segment", folder / "a.nii.gz", "-o", folder / "a.nii.gz", "--overwrite",
                    "--model", tiny_ct_checkpoint)
    assert result.exit_code == 1 and "would replace the input" in result.stdout
    assert (folder / "a.nii.gz").read_bytes() == original
    # a resumed run writing into the input folder does not segment its own outputs
    for _ in range(2):
        result = invoke("--json", "segment", folder, "-o", folder, "--skip-existing", "--model", tiny_ct_checkpoint)
        assert result.exit_code == 0, result.stdout
    assert sorted(p.name for p in folder.glob("*.nii.gz")) == ["a.nii.gz", "a_seg.nii.gz"]
    # two inputs with one output name fail; the other input is still segmented
    clash = tmp_path / "clash"
    clash.mkdir()
    shutil.copy(phantom_file, clash / "ct.nii.gz")
    nib.save(nib.load(phantom_file), clash / "ct.nii")
    shutil.copy(phantom_file, clash / "other.nii.gz")
    result = invoke("--json", "segment", clash, "-o", tmp_path / "out", "--model", tiny_ct_checkpoint)
    statuses = {Path(i["source"]).name: i["status"] for i in json.loads(result.stdout)["items"]}
    assert statuses == {"ct.nii": "failed", "ct.nii.gz": "failed", "other.nii.gz": "done"}
    # a pattern without a match is its own failed item, named as such
    result = invoke("--json", "segment", clash / "other.nii.gz", tmp_path / "none*.nii.gz", "-o", tmp_path / "o2",
                    "--model", tiny_ct_checkpoint)
    errors = [i["error"] for i in json.loads(result.stdout)["items"]]
    assert errors[0] is None and errors[1].endswith("none*.nii.gz: no files match this pattern")


def test_an_existing_file_of_another_kind_as_output_is_a_usage_error(tmp_path):
    audio = tmp_path / "a.wav"
    audio.write_bytes(b"RIFF")
    result = invoke("mel", audio, "-o", audio)
    assert result.exit_code == 2 and "existing file" in result.output and audio.read_bytes() == b"RIFF"


def test_what_the_reader_noticed_reaches_the_report(tiny_ct_checkpoint, phantom_file, tmp_path):
    image = nib.load(phantom_file)
    image.set_qform(None, code=0)
    image.set_sform(None, code=0)
    nib.save(image, tmp_path / "noqs.nii.gz")
    result = invoke("--json", "segment", tmp_path / "noqs.nii.gz", "-o", tmp_path / "out", "--model",
                    tiny_ct_checkpoint)
    assert "no qform/sform" in json.loads(result.stdout)["items"][0]["warning"]


def test_summary_names_rows_apart_in_80_columns_off_a_terminal(tiny_ct_checkpoint, phantom_file, tmp_path):
    """Two inputs whose paths share a long prefix: each row still shows what tells them apart, whole."""
    folder = tmp_path / "sample_data_from_the_scanner_export_2026" / "patients"
    names = []
    for case in ("ct_case_1", "ct_case_2"):
        (folder / case).mkdir(parents=True)
        shutil.copy(phantom_file, folder / case / "scan.nii.gz")
        names.append(f"{case}/scan.nii.gz")
    result = runner.invoke(app, ["segment", str(folder / "ct_case_1" / "scan.nii.gz"),
                                 str(folder / "ct_case_2" / "scan.nii.gz"), "-o", str(tmp_path / "out"),
                                 "--model", str(tiny_ct_checkpoint)], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    rows = [line.split("\t") for line in result.stdout.splitlines()[2:] if line.strip()]
    assert [row[0] for row in rows] == names                      # distinct, relative to the common folder
    assert len({row[1] for row in rows}) == 2
    assert str(folder) in result.stdout.splitlines()[0]           # the title names that folder


def test_file_names_with_rich_markup_are_shown_as_they_are(tiny_ct_checkpoint, phantom_file, tmp_path):
    odd = [tmp_path / "a[" / "b]c.nii.gz", tmp_path / "scan[bold]y.nii.gz"]
    odd[0].parent.mkdir()
    for path in odd:
        shutil.copy(phantom_file, path)
    result = runner.invoke(app, ["segment", *map(str, odd), "-o", str(tmp_path / "out"), "--model",
                                 str(tiny_ct_checkpoint)])
    assert result.exit_code == 0, result.output
    assert "a[/b]c.nii.gz" in result.stdout and "scan[bold]y.nii.gz" in result.stdout
    # the same rows in a terminal (rich): cells are text, never markup
    from rich.console import Console

    from mis.cli import common

    terminal = Console(file=__import__("io").StringIO(), force_terminal=True, width=80, color_system=None)
    saved, common.stdout = common.stdout, terminal
    try:
        common.print_table("t [red]x", ["input"], [["scan[bold]y.nii.gz"], ["a[/b]c.nii.gz"]])
    finally:
        common.stdout = saved
    text = terminal.file.getvalue()
    assert "scan[bold]y.nii.gz" in text and "a[/b]c.nii.gz" in text and "t [red]x" in text


def test_debug_shows_the_traceback_of_a_per_item_internal_error(tiny_ct_checkpoint, phantom_file, tmp_path,
                                                                monkeypatch):
    from mis.pipelines.ct_segmentation import pipeline as ct

    def broken(self, image, meta, **options):
        raise ZeroDivisionError("an internal bug")

    monkeypatch.setattr(ct.CTSegmentationPipeline, "__call__", broken)
    args = ["segment", str(phantom_file), "-o", str(tmp_path / "out"), "--model", str(tiny_ct_checkpoint)]
    plain = runner.invoke(app, args)
    assert plain.exit_code == 1 and "ZeroDivisionError: an internal bug" in plain.stderr
    assert "Traceback" not in plain.stderr
    monkeypatch.delenv("MIS_DEBUG", raising=False)
    debug = runner.invoke(app, ["--debug", *args])
    monkeypatch.delenv("MIS_DEBUG", raising=False)
    assert debug.exit_code == 1 and "Traceback" in debug.stderr and "def broken" not in debug.stdout


def test_a_failing_command_prints_one_json_document(tmp_path):
    result = runner.invoke(app, ["--json", "vocode", str(tmp_path / "m.npy"), "--model", "no_such_model"])
    assert result.exit_code == 2
    document = json.loads(result.stdout)
    assert document["exit_code"] == 2 and "no_such_model" in document["error"]


def test_library_warnings_are_one_formatted_line_and_silent_under_quiet(monkeypatch):
    import io
    import warnings

    from rich.console import Console

    from mis.cli import common

    def shown(quiet: bool) -> str:
        buffer = io.StringIO()
        monkeypatch.setattr(common, "stderr", Console(file=buffer, soft_wrap=True))
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            common.capture_warnings(quiet)
            for _ in range(2):
                warnings.warn("a library complains\nover two lines", UserWarning)
        return buffer.getvalue()

    assert shown(quiet=False) == "warning: a library complains over two lines\n"   # once, one line
    assert shown(quiet=True) == ""
