import numpy as np
import pytest
import torch

from mrf_monai.acquisition.nufft import Nufft2D, available_backends, make_nufft


def direct_dft(k: np.ndarray, shape) -> np.ndarray:
    """The data contract's signal model as an explicit matrix (M, Nx*Ny)."""
    i = np.arange(shape[0]) - shape[0] // 2
    j = np.arange(shape[1]) - shape[1] // 2
    e = np.exp(
        -2j * np.pi * (k[:, 0, None, None] * i[None, :, None] + k[:, 1, None, None] * j[None, None, :])
    )
    return e.reshape(k.shape[0], -1)


@pytest.mark.parametrize("shape", [(12, 12), (11, 14)])
def test_finufft_matches_direct_dft_and_adjoint(shape):
    rng = np.random.default_rng(1)
    k = rng.uniform(-0.5, 0.5, (70, 2)).astype(np.float32)
    img = rng.standard_normal((3, *shape)) + 1j * rng.standard_normal((3, *shape))
    y = rng.standard_normal((3, 70)) + 1j * rng.standard_normal((3, 70))
    e = direct_dft(k.astype(np.float64), shape)
    op = Nufft2D(torch.from_numpy(k), shape, n_trans_hint=3)
    fwd = op.forward(torch.from_numpy(img).to(torch.complex64)).numpy()
    ref = img.reshape(3, -1) @ e.T
    assert np.abs(fwd - ref).max() / np.abs(ref).max() < 1e-4
    adj = op.adjoint(torch.from_numpy(y).to(torch.complex64)).numpy().reshape(3, -1)
    ref_adj = y @ e.conj()
    assert np.abs(adj - ref_adj).max() / np.abs(ref_adj).max() < 1e-4
    # single image / single vector and double precision
    one = op.forward(torch.from_numpy(img[0]))
    assert one.dtype == torch.complex128 and one.shape == (70,)
    np.testing.assert_allclose(one.numpy(), ref[0], rtol=0, atol=1e-6 * np.abs(ref).max())


@pytest.mark.skipif("torchkbnufft" not in available_backends(), reason="torchkbnufft not installed")
def test_torchkbnufft_backend_same_convention():
    rng = np.random.default_rng(2)
    shape = (10, 9)
    k = rng.uniform(-0.5, 0.5, (40, 2)).astype(np.float32)
    img = torch.from_numpy(rng.standard_normal((2, *shape)) + 1j * rng.standard_normal((2, *shape))).to(
        torch.complex64
    )
    a = make_nufft(k, shape, backend="finufft")
    b = make_nufft(k, shape, backend="torchkbnufft")
    fa, fb = a.forward(img), b.forward(img)
    assert ((fa - fb).norm() / fa.norm()).item() < 1e-2
    ya = a.adjoint(fa)
    yb = b.adjoint(fa)
    assert ((ya - yb).norm() / ya.norm()).item() < 1e-2


def test_errors_are_explicit():
    with pytest.raises(ValueError, match=r"\(M, 2\)"):
        Nufft2D(torch.zeros(5, 3), (8, 8))
    op = Nufft2D(torch.zeros(5, 2), (8, 8))
    with pytest.raises(ValueError, match="forward expects"):
        op.forward(torch.zeros(1, 8, 7, dtype=torch.complex64))
    with pytest.raises(ValueError, match="backend"):
        Nufft2D(torch.zeros(5, 2), (8, 8), backend="magic")
