"""CUDA paths (skipped without a GPU): NUFFT backends on CUDA and the Toeplitz normal on GPU."""

import numpy as np
import pytest
import torch

from mrf_monai.acquisition.coils import simulate_coil_maps
from mrf_monai.acquisition.density import pipe_menon_dcf
from mrf_monai.acquisition.nufft import Nufft2D, available_backends
from mrf_monai.acquisition.operators import SubspaceNufftOperator
from mrf_monai.acquisition.trajectory import mrf_spiral_trajectory

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
GPU_BACKENDS = [b for b in ("cufinufft", "torchkbnufft") if b in available_backends()]


def rel(a, b):
    return ((a - b).norm() / b.norm()).item()


@pytest.mark.parametrize("backend", GPU_BACKENDS)
def test_cuda_nufft_matches_cpu_finufft(backend):
    rng = np.random.default_rng(0)
    shape = (20, 17)
    k = torch.from_numpy(rng.uniform(-0.5, 0.5, (300, 2)).astype(np.float32))
    img = torch.randn(3, *shape, dtype=torch.complex64)
    cpu = Nufft2D(k, shape, backend="finufft")
    gpu = Nufft2D(k.cuda(), shape, backend=backend)
    y = gpu.forward(img.cuda())
    assert y.is_cuda
    assert rel(y.cpu(), cpu.forward(img)) < 1e-2
    assert rel(gpu.adjoint(y).cpu(), cpu.adjoint(y.cpu())) < 1e-2


@pytest.mark.parametrize("backend", GPU_BACKENDS)
def test_cuda_operator_and_toeplitz(backend):
    shape, T, S, R, C = (24, 24), 8, 64, 3, 4
    traj, _ = mrf_spiral_trajectory(T, 24, S, n_interleaves_full=8)
    basis, _ = torch.linalg.qr(torch.randn(T, R, dtype=torch.complex64))
    maps = simulate_coil_maps(C, shape)
    dcf = pipe_menon_dcf(traj, shape)
    cpu = SubspaceNufftOperator(traj, basis, shape, maps, dcf)
    gpu = SubspaceNufftOperator(
        torch.from_numpy(traj).cuda(), basis.cuda(), shape, maps.cuda(), dcf.cuda(), backend=backend
    )
    c = torch.randn(R, *shape, dtype=torch.complex64)
    assert rel(gpu.forward(c.cuda()).cpu(), cpu.forward(c)) < 1e-2
    assert rel(gpu.grid_normal(c.cuda()).cpu(), cpu.grid(cpu.forward(c))) < 1e-2
    # kernels computed on CPU (finufft), applied on the GPU in pure torch
    tn = cpu.toeplitz(True).to("cuda")
    assert rel(tn(c.cuda()).cpu(), cpu.grid_normal(c)) < 1e-5
