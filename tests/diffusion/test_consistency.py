# Copyright (c) mrf_monai developers.
# Licensed under the Apache License, Version 2.0.
"""The k-space data-consistency plug-in of the sampler (``diffusion/consistency.py``).

``data/dc_reference.pt`` holds a small problem and the output of the data-consistency step as
it was before the plug-in existed (commit 21a3716: ``IDDPMReconstructor._data_consistency`` on
``LRTVReconstructor(preconditioned=True).problem``; 2 coils, 12 x 12, 8 frames x 48 samples,
rank 2, 5 CG steps, ``dc_lambda = 0.1``): the plug-in must reproduce those numbers.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mrf_monai.acquisition.gridding import SubspaceGridder
from mrf_monai.acquisition.operators import ToeplitzSubspaceNormal
from mrf_monai.acquisition.problem import SliceProblem
from mrf_monai.diffusion.consistency import KSpaceDataConsistency
from mrf_monai.transforms.complex import channels_to_complex, complex_to_channels

REFERENCE = Path(__file__).parent / "data" / "dc_reference.pt"


def reference() -> dict[str, torch.Tensor]:
    return torch.load(REFERENCE, weights_only=True)


def saved_problem(ref: dict[str, torch.Tensor]) -> SliceProblem:
    shape = tuple(ref["grid"].shape[-2:])
    normal = ToeplitzSubspaceNormal(ref["kernel_hat"], shape, ref["coil_maps"])
    return SliceProblem(ref["grid"], ref["grid"], normal, ref["coil_maps"], True)


def close_to(out: torch.Tensor, expected: torch.Tensor) -> None:
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5 * float(expected.abs().max()))


def test_reproduces_the_previous_data_consistency_step():
    ref = reference()
    dc = KSpaceDataConsistency(
        saved_problem(ref), float(ref["scale"]), ref["channel_scale"], n_steps=5, lam=0.1
    )
    out = dc(ref["x0"], 0)
    assert out.shape == ref["x0"].shape and out.dtype == ref["x0"].dtype
    close_to(out, ref["x0_dc"])


def test_front_end_rebuilds_the_saved_problem():
    ref = reference()
    p = SubspaceGridder(coil_maps="walsh").problem(  # the reference was made with Walsh maps
        ref["kspace"], ref["traj"], ref["basis"], tuple(ref["grid"].shape[-2:])
    )
    close_to(p.grid, ref["grid"])
    close_to(p.normal.kernel_hat, ref["kernel_hat"])
    close_to(p.coil_maps, ref["coil_maps"])
    dc = KSpaceDataConsistency(p, float(ref["scale"]), ref["channel_scale"])
    close_to(dc(ref["x0"], 3), ref["x0_dc"])


def test_many_steps_solve_the_proximal_system_exactly():
    """Dense oracle: ``(N + lam I) x = rhs / scale + lam x0_hat`` by ``torch.linalg.solve``."""
    ref = reference()
    p = saved_problem(ref)
    scale, w = float(ref["scale"]), ref["channel_scale"]
    dc = KSpaceDataConsistency(p, scale, w, n_steps=150, lam=0.1)
    x0 = ref["x0"][:1]
    out = dc(x0, 0)
    rank, nx, ny = p.grid.shape
    n = rank * nx * ny
    eye = torch.eye(n, dtype=torch.complex64).reshape(n, rank, nx, ny)
    dense = p.normal(eye).reshape(n, n).T.to(torch.complex128)  # column j = N e_j
    lam = dc.lam_abs
    x_hat = channels_to_complex(x0 / w[:, None, None], dim=1)[0].reshape(-1).to(torch.complex128)
    b = (p.rhs / scale).reshape(-1).to(torch.complex128) + lam * x_hat
    x = torch.linalg.solve(dense + lam * torch.eye(n, dtype=torch.complex128), b)
    expected = complex_to_channels(x.reshape(1, rank, nx, ny).to(torch.complex64), dim=1) * w[:, None, None]
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-4 * float(expected.abs().max()))
    # lam_abs = lam * ||N|| from the power iteration
    top = float(torch.linalg.eigvalsh(0.5 * (dense + dense.mH)).max())
    assert abs(lam / 0.1 - top) < 0.05 * top


def test_output_keeps_device_and_dtype_and_nothing_is_copied_on_cpu():
    ref = reference()
    p = saved_problem(ref)
    dc = KSpaceDataConsistency(p, float(ref["scale"]), ref["channel_scale"], n_steps=2)
    kernel = p.normal.kernel_hat.data_ptr()
    for i, dtype in enumerate((torch.float32, torch.bfloat16, torch.float32)):
        x0 = ref["x0"].to(dtype)
        out = dc(x0, i)
        assert out.device == x0.device and out.dtype == dtype and out.shape == x0.shape
    # the problem was used where it was: the same object, the same kernel storage
    assert dc.problem is p and dc.problem.normal.kernel_hat.data_ptr() == kernel
    assert dc.device == torch.device("cpu")
    # the step runs in single precision even inside the network's autocast region
    with torch.autocast("cpu", dtype=torch.bfloat16):
        autocast = dc(ref["x0"], 0)
    assert torch.equal(autocast, dc(ref["x0"], 0))
    # zero steps leave x0 as it is (up to the channel scaling round trip)
    zero = KSpaceDataConsistency(p, float(ref["scale"]), ref["channel_scale"], n_steps=0)
    close_to(zero(ref["x0"], 0), ref["x0"])


def test_bad_arguments_are_clear_errors():
    ref = reference()
    p = saved_problem(ref)
    with pytest.raises(ValueError, match="channel_scale"):
        KSpaceDataConsistency(p, 1.0, torch.ones(3))
    with pytest.raises(ValueError, match="scale"):
        KSpaceDataConsistency(p, 0.0)
    dc = KSpaceDataConsistency(p, 1.0)
    with pytest.raises(ValueError, match="real channels"):
        dc(torch.zeros(1, 6, 12, 12), 0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_on_cuda_the_step_stays_on_the_device_without_host_round_trips(monkeypatch):
    ref = reference()
    p = saved_problem(ref)  # built on the CPU, moved once
    moves = []
    real_to = SliceProblem.to

    def counting_to(self, device):
        moved = real_to(self, device)
        if moved is not self:
            moves.append(str(device))
        return moved

    monkeypatch.setattr(SliceProblem, "to", counting_to)
    dc = KSpaceDataConsistency(p, float(ref["scale"]), ref["channel_scale"], n_steps=5, lam=0.1)
    x0 = ref["x0"].cuda()
    first = dc(x0, 0)  # moves the problem and runs the power iteration (one host sync)
    torch.cuda.set_sync_debug_mode("error")  # any later host round trip raises
    try:
        second = dc(first, 1)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert len(moves) == 1 and moves[0].startswith("cuda") and first.is_cuda and second.is_cuda
    assert all(t.is_cuda for t in (dc.problem.rhs, dc.problem.normal.kernel_hat, dc.problem.coil_maps))
    torch.testing.assert_close(
        first.cpu(), ref["x0_dc"], rtol=1e-3, atol=1e-3 * float(ref["x0_dc"].abs().max())
    )
