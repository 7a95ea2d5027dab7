"""The gridding front end: SubspaceGridder.grid / problem / slice_problem and SliceProblem."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

import mrf_monai.acquisition.gridding as gridding
from mrf_monai.acquisition.coils import (
    combine_coils,
    estimate_coil_maps,
    estimate_coil_maps_walsh,
    simulate_coil_maps,
)
from mrf_monai.acquisition.density import pipe_menon_dcf
from mrf_monai.acquisition.gridding import SubspaceGridder
from mrf_monai.acquisition.operators import SubspaceNufftOperator
from mrf_monai.acquisition.problem import SliceProblem
from mrf_monai.acquisition.trajectory import fully_sampled_spiral, mrf_spiral_trajectory
from mrf_monai.io.ismrmrd import RawSubject
from mrf_monai.physics.sequence import fisp_mrf_jiang2015

N, T, S, R = 16, 8, 64, 3


def make_data(n_coils: int, seed: int = 0, traj=None):
    g = torch.Generator().manual_seed(seed)
    if traj is None:
        traj, _ = mrf_spiral_trajectory(T, matrix=N, samples_per_readout=S)
    basis, _ = torch.linalg.qr(torch.randn(traj.shape[0], R, dtype=torch.complex64, generator=g))
    maps = simulate_coil_maps(n_coils, (N, N), phase_offset_rad=0.4) if n_coils > 1 else None
    c = torch.randn(R, N, N, dtype=torch.complex64, generator=g)
    k = SubspaceNufftOperator(traj, basis, (N, N), maps).forward(c)
    k = k + 0.05 * k.abs().mean() * torch.randn(k.shape, dtype=torch.complex64, generator=g)
    return k, traj, basis, maps


def make_raw(kspace: torch.Tensor, traj: np.ndarray, n_slices: int = 2) -> RawSubject:
    return RawSubject(
        kspace=np.stack([kspace.numpy() * (1 + s) for s in range(n_slices)]),
        traj=np.stack([traj] * n_slices),
        interleaf=np.zeros((n_slices, traj.shape[0]), dtype=np.int64),
        sequence=fisp_mrf_jiang2015(traj.shape[0]),
        matrix=(N, N),
        fov_mm=(230.0, 230.0, 5.0),
        position_mm=np.zeros((n_slices, 3)),
    )


@pytest.mark.parametrize("n_coils", [1, 3])
def test_grid_is_the_density_compensated_operator_gridding(n_coils):
    k, traj, basis, maps = make_data(n_coils)
    dcf = pipe_menon_dcf(traj, (N, N))
    g = SubspaceGridder(coil_maps="walsh")
    est = g.grid(k, traj, basis, (N, N))
    if n_coils == 1:
        ref = SubspaceNufftOperator(traj, basis, (N, N), None, dcf).grid(k)
        assert torch.equal(g.grid(k[0], traj, basis, (N, N)), est)  # (T, S) is one coil
    else:
        coil_images = SubspaceNufftOperator(traj, basis, (N, N), None, dcf).grid_coils(k)
        walsh = estimate_coil_maps_walsh(coil_images)
        ref = SubspaceNufftOperator(traj, basis, (N, N), walsh, dcf).grid(k)
        given = SubspaceNufftOperator(traj, basis, (N, N), maps, dcf).grid(k)
        torch.testing.assert_close(g.grid(k, traj, basis, (N, N), coil_maps=maps), given)
    assert est.shape == (R, N, N) and est.dtype == torch.complex64
    torch.testing.assert_close(est, ref)


@pytest.mark.parametrize("n_coils", [1, 3])
@pytest.mark.parametrize("density_compensated", [True, False])
def test_problem_matches_the_operator(n_coils, density_compensated):
    k, traj, basis, maps = make_data(n_coils, seed=1)
    dcf = pipe_menon_dcf(traj, (N, N))
    p = SubspaceGridder().problem(
        k, traj, basis, (N, N), coil_maps=maps, density_compensated=density_compensated
    )
    assert isinstance(p, SliceProblem) and p.rank == R and p.image_shape == (N, N)
    assert p.density_compensated is density_compensated
    op = SubspaceNufftOperator(traj, basis, (N, N), maps, dcf)
    torch.testing.assert_close(p.grid, op.grid(k))
    if density_compensated:
        assert p.rhs is p.grid
    else:
        torch.testing.assert_close(p.rhs, op.adjoint(k))
    c = torch.randn(2, R, N, N, dtype=torch.complex64, generator=torch.Generator().manual_seed(2))
    expected = op.grid_normal(c) if density_compensated else op.normal(c)
    torch.testing.assert_close(p.normal(c), expected)
    # the normal operator is the one of the right-hand side: A^H D (A c) through NUFFTs
    if density_compensated:
        direct = op.grid(op.forward(c[0]))
        assert ((p.normal(c[0]) - direct).norm() / direct.norm()).item() < 1e-3


def test_density_and_kernels_are_computed_once_per_trajectory(monkeypatch):
    calls = []
    real = gridding.pipe_menon_dcf

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(gridding, "pipe_menon_dcf", counting)
    k, traj, basis, _ = make_data(2, seed=3)
    raw = make_raw(k, traj)
    g = SubspaceGridder()
    p0 = g.slice_problem(raw, 0, basis)
    p1 = g.slice_problem(raw, 1, SimpleNamespace(basis=basis))  # a dictionary-like object works too
    assert len(calls) == 1
    assert p1.normal.kernel_hat is p0.normal.kernel_hat  # one Toeplitz kernel for both slices
    torch.testing.assert_close(p1.grid, 2 * p0.grid)  # slice 1 holds twice the k-space of slice 0
    torch.testing.assert_close(g(raw, 1, SimpleNamespace(basis=basis))["tsmi"], p1.grid)
    assert len(calls) == 1
    other = np.ascontiguousarray(traj[::-1])  # another trajectory
    g.grid(k, other, basis, (N, N))
    assert len(calls) == 2


def test_options_are_honoured():
    k, traj, basis, _ = make_data(3, seed=4)
    few = SubspaceGridder(dcf_iter=3, coil_kernel_size=3, coil_maps="walsh").grid(k, traj, basis, (N, N))
    dcf = pipe_menon_dcf(traj, (N, N), n_iter=3)
    coil_images = SubspaceNufftOperator(traj, basis, (N, N), None, dcf).grid_coils(k)
    ref = SubspaceNufftOperator(traj, basis, (N, N), estimate_coil_maps_walsh(coil_images, 3), dcf).grid(k)
    torch.testing.assert_close(few, ref)
    assert not torch.allclose(few, SubspaceGridder(coil_maps="walsh").grid(k, traj, basis, (N, N)))
    # the coil-map estimator is a choice of the gridder
    inati = SubspaceGridder(coil_maps="inati").grid(k, traj, basis, (N, N))
    coil_images = SubspaceNufftOperator(traj, basis, (N, N), None, pipe_menon_dcf(traj, (N, N))).grid_coils(k)
    torch.testing.assert_close(inati, combine_coils(coil_images, estimate_coil_maps(coil_images, "inati")))
    # a given density replaces the gridder's own
    ones = torch.ones(T, S)
    plain = SubspaceGridder(coil_maps="walsh").grid(k, traj, basis, (N, N), dcf=ones)
    coil_images = SubspaceNufftOperator(traj, basis, (N, N), None, ones).grid_coils(k)
    torch.testing.assert_close(
        plain, SubspaceNufftOperator(traj, basis, (N, N), estimate_coil_maps_walsh(coil_images), ones).grid(k)
    )


def test_several_readouts_per_frame_are_gridded_calibrated():
    """Frames that hold several interleaves laid end to end (``(T, readouts * S)``)."""
    # 8 readouts per frame
    traj = fully_sampled_spiral(4, matrix=N, samples_per_readout=48, n_interleaves_full=8)
    basis, _ = torch.linalg.qr(
        torch.randn(4, 2, dtype=torch.complex64, generator=torch.Generator().manual_seed(5))
    )
    i = torch.arange(N, dtype=torch.float32) - N // 2
    blob = torch.exp(-(i[:, None] ** 2 + i[None, :] ** 2) / (2 * 2.0**2)).to(torch.complex64)
    c = torch.stack([blob, -0.4j * blob])
    maps = simulate_coil_maps(2, (N, N))
    k = SubspaceNufftOperator(traj, basis, (N, N), maps).forward(c)
    est = SubspaceGridder().grid(k, traj, basis, (N, N), coil_maps=maps)
    assert ((est - c).norm() / c.norm()).item() < 0.05


def test_slice_problem_to_moves_everything_and_keeps_objects_on_the_same_device():
    k, traj, basis, _ = make_data(2, seed=6)
    p = SubspaceGridder().problem(k, traj, basis, (N, N))
    assert p.device == torch.device("cpu") and p.to("cpu") is p
    if torch.cuda.is_available():
        q = p.to("cuda")
        assert q is not p and q.to("cuda") is q
        tensors = (q.grid, q.rhs, q.normal.kernel_hat, q.coil_maps, q.normal.coil_maps)
        assert all(t.is_cuda for t in tensors)
        c = torch.randn(R, N, N, dtype=torch.complex64)
        torch.testing.assert_close(q.normal(c.cuda()).cpu(), p.normal(c), rtol=1e-4, atol=1e-4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gridder_device_is_used_everywhere():
    k, traj, basis, _ = make_data(2, seed=7)
    raw = make_raw(k, traj, 1)
    cpu = SubspaceGridder().slice_problem(raw, 0, basis)
    gpu = SubspaceGridder(device="cuda").slice_problem(raw, 0, basis)
    assert all(t.is_cuda for t in (gpu.grid, gpu.rhs, gpu.normal.kernel_hat, gpu.coil_maps))
    torch.testing.assert_close(gpu.grid.cpu(), cpu.grid, rtol=1e-2, atol=1e-2 * float(cpu.grid.abs().max()))


def test_bad_input_is_a_clear_error():
    k, traj, basis, _ = make_data(2, seed=8)
    g = SubspaceGridder()
    with pytest.raises(ValueError, match="frames"):
        g.grid(k, traj, basis[:-1], (N, N))
    with pytest.raises(ValueError, match="select a slice"):
        g.grid(k[None], traj, basis, (N, N))
    with pytest.raises(ValueError, match="coil_maps"):
        g.grid(k, traj, basis, (N, N), coil_maps=torch.ones(3, N, N))
    with pytest.raises(ValueError, match="walsh"):
        SubspaceGridder(coil_maps="no-such-estimator")
    raw = make_raw(k, traj, 1)
    with pytest.raises(ValueError, match="sequence"):
        g.slice_problem(raw, 0, basis[:-1])
