"""Atomic writes: the final name appears only after success; failures leave nothing."""

from __future__ import annotations

import os

import pytest

from mrf_monai.io.atomic import TEMP_MARKER, atomic_write_path, temporary_name


def test_temporary_name_same_folder_keeps_suffix(tmp_path):
    tmp = temporary_name(tmp_path / "sub-01_T1map.nii.gz")
    assert tmp.parent == tmp_path
    assert tmp.name.startswith(".sub-01_T1map" + TEMP_MARKER + str(os.getpid()))
    assert tmp.name.endswith(".nii.gz")
    assert temporary_name(tmp_path / "raw.h5").suffix == ".h5"


def test_success_replaces_existing(tmp_path):
    target = tmp_path / "a.txt"
    target.write_text("old")
    with atomic_write_path(target) as tmp:
        tmp.write_text("new")
        assert target.read_text() == "old"  # not visible before the block ends
    assert target.read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_error_removes_temporary_and_keeps_old(tmp_path):
    target = tmp_path / "a.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_write_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("boom")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_creates_parent_folder_and_requires_a_file(tmp_path):
    target = tmp_path / "x" / "y" / "b.bin"
    with atomic_write_path(target) as tmp:
        tmp.write_bytes(b"1")
    assert target.read_bytes() == b"1"
    with pytest.raises(FileNotFoundError, match="nothing was written"):
        with atomic_write_path(tmp_path / "c.bin"):
            pass
    with pytest.raises(FileNotFoundError, match="does not exist"):
        with atomic_write_path(tmp_path / "missing" / "d.bin", make_parents=False):
            pass
