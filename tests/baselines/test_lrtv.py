"""Tests of the TV prox, the FISTA solver and the LRTV subspace reconstruction."""

from __future__ import annotations

import pytest
import torch

from mrf_monai.baselines.lrtv import fista, lrtv_solve, power_iteration, quadratic_objective
from mrf_monai.baselines.tv import (
    divergence,
    finite_differences,
    total_variation,
    tv_prox,
    tv_prox_dual_gap,
)


def _crandn(*shape: int, generator: torch.Generator) -> torch.Tensor:
    return torch.complex(torch.randn(shape, generator=generator), torch.randn(shape, generator=generator))


def _phantom(n: int = 32) -> torch.Tensor:
    """A two-component piecewise-constant complex 'compressed TSMI'."""
    x = torch.zeros(2, n, n, dtype=torch.complex64)
    x[0, n // 4 : 5 * n // 8, n // 5 : 4 * n // 5] = 1.0
    x[0, 3 * n // 8 : 7 * n // 8, n // 2 - 3 : n // 2 + 3] = 0.3 + 0.5j
    x[1, n // 8 : n // 2, n // 8 : n // 2] = -0.7
    return x


def _masked_fft(n: int, fraction: float, generator: torch.Generator):
    """Random Cartesian undersampling with a fully sampled centre: N = F^H M F, ||N|| = 1."""
    mask = (torch.rand(n, n, generator=generator) < fraction).float()
    c = 3
    for sx in (slice(0, c), slice(n - c, n)):
        for sy in (slice(0, c), slice(n - c, n)):
            mask[sx, sy] = 1.0

    def normal(v: torch.Tensor) -> torch.Tensor:
        return torch.fft.ifft2(mask * torch.fft.fft2(v, norm="ortho"), norm="ortho")

    return normal, mask


def test_divergence_is_negative_adjoint_of_gradient():
    g = torch.Generator().manual_seed(0)
    x = _crandn(3, 9, 7, generator=g)
    p = _crandn(2, 3, 9, 7, generator=g)
    lhs = (finite_differences(x).conj() * p).sum().real
    rhs = -(x.conj() * divergence(p)).sum().real
    torch.testing.assert_close(lhs, rhs, rtol=1e-5, atol=1e-4)


def test_total_variation_of_known_image():
    x = torch.zeros(1, 6, 6, dtype=torch.complex64)
    x[0, 2:4, :] = 2.0j  # two horizontal edges of height 2 along 6 columns
    assert abs(float(total_variation(x)) - 2 * 6 * 2.0) < 1e-5
    # per-component weights scale each component's TV
    y = torch.cat([x, x])
    per = total_variation(y, weights=torch.tensor([1.0, 0.25]), reduce=False)
    torch.testing.assert_close(per, torch.tensor([24.0, 6.0]))


def test_tv_prox_reduces_tv_and_is_optimal():
    g = torch.Generator().manual_seed(1)
    x = _phantom(16) + 0.2 * _crandn(2, 16, 16, generator=g)
    lam = 0.15
    weights = torch.tensor([1.0, 0.5])
    u, p = tv_prox(x, lam, weights=weights, n_iter=300, return_dual=True)
    assert total_variation(u, weights) < 0.8 * total_variation(x, weights)
    # optimality certificate: the duality gap vanishes at the solution
    gap = float(tv_prox_dual_gap(x, u, p, lam, weights=weights))
    primal = float(0.5 * (u - x).abs().pow(2).sum() + lam * total_variation(u, weights))
    assert 0 <= gap < 1e-4 * primal + 1e-4
    # prox variational inequality: <x - u, v - u> <= lam (TV(v) - TV(u)) for any v
    for _ in range(5):
        v = u + 0.1 * _crandn(2, 16, 16, generator=g)
        lhs = float(((x - u).conj() * (v - u)).real.sum())
        rhs = float(lam * (total_variation(v, weights) - total_variation(u, weights)))
        assert lhs <= rhs + 1e-3
    # a zero weight leaves that component untouched; a constant image is a fixed point
    u0 = tv_prox(x, lam, weights=torch.tensor([1.0, 0.0]), n_iter=10)
    torch.testing.assert_close(u0[1], x[1])
    const = torch.full((1, 8, 8), 0.3 - 0.2j, dtype=torch.complex64)
    torch.testing.assert_close(tv_prox(const, 1.0, n_iter=20), const)


def test_power_iteration_finds_largest_eigenvalue():
    g = torch.Generator().manual_seed(2)
    diag = torch.linspace(0.1, 3.0, 50)
    eig = power_iteration(lambda v: diag * v, torch.zeros(50), n_iter=200, generator=g)
    assert abs(eig - 3.0) < 0.05


def test_fista_objective_decreases_on_small_problem():
    g = torch.Generator().manual_seed(3)
    x_true = _phantom(24)
    normal, mask = _masked_fft(24, 0.35, g)
    rhs = normal(x_true) + torch.fft.ifft2(mask * 0.02 * _crandn(2, 24, 24, generator=g), norm="ortho")
    result = lrtv_solve(normal, rhs, lam=0.02, n_iter=40, tv_iter=10, track_objective=True, generator=g)
    obj = torch.tensor(result.objective)
    start = float(quadratic_objective(normal, rhs, rhs) + 0.02 * total_variation(rhs))
    assert obj[-1] < start
    # (nearly) monotone: FISTA with restart and an inexact (warm-started) prox may ripple,
    # but only by a tiny fraction of the total decrease
    decrease = float(start - obj[-1])
    assert float((obj[1:] - obj[:-1]).max()) < 2e-3 * decrease
    assert 0.9 < result.step < 1.0  # ||N|| = 1 for a masked unitary FFT, step = 1 / (1.05 L)


def test_fista_with_zero_regulariser_solves_least_squares():
    g = torch.Generator().manual_seed(4)
    a = torch.randn(12, 8, generator=g)
    normal_mat = a.T @ a
    b = torch.randn(8, generator=g)
    step = 1.0 / torch.linalg.eigvalsh(normal_mat).max().item()
    res = fista(lambda v: normal_mat @ v, b, lambda v, t: v, torch.zeros(8), step, n_iter=3000)
    torch.testing.assert_close(res.x, torch.linalg.solve(normal_mat, b), rtol=1e-3, atol=1e-3)


def test_lrtv_beats_zero_filled_on_undersampled_phantom():
    g = torch.Generator().manual_seed(5)
    x_true = _phantom(32)
    normal, mask = _masked_fft(32, 0.3, g)
    noise = torch.fft.ifft2(mask * 0.02 * _crandn(2, 32, 32, generator=g), norm="ortho")
    rhs = normal(x_true) + noise  # zero-filled (gridding) image
    lam = 0.02 * float(rhs.abs().max())
    result = lrtv_solve(normal, rhs, lam=lam, n_iter=50, generator=g)
    err_grid = float((rhs - x_true).norm() / x_true.norm())
    err_lrtv = float((result.x - x_true).norm() / x_true.norm())
    assert err_lrtv < 0.5 * err_grid


def test_lrtv_reconstructor_on_spiral_raw_data_beats_gridding():
    """Raw multi-coil spiral data of a piecewise-constant phantom in a real dictionary's subspace."""
    import numpy as np

    from mrf_monai.acquisition.coils import simulate_coil_maps
    from mrf_monai.acquisition.operators import SubspaceNufftOperator
    from mrf_monai.acquisition.trajectory import mrf_spiral_trajectory
    from mrf_monai.baselines.lrtv import LRTVReconstructor
    from mrf_monai.baselines.svdmrf import SVDMRFReconstructor
    from mrf_monai.io.ismrmrd import RawSubject
    from mrf_monai.physics.dictionary import build_dictionary, t1t2_grid
    from mrf_monai.physics.sequence import fisp_mrf_jiang2015

    n, n_frames = 32, 32
    seq = fisp_mrf_jiang2015(n_frames)
    d = build_dictionary(seq, *t1t2_grid(step=0.3), rank=2)
    atoms = d.compressed * d.norms[:, None].to(d.compressed.dtype)
    c = torch.zeros(2, n, n, dtype=torch.complex64)
    c[:, 6:26, 5:27] = atoms[d.n_atoms // 3][:, None, None]
    c[:, 10:20, 12:22] = atoms[2 * d.n_atoms // 3][:, None, None]
    c[:, 14:24, 8:12] = 0.5 * atoms[d.n_atoms // 2][:, None, None]
    traj, interleaf = mrf_spiral_trajectory(n_frames, matrix=n, samples_per_readout=100)
    maps = simulate_coil_maps(2, (n, n))
    k = SubspaceNufftOperator(traj, d.basis, (n, n), maps).forward(c)
    g = torch.Generator().manual_seed(0)
    k = k + 0.01 * k.abs().mean() * torch.randn(k.shape, dtype=torch.complex64, generator=g)
    raw = RawSubject(
        kspace=k[None].numpy(),
        traj=traj[None],
        interleaf=interleaf[None],
        sequence=seq,
        matrix=(n, n),
        fov_mm=(230.0, 230.0, 5.0),
        position_mm=np.zeros((1, 3)),
    )
    grid = SVDMRFReconstructor()(raw, 0, d)["tsmi"]
    tsmi = LRTVReconstructor(lam=0.05, n_iter=40)(raw, 0, d)["tsmi"]
    assert tsmi.shape == (2, n, n) and tsmi.dtype == torch.complex64
    # coil combination leaves a smooth phase: compare magnitudes of the first component
    ref = c[0].abs()

    def err(x: torch.Tensor) -> float:
        return float((x[0].abs() - ref).norm() / ref.norm())

    assert err(tsmi) < 0.7 * err(grid)


def test_lrtv_uses_the_shared_solvers_and_the_gridding_front_end():
    import numpy as np

    import mrf_monai.algorithms as algorithms
    import mrf_monai.baselines.lrtv as lrtv
    from mrf_monai.acquisition.coils import simulate_coil_maps
    from mrf_monai.acquisition.gridding import SubspaceGridder
    from mrf_monai.acquisition.operators import SubspaceNufftOperator
    from mrf_monai.acquisition.trajectory import mrf_spiral_trajectory
    from mrf_monai.io.ismrmrd import RawSubject
    from mrf_monai.physics.sequence import fisp_mrf_jiang2015

    for name in ("power_iteration", "fista", "FistaResult", "quadratic_objective"):
        assert getattr(lrtv, name) is getattr(algorithms, name)
    n, n_frames = 16, 8
    g = torch.Generator().manual_seed(6)
    traj, interleaf = mrf_spiral_trajectory(n_frames, matrix=n, samples_per_readout=64)
    basis, _ = torch.linalg.qr(torch.randn(n_frames, 2, dtype=torch.complex64, generator=g))
    maps = simulate_coil_maps(2, (n, n))
    k = SubspaceNufftOperator(traj, basis, (n, n), maps).forward(
        _crandn(2, n, n, generator=g).to(torch.complex64)
    )
    raw = RawSubject(
        kspace=k[None].numpy(),
        traj=traj[None],
        interleaf=interleaf[None],
        sequence=fisp_mrf_jiang2015(n_frames),
        matrix=(n, n),
        fov_mm=(230.0, 230.0, 5.0),
        position_mm=np.zeros((1, 3)),
    )
    gridder = SubspaceGridder()
    for preconditioned in (True, False):
        normal, rhs, grid = lrtv.LRTVReconstructor(preconditioned=preconditioned, gridder=gridder).problem(
            raw, 0, basis
        )
        p = gridder.slice_problem(raw, 0, basis, density_compensated=preconditioned)
        assert torch.equal(grid, p.grid) and torch.equal(rhs, p.rhs)
        c = _crandn(2, n, n, generator=g).to(torch.complex64)
        assert torch.equal(normal(c), p.normal(c))


@pytest.mark.parametrize(
    "bad",
    [
        {"n_iter": 0},
        {"n_iter": 2.5},
        {"tv_iter": -1},
        {"power_iter": True},
        {"lam": -0.1},
        {"preconditioned": "yes"},
    ],
)
def test_settings_are_checked_when_built(bad):
    from mrf_monai.baselines.lrtv import LRTVInferer

    with pytest.raises(ValueError, match=next(iter(bad))):
        LRTVInferer(**bad)
