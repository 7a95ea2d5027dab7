import numpy as np
import pytest
import torch

from mrf_monai.acquisition.coils import simulate_coil_maps
from mrf_monai.acquisition.density import pipe_menon_dcf
from mrf_monai.acquisition.operators import SubspaceNufftOperator, grid_subspace
from mrf_monai.acquisition.trajectory import fully_sampled_spiral, mrf_spiral_trajectory

T, S, R = 6, 48, 3


def make_operator(shape, n_coils, seed=0):
    g = torch.Generator().manual_seed(seed)
    traj, _ = mrf_spiral_trajectory(T, matrix=shape[0], samples_per_readout=S, n_interleaves_full=6)
    basis, _ = torch.linalg.qr(torch.randn(T, R, dtype=torch.complex64, generator=g))
    maps = simulate_coil_maps(n_coils, shape, phase_offset_rad=0.7) if n_coils > 1 else None
    dcf = pipe_menon_dcf(traj, shape)
    return SubspaceNufftOperator(traj, basis, shape, maps, dcf), traj, basis, maps, g


def rel(a, b):
    return ((a - b).norm() / b.norm()).item()


@pytest.mark.parametrize("shape,n_coils", [((16, 16), 1), ((15, 17), 3)])
def test_forward_matches_direct_dft(shape, n_coils):
    op, traj, basis, maps, g = make_operator(shape, n_coils)
    c = torch.randn(R, *shape, dtype=torch.complex64, generator=g)
    k = torch.from_numpy(traj).double()
    i = torch.arange(shape[0], dtype=torch.float64) - shape[0] // 2
    j = torch.arange(shape[1], dtype=torch.float64) - shape[1] // 2
    e = torch.exp(-2j * np.pi * (k[..., 0, None, None] * i[:, None] + k[..., 1, None, None] * j[None, :]))
    s = torch.ones(1, *shape, dtype=torch.complex128) if maps is None else maps.to(torch.complex128)
    ref = torch.einsum("tr,tsxy,cxy,rxy->cts", basis.to(torch.complex128), e, s, c.to(torch.complex128))
    y = op.forward(c)
    assert y.shape == (n_coils, T, S)
    assert rel(y.to(torch.complex128), ref) < 1e-4
    # adjoint against the explicit matrix too
    kk = torch.randn(n_coils, T, S, dtype=torch.complex64, generator=g)
    ref_adj = torch.einsum(
        "tr,tsxy,cxy,cts->rxy", basis.conj().to(torch.complex128), e.conj(), s.conj(), kk.to(torch.complex128)
    )
    assert rel(op.adjoint(kk).to(torch.complex128), ref_adj) < 1e-4


@pytest.mark.parametrize("shape,n_coils", [((16, 16), 1), ((15, 17), 4)])
def test_adjointness_and_toeplitz_normals(shape, n_coils):
    op, _, _, _, g = make_operator(shape, n_coils, seed=1)
    c = torch.randn(R, *shape, dtype=torch.complex64, generator=g)
    y = torch.randn(n_coils, T, S, dtype=torch.complex64, generator=g)
    lhs = torch.vdot(op.forward(c).flatten(), y.flatten())
    rhs = torch.vdot(c.flatten(), op.adjoint(y).flatten())
    assert (abs(lhs - rhs) / abs(lhs)).item() < 1e-5
    assert rel(op.normal(c), op.adjoint(op.forward(c))) < 1e-4
    assert rel(op.grid_normal(c), op.grid(op.forward(c))) < 1e-4
    # batched Toeplitz application and a device-movable copy
    batch = torch.stack([c, 2 * c])
    out = op.toeplitz(True).to("cpu")(batch)
    assert out.shape == (2, R, *shape)
    assert rel(out[1], 2 * op.grid_normal(c)) < 1e-5


def test_gridding_is_calibrated_for_fully_sampled_frames():
    n = 24
    traj = fully_sampled_spiral(4, n, 96, n_interleaves_full=8)
    basis, _ = torch.linalg.qr(
        torch.randn(4, 2, dtype=torch.complex64, generator=torch.Generator().manual_seed(3))
    )
    i = torch.arange(n, dtype=torch.float32) - n // 2
    blob = torch.exp(-(i[:, None] ** 2 + i[None, :] ** 2) / (2 * 2.5**2)).to(torch.complex64)
    c = torch.stack([blob, 0.5j * blob.roll(2, 0)])
    maps = simulate_coil_maps(3, (n, n))
    op = SubspaceNufftOperator(traj, basis, (n, n), maps, pipe_menon_dcf(traj, (n, n)))
    assert rel(op.grid(op.forward(c)), c) < 0.05
    assert rel(grid_subspace(op.forward(c), traj, basis, (n, n), coil_maps=maps), c) < 0.05
    # coil maps estimated on the fly: same up to a smooth phase
    est = grid_subspace(op.forward(c), traj, basis, (n, n))
    assert rel(est.abs()[:, 8:16, 8:16], c.abs()[:, 8:16, 8:16]) < 0.05


def test_errors():
    op, _, _, _, _ = make_operator((16, 16), 1)
    with pytest.raises(ValueError, match="compressed images"):
        op.forward(torch.zeros(R + 1, 16, 16, dtype=torch.complex64))
    no_dcf = SubspaceNufftOperator(op.traj, op.basis, (16, 16))
    with pytest.raises(ValueError, match="pipe_menon_dcf"):
        no_dcf.grid(torch.zeros(1, T, S, dtype=torch.complex64))
