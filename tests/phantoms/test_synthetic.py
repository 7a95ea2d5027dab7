"""Fully synthetic label phantoms."""

from __future__ import annotations

import numpy as np
import pytest

from mrf_monai.phantoms.anatomy import TISSUE_NAMES
from mrf_monai.phantoms.synthetic import SYNTHETIC_LABEL_BASE, random_phase, synthetic_slice
from mrf_monai.phantoms.tissues import T1_RANGE_S, T2_RANGE_S

MATRIX = 64


@pytest.fixture(scope="module")
def phantoms():
    return [
        synthetic_slice(np.random.default_rng(s), MATRIX, style)
        for s in range(8)
        for style in ("fields", "voronoi")
    ]


def test_deterministic_per_seed():
    a = synthetic_slice(np.random.default_rng(11), 48)
    b = synthetic_slice(np.random.default_rng(11), 48)
    c = synthetic_slice(np.random.default_rng(12), 48)
    for k in a:
        assert np.array_equal(a[k], b[k]), k
    assert not np.allclose(a["t1_s"], c["t1_s"])


def test_maps_are_physical(phantoms):
    for m in phantoms:
        assert m["t1_s"].shape == (MATRIX, MATRIX) and m["pd"].dtype == np.complex64
        assert m["fractions"].shape == (len(TISSUE_NAMES), MATRIX, MATRIX) and not m["fractions"].any()
        for k in ("t1_s", "t2_s", "pd"):
            assert np.isfinite(m[k]).all()
        has = np.abs(m["pd"]) > 0
        t1, t2 = m["t1_s"][has], m["t2_s"][has]
        assert (t2 < t1).all()
        assert t1.min() >= T1_RANGE_S[0] and t1.max() <= T1_RANGE_S[1]
        assert t2.min() >= T2_RANGE_S[0] and t2.max() <= T2_RANGE_S[1]
        assert (m["t1_s"][~has] == 0).all() and (m["t2_s"][~has] == 0).all()
        assert np.abs(m["pd"]).max() <= 1.3
        assert m["mask"].sum() > 0.1 * MATRIX**2 and has[m["mask"]].all()
        inside = m["labels"] > 0
        assert (m["labels"][inside] >= SYNTHETIC_LABEL_BASE).all()
        assert len(np.unique(m["labels"][inside])) >= 2
        assert not has[0].any() and not has[:, 0].any()  # the object stays inside the FOV


def test_labels_cover_the_dictionary_range(phantoms):
    t1 = np.concatenate([m["t1_s"][m["mask"]] for m in phantoms])
    t2 = np.concatenate([m["t2_s"][m["mask"]] for m in phantoms])
    assert t1.min() < 0.1 and t1.max() > 3.5  # dictionary T1: 0.05-5 s
    assert t2.min() < 0.01 and t2.max() > 1.0  # dictionary T2: 0.005-3 s
    # log-uniform: each decade of T1 holds a fair share of the voxels
    counts = np.histogram(np.log10(t1), bins=[-1.31, -1.0, 0.0, 0.7])[0]
    assert (counts > 0.05 * t1.size).all()


def test_random_phase_is_smooth_but_varied():
    phases = [random_phase(np.random.default_rng(s), MATRIX) for s in range(6)]
    for p in phases:
        assert np.abs(np.diff(p, axis=0)).max() < 0.5  # rad per 3.6 mm pixel
    spans = [float(np.ptp(p)) for p in phases]
    assert max(spans) > 1.5
    assert np.std([p[MATRIX // 2, MATRIX // 2] for p in phases]) > 0.5  # random constant


def test_bad_style_is_a_clear_error():
    with pytest.raises(ValueError, match="synthetic style must be one of"):
        synthetic_slice(np.random.default_rng(0), 32, "checkerboard")
