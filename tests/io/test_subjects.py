"""Dataset/subject folders and reference maps."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from mrf_monai.io.subjects import (
    find_subjects,
    read_reference,
    reference_path,
    subject_label,
    write_reference,
)


def _dataset(root):
    for name in ("sub-02", "sub-01", "sub-03"):
        (root / name).mkdir(parents=True)
        if name != "sub-03":
            (root / name / "raw.h5").write_bytes(b"x")
    (root / "notes").mkdir()
    (root / "notes" / "raw.h5").write_bytes(b"x")
    (root / "README.txt").write_text("ignored")
    return root


def test_find_subjects_dataset_and_subject_folders(tmp_path):
    root = _dataset(tmp_path / "ds")
    assert find_subjects([root]) == [root / "sub-01", root / "sub-02"]
    assert find_subjects([root / "sub-02", root]) == [root / "sub-02", root / "sub-01"]
    assert find_subjects(str(root / "sub-01")) == [root / "sub-01"]
    assert subject_label(root / "sub-02") == "02" and subject_label(root / "sub-02" / "raw.h5") == "02"


def test_find_subjects_errors(tmp_path):
    root = _dataset(tmp_path / "ds")
    with pytest.raises(FileNotFoundError, match="no subjects found"):
        find_subjects([root / "sub-03"])
    with pytest.raises(FileNotFoundError, match="does not exist"):
        find_subjects([tmp_path / "missing"])
    with pytest.raises(ValueError, match="not named sub-<label>"):
        find_subjects([root / "notes"])
    with pytest.raises(ValueError, match="not a subject folder"):
        subject_label(root / "notes")


def test_reference_round_trip(tmp_path):
    sub = tmp_path / "sub-7"
    rng = np.random.default_rng(0)
    t1 = rng.uniform(0.5, 2, (5, 4, 2))
    mask = t1 > 1.0
    aff = np.diag([-2.0, -2.0, 5.0, 1.0])
    write_reference(sub, "7", t1, t1 / 10, t1 * (1 + 1j), mask, aff)
    m = nib.load(sub / "ref" / "sub-7_mask.nii.gz")
    assert m.get_data_dtype() == np.uint8
    assert nib.load(sub / "ref" / "sub-7_T1map.nii.gz").get_data_dtype() == np.float32
    ref = read_reference(sub)
    np.testing.assert_allclose(ref["t1_s"], t1.astype(np.float32))
    np.testing.assert_allclose(ref["pd"], np.abs(t1 * (1 + 1j)), rtol=1e-6)
    np.testing.assert_array_equal(ref["mask"], mask)
    np.testing.assert_allclose(ref["affine"], aff)
    (sub / "ref" / "sub-7_T2map.nii.gz").unlink()
    with pytest.raises(FileNotFoundError, match="sub-7_T2map.nii.gz"):
        read_reference(sub)
    with pytest.raises(ValueError, match="shape"):
        write_reference(sub, "7", t1, t1[:2], t1, mask, aff)


def test_reference_pd_phase_is_optional(tmp_path):
    sub = tmp_path / "sub-8"
    rng = np.random.default_rng(1)
    t1 = rng.uniform(0.5, 2, (5, 4, 2))
    phase = rng.uniform(-np.pi, np.pi, t1.shape)
    aff = np.diag([-2.0, -2.0, 5.0, 1.0])
    write_reference(sub, "8", t1, t1 / 10, t1, t1 > 1, aff)
    assert "pd_phase_rad" not in read_reference(sub)  # the contract's ref/ only
    written = write_reference(sub, "8", t1, t1 / 10, t1, t1 > 1, aff, pd_phase_rad=phase)
    assert written["desc-phase_PDmap"] == reference_path(sub, "desc-phase_PDmap")
    assert written["desc-phase_PDmap"].name == "sub-8_desc-phase_PDmap.nii.gz"
    np.testing.assert_allclose(read_reference(sub)["pd_phase_rad"], phase.astype(np.float32))
    with pytest.raises(ValueError, match="expected"):
        write_reference(sub, "8", t1, t1 / 10, t1, t1 > 1, aff, pd_phase_rad=phase[:2])
    written["PDmap"].write_bytes(b"\x1f\x8b damaged")
    with pytest.raises(ValueError, match="sub-8_PDmap.nii.gz: cannot be read as NIfTI"):
        read_reference(sub)
