"""Strong multi-scale deformation: diffeomorphic (positive Jacobian), stronger than the augmentation."""

from __future__ import annotations

import numpy as np
import pytest

from mrf_monai.phantoms.anatomy import CANVAS, canvas_coords
from mrf_monai.phantoms.augment import Augmentation
from mrf_monai.phantoms.deform import (
    Deformation,
    compose_warp,
    jacobian_determinant,
    remove_affine,
    sample_deformation,
)

SHAPE = (CANVAS, CANVAS)


def _map_jacobian(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    dxi, dxj = np.gradient(x)
    dyi, dyj = np.gradient(y)
    return dxi * dyj - dxj * dyi


@pytest.mark.parametrize("amplitude", [8.0, 16.0])
def test_displacement_is_diffeomorphic(amplitude):
    for seed in range(4):
        d = Deformation((amplitude, amplitude / 2, amplitude / 4), seed=seed)
        ux, uy = d.displacement(SHAPE)
        assert np.isfinite(ux).all() and np.isfinite(uy).all()
        assert jacobian_determinant(ux, uy).min() > 0.0
        di, dj = remove_affine(ux, uy)
        assert jacobian_determinant(di, dj).min() > 0.0


def test_the_velocity_alone_would_fold():
    # the same field added linearly (no scaling and squaring) folds: the check is not vacuous
    vx, vy = Deformation((16.0, 8.0, 4.0), seed=0).velocity(SHAPE)
    assert jacobian_determinant(vx, vy).min() < 0.0


def test_deformation_is_reproducible_and_much_stronger_than_the_augmentation():
    d = sample_deformation(np.random.default_rng(3), (8.0, 8.0))
    assert d.amplitudes_mm == (8.0, 4.0, 2.0)
    a = d.displacement(SHAPE)
    b = Deformation(d.amplitudes_mm, d.scales_mm, d.seed).displacement(SHAPE)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    di, dj = remove_affine(*a)
    strong = np.hypot(di, dj)[40:190, 40:190]
    ex, ey = Augmentation(elastic_mm=2.0, elastic_seed=1).displacement(SHAPE)  # today's elastic part
    today = np.hypot(ex, ey)[40:190, 40:190]
    assert np.sqrt((strong**2).mean()) > 3.0 * np.sqrt((today**2).mean())
    assert strong.max() > 10.0


def test_remove_affine_leaves_no_affine_part():
    ux, uy = Deformation((10.0, 5.0, 2.5), seed=2).displacement(SHAPE)
    di, dj = remove_affine(ux, uy)
    c = CANVAS // 2
    gi, gj = np.meshgrid(np.arange(CANVAS) - c, np.arange(CANVAS) - c, indexing="ij")
    sel = np.hypot(gi, gj) <= 90.0
    design = np.stack([gi[sel], gj[sel], np.ones(int(sel.sum()))], axis=1)
    coef, *_ = np.linalg.lstsq(design, np.stack([di[sel], dj[sel]], 1), rcond=None)
    # the residual displacement has (almost) no linear or constant part left
    assert np.abs(coef[:2]).max() < 0.02 and np.abs(coef[2]).max() < 0.5


def test_composed_warp_keeps_its_orientation_everywhere():
    d = Deformation((10.0, 5.0, 2.5), seed=5)
    x, y = canvas_coords()
    for aug, sign in (
        (Augmentation(rotation_deg=8.0, scale=(1.05, 0.95), shift_mm=(3.0, -2.0)), 1.0),
        (Augmentation(flip_lr=True, elastic_mm=2.0, elastic_seed=3), -1.0),
    ):
        wx, wy = compose_warp(aug.warp(), d)(x, y)
        jac = sign * _map_jacobian(wx, wy)
        assert jac.min() > 0.0, aug  # no folding anywhere on the canvas
    wx, wy = compose_warp(None, d)(x, y)
    assert not np.allclose(wx, x)
