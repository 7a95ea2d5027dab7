"""Subject evaluation with TSMIs: exact oracle, and clear errors for TSMIs that do not fit."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from mrf_monai.evaluation.metrics import TSMI_SUFFIX, evaluate_subject, reference_tsmi
from mrf_monai.evaluation.report import collect_metrics, write_report
from mrf_monai.io.nifti import write_maps
from mrf_monai.io.subjects import write_reference
from mrf_monai.physics import fisp_mrf_jiang2015

NX, NY, S = 8, 6, 2


def _subject(tmp_path, dictionary, tsmi_shape=None, sequence=None, rank=None):
    rng = np.random.default_rng(0)
    mask = np.zeros((NX, NY, S), bool)
    mask[1:-1, 1:-1] = True
    t1 = np.where(mask, rng.uniform(0.5, 2.0, mask.shape), 0).astype(np.float32)
    t2 = np.where(mask, rng.uniform(0.04, 0.2, mask.shape), 0).astype(np.float32)
    pd = mask.astype(np.float32)
    affine = np.diag([2.0, 2.0, 5.0, 1.0])
    ref_dir = tmp_path / "ds" / "sub-x"
    write_reference(ref_dir, "x", t1, t2, pd, mask.astype(np.uint8), affine)
    (ref_dir / "raw.h5").write_bytes(b"")
    pred = tmp_path / "pred" / "sub-x"
    write_maps(pred, "x", {"T1map": t1, "T2map": t2, "PDmap": pd}, affine, "oracle")
    r = rank or dictionary.rank
    d = dictionary if r == dictionary.rank else dictionary.truncate_rank(r)
    tsmi = reference_tsmi(t1, t2, pd, mask, d) * np.exp(0.3j)  # a global phase: aligned away
    tsmi = np.moveaxis(tsmi, 0, -1).astype(np.complex64)
    if tsmi_shape is not None:
        tsmi = np.zeros(tsmi_shape, np.complex64)
    nib.save(nib.Nifti1Image(tsmi, affine), str(pred / f"sub-x_{TSMI_SUFFIX}.nii.gz"))
    seq = (sequence or dictionary.sequence).to_dict()
    (pred / f"sub-x_{TSMI_SUFFIX}.json").write_text(
        json.dumps({"Sequence": seq, "Rank": int(tsmi.shape[-1])})
    )
    return pred, ref_dir


def test_tsmi_oracle(tmp_path, dictionary):
    pred, ref = _subject(tmp_path, dictionary)
    m = evaluate_subject(pred, ref, dictionary=dictionary)
    assert m["T1_MAPE"] == 0 and m["T2_MAPE"] == 0
    assert m["TSMI_NRMSE"] == pytest.approx(0, abs=1e-6) and m["TSMI_SSIM"] == pytest.approx(1, abs=1e-6)
    # a lower-rank TSMI is compared with the dictionary truncated to its rank
    pred, ref = _subject(tmp_path / "r3", dictionary, rank=3)
    assert evaluate_subject(pred, ref, dictionary=dictionary)["TSMI_NRMSE"] == pytest.approx(0, abs=1e-6)


def test_tsmi_that_does_not_fit(tmp_path, dictionary, make_dictionary):
    pred, ref = _subject(tmp_path / "grid", dictionary, tsmi_shape=(NX + 1, NY, S, dictionary.rank))
    with pytest.raises(
        ValueError, match=rf"{TSMI_SUFFIX}.nii.gz has shape {NX + 1} x {NY} x {S} but the reference"
    ):
        evaluate_subject(pred, ref, dictionary=dictionary)
    pred, ref = _subject(tmp_path / "seq", dictionary, sequence=fisp_mrf_jiang2015(150))
    with pytest.raises(ValueError, match=r"another sequence than the dictionary's \(150 vs 200 frames\)"):
        evaluate_subject(pred, ref, dictionary=dictionary)
    small = make_dictionary(rank=2, n_t1=6, n_t2=6)
    pred, ref = _subject(tmp_path / "rank", dictionary)
    with pytest.raises(ValueError, match="has rank 5 but the dictionary only 2"):
        evaluate_subject(pred, ref, dictionary=small)
    # through collect_metrics: a failure line naming the file, no row
    rows, failures = collect_metrics([tmp_path / "rank" / "pred"], tmp_path / "rank" / "ds", dictionary=small)
    assert rows == [] and len(failures) == 1 and failures[0].startswith("pred: sub-x: ")
    csv_path, md_path = write_report(rows, tmp_path / "report", failures)
    assert "No subject could be evaluated" in md_path.read_text() and failures[0] in md_path.read_text()
    assert csv_path.read_text().strip() == "method,subject"


def test_tsmi_suffix_is_the_pipeline_one():
    from mrf_monai.pipeline.writer import TSMI_SUFFIX as PIPELINE_SUFFIX

    assert TSMI_SUFFIX == PIPELINE_SUFFIX
