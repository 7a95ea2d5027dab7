"""Atomic publication of output folders and the clean-up after interrupted runs."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from mrf_monai.io.folders import exchange_folders, publish_folder, recover_interrupted, temporary_folder


def _write(folder, files):
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)


def _tree(folder):
    return {str(p.relative_to(folder)): p.read_text() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_first_publication_is_a_rename(tmp_path):
    final = tmp_path / "sub-01"
    tmp = temporary_folder(final)
    assert tmp.parent == tmp_path and tmp.name.startswith(".sub-01.tmp-")
    _write(tmp, {"sub-01_T1map.nii.gz": "new"})
    publish_folder(tmp, final)
    assert _tree(final) == {"sub-01_T1map.nii.gz": "new"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sub-01"]


def test_republication_replaces_owned_files_and_keeps_the_users(tmp_path):
    final = tmp_path / "sub-01"
    _write(
        final,
        {
            "sub-01_T1map.nii.gz": "old",
            "sub-01_desc-std_T1map.nii.gz": "old std",  # owned: an earlier probabilistic run
            "notes.txt": "mine",
            "dicom/sub-01_T1/0001.dcm": "old dicom",
        },
    )
    tmp = temporary_folder(final)
    _write(tmp, {"sub-01_T1map.nii.gz": "new", "timing.json": "{}"})
    publish_folder(tmp, final, owned=("sub-*_*map.nii.gz", "timing.json"))
    assert _tree(final) == {
        "sub-01_T1map.nii.gz": "new",
        "timing.json": "{}",
        "notes.txt": "mine",
        "dicom/sub-01_T1/0001.dcm": "old dicom",
    }
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sub-01"]


def test_publication_refuses_a_file_in_the_way(tmp_path):
    (tmp_path / "sub-01").write_text("a file")
    tmp = temporary_folder(tmp_path / "sub-01")
    with pytest.raises(NotADirectoryError, match="not a folder"):
        publish_folder(tmp, tmp_path / "sub-01")


def test_exchange_is_atomic_on_linux(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    _write(a, {"x": "a"})
    _write(b, {"x": "b"})
    if not exchange_folders(a, b):
        pytest.skip("renameat2(RENAME_EXCHANGE) is not available here")
    assert (a / "x").read_text() == "b" and (b / "x").read_text() == "a"


def _dead_pid() -> int:
    proc = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    return int(proc.stdout)


def test_recovery_removes_dead_temporaries_and_restores_hidden_old_folders(tmp_path):
    dead = _dead_pid()
    _write(tmp_path / f".sub-01.tmp-{dead}-abc123", {"half": "written"})
    _write(tmp_path / f".sub-02.old-{dead}-abc123", {"sub-02_T1map.nii.gz": "old"})  # killed mid-swap
    _write(tmp_path / f".sub-03.old-{dead}-abc123", {"x": "stale"})
    _write(tmp_path / "sub-03", {"x": "current"})
    alive = tmp_path / f".sub-04.tmp-{os.getpid()}-abc123"  # this process: a run in progress
    _write(alive, {"x": "busy"})
    actions = recover_interrupted(tmp_path)
    assert len(actions) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == [alive.name, "sub-02", "sub-03"]
    assert _tree(tmp_path / "sub-02") == {"sub-02_T1map.nii.gz": "old"}
    assert _tree(tmp_path / "sub-03") == {"x": "current"}
