"""Geometric augmentation and the train / val / test split."""

from __future__ import annotations

import numpy as np
import pytest

from mrf_monai.phantoms.anatomy import CANVAS, brain_slice
from mrf_monai.phantoms.augment import (
    BAND_PERIOD,
    SLICE_RANGE,
    SPLITS,
    Augmentation,
    sample_augmentation,
    smooth_random_field,
    split_of_slice,
    split_slices,
    subject_generator,
)


def test_splits_are_disjoint_interleaved_and_guarded():
    sets = {s: split_slices(s) for s in SPLITS}
    assert [len(sets[s]) for s in SPLITS] == [60, 10, 20]
    for a in SPLITS:
        for b in SPLITS:
            if a < b:
                gap = np.abs(sets[a][:, None] - sets[b][None, :]).min()
                assert gap >= 3, (a, b, gap)
        # every split spans the brain from bottom to top (one run per band)
        assert sets[a].min() < SLICE_RANGE[0] + BAND_PERIOD
        assert sets[a].max() >= SLICE_RANGE[1] - BAND_PERIOD
        assert all(split_of_slice(int(z)) == a for z in sets[a])
    assert split_of_slice(SLICE_RANGE[0] - 1) is None


def test_seed_streams_differ_between_splits():
    draws = {s: subject_generator(0, s).random(4) for s in SPLITS}
    assert not np.allclose(draws["train"], draws["test"])
    assert np.array_equal(subject_generator(5, "val", 1).random(3), subject_generator(5, "val", 1).random(3))
    with pytest.raises(ValueError, match="split must be one of"):
        subject_generator(0, "training")


def test_identity_and_flip_warps():
    base = brain_slice(74)
    assert Augmentation().is_identity
    same = brain_slice(74, warp=Augmentation().warp())
    assert np.array_equal(same["wm"], base["wm"])
    flipped = brain_slice(74, warp=Augmentation(flip_lr=True).warp())
    # mirrored about voxel CANVAS // 2 along i: out[i] = base[CANVAS - i]
    assert np.allclose(flipped["wm"][1:], base["wm"][1:][::-1], atol=1e-6)


def test_rotation_and_scale_move_the_brain():
    base = brain_slice(74)["brain"]
    big = brain_slice(74, warp=Augmentation(scale=(1.1, 1.1)).warp())["brain"]
    assert big.sum() == pytest.approx(base.sum() * 1.21, rel=0.02)
    rot = brain_slice(74, warp=Augmentation(rotation_deg=90.0).warp())["brain"]
    assert rot.sum() == pytest.approx(base.sum(), rel=0.02)

    # the brain is longer anterior-posterior than left-right; a 90 degree turn swaps that
    def extent(m, axis):
        idx = np.nonzero((m > 0.5).any(axis=axis))[0]
        return idx.max() - idx.min()

    assert extent(base, 0) > extent(base, 1)
    assert extent(rot, 0) < extent(rot, 1)


def test_sampled_augmentation_is_reproducible_and_bounded():
    a = sample_augmentation(subject_generator(3, "train"))
    b = sample_augmentation(subject_generator(3, "train"))
    c = sample_augmentation(subject_generator(4, "train"))
    assert a == b and a != c
    assert abs(a.rotation_deg) <= 10 and 0.85 < a.scale[0] < 1.15
    ux, uy = a.displacement((CANVAS, CANVAS))
    ux2, _ = b.displacement((CANVAS, CANVAS))
    assert np.array_equal(ux, ux2)
    assert 1.0 < ux.std() < 3.0  # elastic_mm = 2


def test_smooth_random_field_statistics():
    f = smooth_random_field(np.random.default_rng(0), (120, 100), correlation_px=10.0)
    assert f.shape == (120, 100)
    assert abs(f.mean()) < 1e-6 and f.std() == pytest.approx(1.0, rel=1e-6)
    # neighbours are strongly correlated, far points are not
    near = np.corrcoef(f[:, :-1].ravel(), f[:, 1:].ravel())[0, 1]
    assert near > 0.95
