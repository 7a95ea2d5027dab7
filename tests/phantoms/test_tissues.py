"""Tissue parameters and per-subject maps."""

from __future__ import annotations

import numpy as np
import pytest

from mrf_monai.phantoms.anatomy import TISSUE_NAMES
from mrf_monai.phantoms.tissues import (
    LABELS,
    T1_RANGE_S,
    T2_RANGE_S,
    TISSUES,
    mix_tissues,
    sample_subject_maps,
    sample_subject_parameters,
)

MATRIX = 96  # 2.4 mm voxels: enough to see tissues, cheap


@pytest.fixture(scope="module")
def maps():
    return sample_subject_maps(3, 74, MATRIX, split="test")


def test_maps_shapes_types_and_ranges(maps):
    assert maps["t1_s"].shape == maps["t2_s"].shape == maps["pd"].shape == (MATRIX, MATRIX)
    assert maps["t1_s"].dtype == np.float32 and maps["pd"].dtype == np.complex64
    assert maps["mask"].dtype == bool and maps["labels"].dtype == np.uint8
    has = np.abs(maps["pd"]) > 0
    t1, t2 = maps["t1_s"][has], maps["t2_s"][has]
    assert t1.min() >= T1_RANGE_S[0] and t1.max() <= T1_RANGE_S[1]
    assert t2.min() >= T2_RANGE_S[0] and t2.max() <= T2_RANGE_S[1]
    assert np.all(t2 <= t1)
    # background is exactly 0 (never NaN)
    assert np.all(maps["t1_s"][~has] == 0) and np.all(maps["t2_s"][~has] == 0)
    assert np.isfinite(maps["t1_s"]).all() and np.isfinite(maps["pd"]).all()
    assert maps["mask"].sum() > 0.2 * MATRIX**2 * 0.3
    assert np.all(has[maps["mask"]])


def test_tissue_values_are_plausible_at_3t(maps):
    lab = maps["labels"]
    frac = dict(zip(TISSUE_NAMES, maps["fractions"]))
    # nearly pure voxels (partial volume pulls mixed voxels towards their neighbours)
    med = {k: np.median(maps["t1_s"][frac[k] > 0.9]) for k in ("wm", "gm", "csf", "fat")}
    # ordering at 3 T: fat < WM < GM < CSF, each within a factor 1.6 of the nominal mean
    assert med["fat"] < med["wm"] < med["gm"] < med["csf"]
    for k in med:
        assert TISSUES[k].t1_s / 1.6 < med[k] < TISSUES[k].t1_s * 1.6, (k, med[k])
    # bone has almost no signal, fat is bright
    pd = np.abs(maps["pd"])
    assert np.median(pd[lab == LABELS["bone"]]) < 0.3 * np.median(pd[lab == LABELS["fat"]])


def test_subject_spread_is_lognormal_15_percent():
    wm = np.array(
        [sample_subject_parameters(s, "train", augment=False).tissues["wm"].t1_s for s in range(300)]
    )
    log = np.log(wm / TISSUES["wm"].t1_s)
    assert abs(log.mean()) < 0.03
    assert 0.12 < log.std() < 0.18


def test_reproducible_and_seed_dependent():
    a = sample_subject_maps(5, 74, 48, split="test")
    b = sample_subject_maps(5, 74, 48, split="test")
    c = sample_subject_maps(6, 74, 48, split="test")
    for k in ("t1_s", "t2_s", "pd", "mask"):
        assert np.array_equal(a[k], b[k])
    assert not np.allclose(a["t1_s"], c["t1_s"])


def test_pd_phase_is_smooth(maps):
    pd = maps["pd"]
    both = (np.abs(pd[1:]) > 0.3) & (np.abs(pd[:-1]) > 0.3)
    dphi = np.angle(pd[1:] * np.conj(pd[:-1]))[both]
    assert np.abs(dphi).max() < 0.3  # radians per 2.4 mm voxel
    assert np.angle(pd[np.abs(pd) > 0.3]).std() > 0.01  # but not constant


def test_split_is_enforced():
    with pytest.raises(ValueError, match="belongs to split 'train'"):
        sample_subject_maps(0, 74 + 4, 48, split="test")
    m = sample_subject_maps(0, 78, 48, split="test", check_split=False)
    assert m["mask"].any()


def test_lesions_appear_in_some_subjects():
    params = [sample_subject_parameters(s, "train") for s in range(40)]
    with_lesions = [p for p in params if p.lesions]
    assert 0.1 < len(with_lesions) / len(params) < 0.55
    p = with_lesions[0]
    z = int(round(p.lesions[0].centre[2]))
    seed = params.index(p)
    m = sample_subject_maps(seed, z, 96, split="train", parameters=p, check_split=False)
    lesion = TISSUE_NAMES.index("lesion")  # the last row is the world's vessel tissue (zero here)
    assert (m["labels"] == LABELS["lesion"]).sum() > 0 or m["fractions"][lesion].max() > 0.3


def test_partial_volume_mixes_rates():
    f = {"a": np.array([0.5]), "b": np.array([0.5])}
    t1, t2, pd = mix_tissues(f, {"a": 1.0, "b": 4.0}, {"a": 0.1, "b": 2.0}, {"a": 0.5, "b": 1.0})
    assert pd[0] == pytest.approx(0.75)
    assert 1 / t1[0] == pytest.approx((0.25 / 1.0 + 0.5 / 4.0) / 0.75)
    assert 1 / t2[0] == pytest.approx((0.25 / 0.1 + 0.5 / 2.0) / 0.75)
