"""Fine structure: folding detail, sulci, perivascular spaces, vessels, slab partial volume, lesions."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mrf_monai.phantoms.anatomy import TISSUE_NAMES, brain_slice, head_slice
from mrf_monai.phantoms.lesions import (
    LESION_CONTRASTS,
    ShapedLesion,
    sample_lesion_properties,
    sample_shaped_lesions,
    shaped_lesion_fractions,
)
from mrf_monai.phantoms.structures import (
    add_perivascular_spaces,
    add_sulci,
    add_vessels,
    band_limited_field,
    fold_cortex,
)

Z = 78


@pytest.fixture(scope="module")
def head():
    return head_slice(Z)


def _total(frac):
    return sum(frac[k].astype(np.float64) for k in TISSUE_NAMES)


def test_band_limited_field_lives_in_its_band():
    f = band_limited_field(np.random.default_rng(0), (230, 230), 4.0, 8.0)
    assert abs(f.mean()) < 1e-9 and f.std() == pytest.approx(1.0)
    power = np.abs(np.fft.fft2(f)) ** 2
    k = np.hypot(*np.meshgrid(np.fft.fftfreq(230), np.fft.fftfreq(230), indexing="ij"))
    # raised-cosine edges half an octave wide: wavelengths 4-8 px, with the edges 2.8-11.3 px
    inside = (k >= 1 / 11.4) & (k <= 1 / 2.8)
    assert power[inside].sum() / power.sum() > 0.999
    core = (k >= 1 / 8.0) & (k <= 1 / 4.0)
    assert power[core].sum() / power.sum() > 0.6


def test_structures_convert_tissue_and_keep_totals(head):
    before = _total(head)
    rng = np.random.default_rng
    for func, changed in (
        (fold_cortex, ("gm", "wm")),
        (add_sulci, ("csf", "gm", "wm")),
        (add_perivascular_spaces, ("csf", "gm", "wm")),
        (add_vessels, ("vessel",)),
    ):
        out = func(head, rng(1))
        after = _total(out)
        assert np.abs(after - before).max() < 1e-5, func.__name__  # tissue converted, never created
        assert all(out[k].min() >= 0.0 for k in TISSUE_NAMES)
        assert any(np.abs(out[k] - head[k]).max() > 0.2 for k in changed), func.__name__
        assert np.array_equal(out["brain"], head["brain"])


def test_folding_sharpens_and_keeps_grey_plus_white(head):
    out = fold_cortex(head, np.random.default_rng(2))
    assert np.allclose(out["gm"] + out["wm"], head["gm"] + head["wm"], atol=1e-5)
    tissue = head["gm"] + head["wm"]
    sel = tissue > 0.9
    # the GM/WM share is sharper: fewer voxels of nearly pure tissue have an intermediate share
    mid = lambda f: ((f["wm"][sel] / tissue[sel] > 0.2) & (f["wm"][sel] / tissue[sel] < 0.8)).mean()  # noqa: E731
    assert mid(out) < 0.7 * mid(head)


def test_sulci_and_pvs_add_thin_csf(head):
    out = add_sulci(head, np.random.default_rng(3))
    new = out["csf"] - head["csf"]
    assert new.min() >= -1e-6 and new.sum() > 100  # at least about 100 mm^2 of new CSF
    # thin: most new CSF voxels are next to a voxel without new CSF
    core = (new > 0.5) & np.roll(new > 0.5, 1, 0) & np.roll(new > 0.5, -1, 0)
    core &= np.roll(new > 0.5, 1, 1) & np.roll(new > 0.5, -1, 1)
    assert core.sum() < 0.3 * (new > 0.5).sum()
    out = add_perivascular_spaces(head, np.random.default_rng(4))
    assert (out["csf"] - head["csf"]).max() > 0.5
    assert (out["wm"] <= head["wm"] + 1e-6).all()


def test_vessels_are_thin_tubes_inside_the_head(head):
    out = add_vessels(head, np.random.default_rng(5), strength=2.0)
    v = out["vessel"]
    assert v.max() > 0.5 and v.sum() > 50
    assert (v[_total(head) == 0] == 0).all()  # never in air
    # tubes: the vessel area is much less than (length ~ voxels with v > 0.5) x 4 mm
    assert ((v > 0.05).sum()) < 4.0 * (v > 0.5).sum() + 200


def test_slab_is_the_mean_of_neighbouring_slices():
    one = [brain_slice(z) for z in (Z - 1, Z, Z + 1)]
    slab = brain_slice(Z, slab_weights=(1.0, 1.0, 1.0))
    for k in ("gm", "wm", "brain"):
        assert np.allclose(slab[k], sum(o[k] for o in one) / 3.0, atol=1e-5)
    with pytest.raises(ValueError, match="odd number"):
        brain_slice(Z, slab_weights=(1.0, 1.0))


def test_shaped_lesions_shapes_and_rings():
    x, y = np.meshgrid(np.arange(-30.0, 31.0), np.arange(-30.0, 31.0), indexing="ij")
    ell = ShapedLesion((0.0, 0.0, 0.0), (10.0, 10.0, 10.0))
    les, core = shaped_lesion_fractions((ell,), x, y, 0.0)
    assert core.max() == 0.0 and les[30, 30] == 1.0 and les[0, 0] == 0.0
    assert les.sum() == pytest.approx(math.pi * 100, rel=0.05)  # area of the disc
    ring = ShapedLesion((0.0, 0.0, 0.0), (10.0, 10.0, 10.0), shape="ring", core=0.5)
    les, core = shaped_lesion_fractions((ring,), x, y, 0.0)
    assert core[30, 30] == 1.0 and les[30, 30] == 0.0 and les[30, 38] == 1.0
    assert (les + core).max() <= 1.0 + 1e-12
    lob = ShapedLesion((0.0, 0.0, 0.0), (10.0, 10.0, 10.0), shape="lobulated", lobes=((3, 0.3, 0.0),))
    les, _ = shaped_lesion_fractions((lob,), x, y, 0.0)
    assert les[30 + 12, 30] > 0.5 and les[30 - 9, 30] < 0.5  # radius 13 mm at phi = 0, 7 mm at phi = pi
    # outside its z extent the lesion is absent
    assert shaped_lesion_fractions((ell,), x, y, 11.0)[0].max() == 0.0


def test_varied_lesions_cover_shapes_sizes_and_contrast_both_ways():
    rng = np.random.default_rng(0)
    lesions = [les for _ in range(30) for les in sample_shaped_lesions(rng, "train")]
    assert {les.shape for les in lesions} == {"ellipsoid", "lobulated", "ring"}
    radii = np.array([les.radii_mm[0] for les in lesions])
    assert radii.min() < 3.0 and radii.max() > 15.0
    props = [sample_lesion_properties(rng) for _ in range(60)]
    assert {mode for mode, _ in props} == set(LESION_CONTRASTS)
    t1 = np.array([p[1][0] for p in props])
    t2 = np.array([p[1][1] for p in props])
    assert (t2 < t1).all()
    assert (t1 < 0.7).any() and (t1 > 1.1).any()  # below and above white matter (0.7-1.1 s)
    assert (t2 < 0.04).any() and (t2 > 0.08).any()
