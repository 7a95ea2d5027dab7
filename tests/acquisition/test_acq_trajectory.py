import math

import numpy as np
import pytest

from mrf_monai.acquisition.trajectory import (
    GOLDEN_ANGLE_RAD,
    RADIAL_GOLDEN_ANGLE_RAD,
    default_n_interleaves_full,
    fully_sampled_spiral,
    golden_angle_radial,
    mrf_spiral_trajectory,
    radial_trajectory,
    spiral_interleaf,
)


def test_interleaf_reaches_edge_and_starts_at_centre():
    k = spiral_interleaf(matrix=64, samples_per_readout=300, n_interleaves_full=16)
    r = np.linalg.norm(k, axis=-1)
    assert k.shape == (300, 2) and k.dtype == np.float32
    assert r[0] == pytest.approx(0.0, abs=1e-7)
    assert r[-1] == pytest.approx(0.5, abs=1e-5)
    assert np.all(np.diff(r) >= -1e-7)  # radius grows monotonically
    # equal arc-length spacing along the readout
    step = np.linalg.norm(np.diff(k, axis=0), axis=-1)
    assert step.std() / step.mean() < 0.02


def test_edge_is_nyquist_sampled_by_n_interleaves_full():
    matrix, n_int = 64, 16
    k = spiral_interleaf(matrix, 4000, n_int, vd_exponent=1.5)
    theta = np.unwrap(np.arctan2(k[:, 1], k[:, 0]))
    r = np.linalg.norm(k, axis=-1)
    # radial spacing of the union of n_int interleaves at the edge: 2 pi dr/dtheta / n_int = 1 / matrix
    drdtheta = np.gradient(r, theta)
    assert 2 * math.pi * drdtheta[-1] / n_int == pytest.approx(1.0 / matrix, rel=0.01)
    # variable density: turns are closer together near the centre
    mid = np.searchsorted(r, 0.15)
    assert drdtheta[mid] < 0.7 * drdtheta[-1]


def test_default_interleaves_give_nyquist_readout():
    n = default_n_interleaves_full(230, 920)
    k = spiral_interleaf(230, 920, n)
    assert np.linalg.norm(np.diff(k, axis=0), axis=-1).max() <= 1 / 230 * 1.001
    k2 = spiral_interleaf(230, 920, n - 1)
    assert np.linalg.norm(np.diff(k2, axis=0), axis=-1).max() > 1 / 230


def test_golden_and_sequential_ordering():
    traj, idx = mrf_spiral_trajectory(5, matrix=32, samples_per_readout=64, n_interleaves_full=8)
    assert traj.shape == (5, 64, 2) and traj.dtype == np.float32
    np.testing.assert_array_equal(idx, np.arange(5))
    ang = np.arctan2(traj[:, -1, 1], traj[:, -1, 0])
    d = np.mod(np.diff(ang), 2 * math.pi)
    np.testing.assert_allclose(d, GOLDEN_ANGLE_RAD, atol=1e-5)
    assert np.abs(traj).max() <= 0.5 + 1e-6

    traj_s, idx_s = mrf_spiral_trajectory(10, 32, 64, 8, ordering="sequential", n_interleaves=4)
    np.testing.assert_array_equal(idx_s, np.arange(10) % 4)
    np.testing.assert_allclose(traj_s[4], traj_s[0], atol=1e-7)

    _, idx_g = mrf_spiral_trajectory(4, 230, 920, ordering="golden", n_interleaves=377)
    np.testing.assert_array_equal(idx_g, [0, 144, 288, 55])  # golden steps on the 377 grid
    with pytest.raises(ValueError, match="ordering"):
        mrf_spiral_trajectory(3, 32, 64, 8, ordering="random")


def test_fully_sampled_and_radial_shapes():
    f = fully_sampled_spiral(3, matrix=32, samples_per_readout=64, n_interleaves_full=8)
    assert f.shape == (3, 8 * 64, 2)
    np.testing.assert_array_equal(f[0], f[2])
    r = radial_trajectory(10, 32)
    assert r.shape == (10, 32, 2) and np.abs(r).max() <= 0.5


def test_golden_angle_radial_spokes_per_frame():
    traj, index = golden_angle_radial(5, 4, 32)
    assert traj.shape == (5, 4, 32, 2) and traj.dtype == np.float32 and index.shape == (5, 4)
    np.testing.assert_array_equal(index, np.arange(20).reshape(5, 4))
    # spoke m points along m * pi / phi; sample S // 2 is the centre, sample 0 is at |k| = 0.5
    flat = traj.reshape(20, 32, 2)
    np.testing.assert_allclose(flat[:, 16], 0.0, atol=1e-7)
    np.testing.assert_allclose(np.linalg.norm(flat[:, 0], axis=-1), 0.5, atol=1e-6)
    ang = np.arctan2(flat[:, -1, 1], flat[:, -1, 0])
    np.testing.assert_allclose(np.mod(np.diff(ang), np.pi), RADIAL_GOLDEN_ANGLE_RAD, atol=1e-5)
    assert np.abs(traj).max() <= 0.5
    # the same spokes as radial_trajectory(golden=True), grouped by frame
    np.testing.assert_array_equal(flat, radial_trajectory(20, 32, golden=True))
    with pytest.raises(ValueError, match="spokes_per_frame"):
        golden_angle_radial(3, 0, 32)


def test_the_readout_keyword_is_samples_per_readout():
    """``n_samples`` (now the diffusion sample count only) is no keyword of the trajectories."""
    from mrf_monai.acquisition.protocol import Protocol

    for call in (
        lambda: mrf_spiral_trajectory(3, 32, n_samples=64),
        lambda: spiral_interleaf(32, n_samples=64),
        lambda: fully_sampled_spiral(1, 32, n_samples=64),
        lambda: golden_angle_radial(3, 2, n_samples=64),
        lambda: Protocol.default(3, 32, n_samples=64),
    ):
        with pytest.raises(TypeError, match="n_samples"):
            call()
    traj, _ = mrf_spiral_trajectory(3, 32, samples_per_readout=64, n_interleaves_full=8)
    assert traj.shape == (3, 64, 2)
    assert Protocol.default(3, 32, samples_per_readout=64).samples_per_readout == 64
