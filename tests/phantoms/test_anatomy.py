"""MNI152 anatomy and the procedural head."""

from __future__ import annotations

import socket

import numpy as np
import pytest

from mrf_monai.phantoms import anatomy
from mrf_monai.phantoms.anatomy import (
    CANVAS,
    TISSUE_NAMES,
    HeadLayers,
    brain_slice,
    head_slice,
    load_mni_templates,
    resample_to_matrix,
    slice_position_mm,
)


def test_templates_load_offline(monkeypatch):
    def no_network(*args, **kwargs):
        raise OSError("network access attempted while loading the MNI152 templates")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    load_mni_templates.cache_clear()
    t = load_mni_templates()
    assert t.gm.shape == t.wm.shape == t.mask.shape == (197, 233, 189)
    assert set(np.unique(t.mask)) == {0.0, 1.0}
    assert float((t.gm + t.wm).max()) <= 1.0 + 1e-6
    assert float((t.gm * (1 - t.mask)).max()) == 0.0
    # LPS orientation: the brain's centre lies near x = 0 (symmetric template), and the
    # occipital pole (posterior, +y in LPS) is further from the centre than the frontal pole
    assert abs(t.centre_lps_mm[0]) < 3.0
    assert t.z_mm(72) == pytest.approx(0.0)
    assert load_mni_templates() is t  # cached per process


def test_template_is_lps_oriented():
    t = load_mni_templates()
    # the cerebellum (inferior, posterior): at z = -30 mm the brain sits posterior (+y LPS)
    z = int(round(-30 - t.origin_lps_mm[2]))
    ys = np.nonzero(t.mask[:, :, z].any(axis=0))[0] + t.origin_lps_mm[1]
    assert ys.mean() > t.centre_lps_mm[1]


def test_head_slice_fractions_and_layers():
    f = head_slice(74, HeadLayers())
    stack = np.stack([f[k] for k in TISSUE_NAMES])
    assert stack.shape == (len(TISSUE_NAMES), CANVAS, CANVAS)
    assert stack.min() >= 0.0 and stack.sum(0).max() <= 1.0 + 1e-5
    brain = f["brain"] >= 0.5
    assert f["wm"][brain].mean() > 0.2 and f["gm"][brain].mean() > 0.2
    # outside tissues are outside the brain
    assert f["fat"][brain].max() == 0.0 and f["bone"][brain].max() == 0.0
    # along a ray from the centre to the left edge: brain, then bone, then fat, then air
    row = CANVAS // 2
    line = {k: f[k][:, row] for k in ("brain", "bone", "fat")}
    i_brain = np.nonzero(line["brain"] > 0.5)[0].min()
    i_bone = np.nonzero(line["bone"] > 0.5)[0]
    i_fat = np.nonzero(line["fat"] > 0.5)[0]
    assert i_bone.size and i_fat.size
    assert i_fat.min() < i_bone.min() < i_brain  # fat lies further out than bone
    assert stack[:, 0, row].sum() == 0.0  # air at the edge of the FOV
    # layer thicknesses: skull about 6.5 mm, fat about 5 mm (varying +-20 % around the head)
    assert 3 <= (line["bone"][:i_brain] + line["fat"][:i_brain] * 0).sum() <= 10


def test_lesion_replaces_brain_tissue():
    base = brain_slice(74)

    def blob(x, y):
        cx, cy = x[CANVAS // 2, CANVAS // 2], y[CANVAS // 2, CANVAS // 2]
        return (np.hypot(x - cx, y - cy) < 6.0).astype(float)

    les = brain_slice(74, lesion=blob)
    inside = les["lesion"] > 0
    assert inside.sum() > 50
    total = les["csf"] + les["gm"] + les["wm"] + les["lesion"]
    assert np.allclose(total, base["csf"] + base["gm"] + base["wm"], atol=1e-5)


def test_resample_to_matrix_keeps_fractions():
    f = head_slice(74)
    r = resample_to_matrix(f, 46)  # 5 mm voxels
    assert r["wm"].shape == (46, 46)
    # area averaging: totals scale with the voxel area
    assert r["wm"].sum() * 25 == pytest.approx(f["wm"].sum(), rel=1e-4)
    assert sum(r[k] for k in TISSUE_NAMES).max() <= 1.0 + 1e-5
    assert resample_to_matrix(f, CANVAS) is f


def test_slice_position():
    t = load_mni_templates()
    p = slice_position_mm(74)
    assert p[2] == pytest.approx(t.z_mm(74))
    assert p[:2] == pytest.approx(t.centre_lps_mm)
    # a coarser matrix keeps the same field of view: voxel N//2 sits near the same place
    assert np.abs(slice_position_mm(74, 46)[:2] - p[:2]).max() < 230 / 46


def test_bad_slice_is_a_clear_error():
    with pytest.raises(ValueError, match="outside the MNI152 template"):
        brain_slice(500)
    with pytest.raises(ValueError, match="no brain"):
        head_slice(180)


def test_module_has_no_mutable_globals():
    # the only per-process state is the lru_cache'd template loader
    assert hasattr(anatomy.load_mni_templates, "cache_info")
