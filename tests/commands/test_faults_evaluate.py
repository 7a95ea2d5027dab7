"""Fault injection for ``mrf-monai evaluate`` (and the progress/summary of ``mrf-monai dictionary``).

Each bad input asserts the exit status, ONE clear message without a traceback, that the other
subjects are still evaluated (with their exact metrics), and that no partial or temporary
report file is left behind.

The predictions are written with ``io.nifti.write_maps`` (the files `mrf-monai reconstruct`
writes) from the reference maps times a known factor, so the metrics have exact oracles:
prediction = 1.1 x reference T1 and 0.8 x reference T2 inside the mask gives T1 MAPE 10 % and
T2 MAPE 20 %.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import os
import shutil

import numpy as np
import pytest

from mrf_monai.cli import main
from mrf_monai.io.atomic import TEMP_MARKER
from mrf_monai.io.nifti import write_maps
from mrf_monai.io.subjects import write_reference

NX, NY, S = 12, 10, 2
LABELS = ("a", "b", "c")
T1_FACTOR, T2_FACTOR = 1.1, 0.8


def _affine(n_slices_mm: float = 5.0) -> np.ndarray:
    aff = np.diag([-2.0, -2.0, n_slices_mm, 1.0])
    aff[:3, 3] = [12.0, 10.0, 0.0]
    return aff


def _reference(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    mask = np.zeros((NX, NY, S), bool)
    mask[2:-2, 2:-2] = True
    return {
        "t1_s": np.where(mask, rng.uniform(0.5, 2.0, mask.shape), 0.0).astype(np.float32),
        "t2_s": np.where(mask, rng.uniform(0.04, 0.2, mask.shape), 0.0).astype(np.float32),
        "pd": np.where(mask, rng.uniform(0.5, 1.0, mask.shape), 0.0).astype(np.float32),
        "mask": mask,
    }


def _write_prediction(pred_dir, label: str, ref: dict, method: str = "fake", units: str = "s") -> None:
    folder = pred_dir / f"sub-{label}"
    maps = {"T1map": ref["t1_s"] * T1_FACTOR, "T2map": ref["t2_s"] * T2_FACTOR, "PDmap": ref["pd"]}
    write_maps(folder, label, maps, _affine(), method, units=units)
    (folder / "timing.json").write_text(json.dumps({"method": method, "mean_seconds_per_slice": 0.5}))


@pytest.fixture()
def data(tmp_path):
    """A dataset of three subjects with ``ref/`` maps and a prediction folder for all three."""
    ds, pred = tmp_path / "dataset", tmp_path / "pred"
    for n, label in enumerate(LABELS):
        ref = _reference(n)
        subject = ds / f"sub-{label}"
        write_reference(
            subject, label, ref["t1_s"], ref["t2_s"], ref["pd"], ref["mask"].astype(np.uint8), _affine()
        )
        # evaluation reads only ref/; find_subjects needs the raw file to exist
        (subject / "raw.h5").write_bytes(b"not read by the evaluation")
        _write_prediction(pred, label, ref)
    return ds, pred, tmp_path / "report"


def _evaluate(capfd, pred, ds, out, *extra: str) -> tuple[int, str, str]:
    status = main(["evaluate", "--pred", str(pred), "--ref", str(ds), "--out", str(out), *extra])
    captured = capfd.readouterr()
    return status, captured.out, captured.err


def _no_debris(folder) -> None:
    if folder.exists():
        assert not [p for p in folder.rglob("*") if TEMP_MARKER in p.name], "temporary files left behind"


def _rows(out) -> dict[str, dict[str, str]]:
    return {r["subject"]: r for r in csv.DictReader(open(out / "metrics.csv"))}


def _assert_good_rows(out, labels) -> None:
    rows = _rows(out)
    assert sorted(rows) == [f"sub-{label}" for label in labels]
    for row in rows.values():
        assert float(row["T1_MAPE"]) == pytest.approx(100 * (T1_FACTOR - 1), rel=1e-5)
        assert float(row["T2_MAPE"]) == pytest.approx(100 * (1 - T2_FACTOR), rel=1e-5)
        assert float(row["seconds_per_slice"]) == 0.5 and row["method"] == "fake"


# ----------------------------------------------------------------------------- success


def test_success_no_progress_prints_table_and_one_summary_line(data, capfd):
    ds, pred, out = data
    status, stdout, stderr = _evaluate(capfd, pred, ds, out, "--no-progress")
    assert status == 0 and stderr == ""
    _assert_good_rows(out, LABELS)
    last = stdout.strip().splitlines()[-1]
    assert (
        last == f"evaluated 3 subject(s) of 1 method(s): wrote {out / 'metrics.csv'} and {out / 'summary.md'}"
    )
    assert "| fake | 3 | 10.00 ± 0.00 | 20.00 ± 0.00 |" in stdout  # the table: T1, T2 MAPE 10, 20 %
    assert sorted(p.name for p in out.iterdir()) == ["metrics.csv", "summary.md"]


def test_progress_bar_on_stderr(data, capfd):
    ds, pred, out = data
    status, stdout, stderr = _evaluate(capfd, pred, ds, out)
    assert status == 0
    assert "evaluate" in stderr and "3/3" in stderr  # tqdm: description and count
    assert "evaluate" not in stdout.replace("evaluated", "")


# ----------------------------------------------------------------------------- one bad subject


def _other_shape(pred, ds):
    bigger = {k: np.ones((2 * NX, 2 * NY, S), np.float32) for k in ("T1map", "T2map", "PDmap")}
    shutil.rmtree(pred / "sub-b")
    write_maps(pred / "sub-b", "b", bigger, _affine(), "fake")
    return [
        str(pred / "sub-b" / "sub-b_T1map.nii.gz"),
        str(ds / "sub-b" / "ref"),
        f"{2 * NX} x {2 * NY} x {S}",
        f"{NX} x {NY} x {S}",
    ]


def _truncated_nifti(pred, ds):
    path = pred / "sub-b" / "sub-b_T2map.nii.gz"
    path.write_bytes(path.read_bytes()[:60])
    return [str(path), "cannot be read as NIfTI"]


def _not_gzip_nifti(pred, ds):
    path = pred / "sub-b" / "sub-b_T1map.nii.gz"
    path.write_bytes(gzip.compress(b"hello, not a NIfTI header"))
    return [str(path), "cannot be read as NIfTI"]


def _unknown_units(pred, ds):
    path = pred / "sub-b" / "sub-b_T1map.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "Units": "furlong"}))
    return [str(path), "unknown Units 'furlong'"]


def _sidecar_not_json(pred, ds):
    path = pred / "sub-b" / "sub-b_T2map.json"
    path.write_text("{ this is not json")
    return [str(path), "cannot be read as JSON"]


def _missing_map(pred, ds):
    path = pred / "sub-b" / "sub-b_T2map.nii.gz"
    path.unlink()
    return [str(path), "is missing"]


def _missing_subject(pred, ds):
    shutil.rmtree(pred / "sub-b")
    return [str(pred / "sub-b"), "no prediction"]


def _missing_reference(pred, ds):
    path = ds / "sub-b" / "ref" / "sub-b_mask.nii.gz"
    path.unlink()
    return [str(path), "not found"]


def _damaged_timing(pred, ds):
    path = pred / "sub-b" / "timing.json"
    path.write_text('{"mean_seconds_per_slice": ')
    return [str(path), "timing"]


BAD_SUBJECT = {
    f.__name__.strip("_"): f
    for f in (
        _other_shape,
        _truncated_nifti,
        _not_gzip_nifti,
        _unknown_units,
        _sidecar_not_json,
        _missing_map,
        _missing_subject,
        _missing_reference,
        _damaged_timing,
    )
}


@pytest.mark.parametrize("fault", sorted(BAD_SUBJECT))
def test_one_bad_subject(data, capfd, fault):
    ds, pred, out = data
    expected = BAD_SUBJECT[fault](pred, ds)
    status, stdout, stderr = _evaluate(capfd, pred, ds, out, "--no-progress")
    assert status == 1
    assert "Traceback" not in stdout + stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 2, stderr  # the failure, once, and the closing count
    failure, closing = lines
    assert failure.startswith("fake: sub-b: ")
    for text in expected:
        assert text in failure, f"{text!r} not in {failure!r}"
    assert (stdout + stderr).count("sub-b:") == 1  # printed once, not again with the table
    assert closing.startswith("mrf-monai evaluate: 1 of 3 subject evaluation(s) failed")
    _assert_good_rows(out, ("a", "c"))  # the other subjects are evaluated
    summary = (out / "summary.md").read_text()
    assert "## Not evaluated" in summary and failure in summary
    _no_debris(out)


# ----------------------------------------------------------------------------- bad arguments


def test_out_is_a_file(data, capfd):
    ds, pred, out = data
    out.write_text("my notes")
    status, stdout, stderr = _evaluate(capfd, pred, ds, out, "--no-progress")
    assert status == 2 and stdout == ""
    assert (
        stderr
        == f"mrf-monai evaluate: error: --out {out} is a file; give a folder for metrics.csv and summary.md\n"
    )
    assert out.read_text() == "my notes"
    assert sorted(p.name for p in out.parent.iterdir()) == ["dataset", "pred", "report"]


def test_out_inside_a_file(data, capfd):
    ds, pred, out = data
    out.write_text("my notes")
    status, stdout, stderr = _evaluate(capfd, pred, ds, out / "sub", "--no-progress")
    assert status == 2 and stdout == "" and "Traceback" not in stderr
    assert stderr.count("\n") == 1 and f"{out} is a file" in stderr


@pytest.mark.skipif(
    hasattr(os, "geteuid") and os.geteuid() == 0, reason="root may write into read-only folders"
)
def test_out_in_a_read_only_folder(data, capfd):
    ds, pred, out = data
    locked = out.parent / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        status, stdout, stderr = _evaluate(capfd, pred, ds, locked / "report", "--no-progress")
    finally:
        locked.chmod(0o700)
    assert status == 2 and stdout == "" and stderr.count("\n") == 1
    assert "not writable" in stderr and not (locked / "report").exists()


@pytest.mark.parametrize(
    "case",
    [
        "missing --pred folder",
        "names for folders",
        "no subjects",
        "unreadable dictionary",
        "missing dictionary",
    ],
)
def test_bad_arguments_exit_2_before_writing(data, capfd, case):
    ds, pred, out = data
    empty = out.parent / "empty"
    empty.mkdir()
    bad_dict = out.parent / "dict.h5"
    bad_dict.write_bytes(b"\x89HDF\r\n\x1a\n truncated")
    pred_arg, ref_arg, extra = str(pred), str(ds), []
    expected = {
        "missing --pred folder": str(out.parent / "nowhere"),
        "names for folders": "2 names for 1 folders",
        "no subjects": str(empty),
        "unreadable dictionary": str(bad_dict),
        "missing dictionary": str(out.parent / "nodict.h5"),
    }[case]
    if case == "missing --pred folder":
        pred_arg = str(out.parent / "nowhere")
    elif case == "names for folders":
        extra = ["--methods", "x", "y"]
    elif case == "no subjects":
        ref_arg = str(empty)
    elif case == "unreadable dictionary":
        extra = ["--dictionary", str(bad_dict)]
    else:
        extra = ["--dictionary", str(out.parent / "nodict.h5")]
    status, stdout, stderr = _evaluate(capfd, pred_arg, ref_arg, out, "--no-progress", *extra)
    assert status == 2 and stdout == ""
    assert stderr.startswith("mrf-monai evaluate: error: ") and stderr.count("\n") == 1, stderr
    assert expected in stderr and "Traceback" not in stderr
    assert not out.exists()  # nothing written


def test_report_write_failure_leaves_old_report_and_no_debris(data, capfd):
    ds, pred, out = data
    out.mkdir()
    (out / "metrics.csv").write_text("old metrics\n")
    (out / "summary.md").mkdir()  # a folder where the summary must go: its rename fails
    status, stdout, stderr = _evaluate(capfd, pred, ds, out, "--no-progress")
    assert status == 2 and "Traceback" not in stderr
    assert stderr.startswith(f"mrf-monai evaluate: error: cannot write the report into {out}")
    assert stderr.count("\n") == 1
    assert (out / "metrics.csv").read_text() == "old metrics\n"  # not replaced by a half report
    assert sorted(p.name for p in out.iterdir()) == ["metrics.csv", "summary.md"]
    _no_debris(out)


def test_rerun_replaces_the_report(data, capfd):
    ds, pred, out = data
    assert _evaluate(capfd, pred, ds, out, "--no-progress")[0] == 0
    _missing_subject(pred, ds)
    assert _evaluate(capfd, pred, ds, out, "--no-progress")[0] == 1
    _assert_good_rows(out, ("a", "c"))
    _no_debris(out)


# ----------------------------------------------------------------------------- help texts


def _parser(command: str) -> argparse.ArgumentParser:
    import importlib

    sub = argparse.ArgumentParser(prog="mrf-monai").add_subparsers()
    return importlib.import_module(f"mrf_monai.commands.{command}").register(sub)


@pytest.mark.parametrize("command", ["evaluate", "dictionary"])
def test_help_gives_every_default(command):
    parser = _parser(command)
    for action in parser._actions:
        if action.dest == "help" or action.required:
            continue
        assert "default" in (action.help or ""), f"{command} {action.option_strings}: no default in the help"
    text = parser.format_help()
    assert "%(" not in text and "--no-progress" in text


# ----------------------------------------------------------------------------- dictionary command


DICT_ARGS = [
    "--frames",
    "20",
    "--rank",
    "3",
    "--t1-range",
    "0.2,2",
    "--t2-range",
    "0.02,0.5",
    "--step",
    "0.3",
]


def test_dictionary_progress_and_summary(tmp_path, capfd):
    from mrf_monai.io.dictionary import load_dictionary

    assert main(["dictionary", "--out", str(tmp_path / "d.h5"), *DICT_ARGS]) == 0
    captured = capfd.readouterr()
    n_atoms = load_dictionary(tmp_path / "d.h5").n_atoms
    assert "simulating" in captured.err and f"{n_atoms}/{n_atoms}" in captured.err
    assert main(["dictionary", "--out", str(tmp_path / "e.h5"), *DICT_ARGS, "--no-progress"]) == 0
    captured = capfd.readouterr()
    assert captured.err == ""
    assert captured.out.count("\n") == 1 and captured.out.startswith(
        f"wrote {tmp_path / 'e.h5'}: {n_atoms} atoms"
    )


def test_dictionary_bad_out_and_device(tmp_path, capfd):
    status = main(["dictionary", "--out", str(tmp_path), *DICT_ARGS, "--no-progress"])
    err = capfd.readouterr().err
    assert status == 2 and err.count("\n") == 1 and "is a folder" in err
    status = main(
        ["dictionary", "--out", str(tmp_path / "x.h5"), *DICT_ARGS, "--device", "banana", "--no-progress"]
    )
    err = capfd.readouterr().err
    assert status == 2 and err.count("\n") == 1 and "banana" in err and "Traceback" not in err
    assert not list(tmp_path.iterdir())
