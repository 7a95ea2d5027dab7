import numpy as np
import torch
from monai.data import MetaTensor
from monai.utils import TransformBackends

from mrf_monai.acquisition.coils import simulate_coil_maps
from mrf_monai.acquisition.density import pipe_menon_dcf
from mrf_monai.acquisition.operators import SubspaceNufftOperator
from mrf_monai.acquisition.trajectory import fully_sampled_spiral
from mrf_monai.transforms.gridding import GridSubspace, GridSubspaced

N, T = 24, 4


class FakeDictionary:
    """Anything with a .basis attribute works as a dictionary."""

    def __init__(self, basis):
        self.basis = basis


def make_data(n_coils):
    traj = fully_sampled_spiral(T, N, 96, n_interleaves_full=8)
    basis, _ = torch.linalg.qr(
        torch.randn(T, 2, dtype=torch.complex64, generator=torch.Generator().manual_seed(5))
    )
    i = torch.arange(N, dtype=torch.float32) - N // 2
    blob = torch.exp(-(i[:, None] ** 2 + i[None, :] ** 2) / (2 * 2.5**2)).to(torch.complex64)
    c = torch.stack([blob, 0.3 * blob])
    maps = simulate_coil_maps(n_coils, (N, N)) if n_coils > 1 else None
    kspace = SubspaceNufftOperator(traj, basis, (N, N), maps, pipe_menon_dcf(traj, (N, N))).forward(c)
    return kspace, traj, basis, c


def test_array_transform_single_coil_matches_reference():
    kspace, traj, basis, c = make_data(1)
    t = GridSubspace(basis, (N, N))
    assert TransformBackends.TORCH in t.backend
    out = t(kspace.numpy(), traj)  # numpy in, tensor out
    assert isinstance(out, torch.Tensor) and out.shape == (2, N, N)
    assert ((out - c).norm() / c.norm()).item() < 0.05
    out2 = t(kspace[0], traj)  # (T, S) single coil, cached dcf
    torch.testing.assert_close(out2, out)


def test_dict_transform_multicoil_writes_metatensor_with_affine():
    kspace, traj, basis, c = make_data(4)
    affine = np.diag([1.0, 1.0, 5.0, 1.0])
    d = GridSubspaced(FakeDictionary(basis))(
        {"kspace": kspace, "traj": traj, "matrix": (N, N), "affine": affine}
    )
    cond = d["cond"]
    assert isinstance(cond, MetaTensor) and cond.shape == (2, N, N) and cond.dtype == torch.complex64
    np.testing.assert_allclose(cond.affine.numpy(), affine)
    # estimated coil maps: magnitude reproduced in the object (phase is arbitrary)
    core = slice(6, 18)
    err = (cond.abs()[:, core, core] - c.abs()[:, core, core]).norm() / c[:, core, core].norm()
    assert err.item() < 0.05
