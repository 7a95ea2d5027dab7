import numpy as np
import pytest
import torch

from mrf_monai.acquisition.density import pipe_menon_dcf
from mrf_monai.acquisition.nufft import Nufft2D
from mrf_monai.acquisition.trajectory import fully_sampled_spiral, mrf_spiral_trajectory, radial_trajectory

N = 32


def smooth_image(n: int) -> torch.Tensor:
    i = torch.arange(n, dtype=torch.float32) - n // 2
    r2 = i[:, None] ** 2 + (0.8 * i[None, :]) ** 2
    return (torch.exp(-r2 / (2 * 3.0**2)) * torch.exp(1j * 0.05 * i[:, None])).to(torch.complex64)


def grid_points(points: np.ndarray, w: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    op = Nufft2D(torch.from_numpy(points.reshape(-1, 2)), image.shape)
    return op.adjoint(op.forward(image[None]) * w.reshape(1, -1))[0]


def check_fully_sampled(points: np.ndarray) -> None:
    w = pipe_menon_dcf(points, (N, N), per_readout=False)
    assert w.shape == points.shape[:-1] and bool((w > 0).all())
    # PSF: peak = sampled k-space area (a disc of radius 0.5: pi / 4), small sidelobes
    delta = torch.zeros(N, N, dtype=torch.complex64)
    delta[N // 2, N // 2] = 1
    psf = grid_points(points, w, delta)
    assert abs(psf[N // 2, N // 2].real.item() - np.pi / 4) < 0.05 * np.pi / 4
    i = torch.arange(N) - N // 2
    far = (i[:, None] ** 2 + i[None, :] ** 2) > 9
    assert psf.abs()[far].max().item() < 0.06 * psf.abs().max().item()
    # calibrated gridding of a smooth image (spectrum inside the disc)
    img = smooth_image(N)
    g = grid_points(points, w, img)
    assert ((g - img).norm() / img.norm()).item() < 0.05


def test_fully_sampled_spiral_dcf_is_calibrated():
    check_fully_sampled(fully_sampled_spiral(1, N, 96, n_interleaves_full=10)[0])


def test_radial_dcf_is_calibrated():
    check_fully_sampled(radial_trajectory(int(np.pi / 2 * N) + 2, 2 * N))


def test_per_readout_scaling_makes_each_frame_unbiased():
    traj, _ = mrf_spiral_trajectory(24, matrix=N, samples_per_readout=96, n_interleaves_full=10)
    w_union = pipe_menon_dcf(traj, (N, N), per_readout=False)
    w = pipe_menon_dcf(traj, (N, N))
    # rotated copies of one interleaf: every frame gets the same weights, summing to the union's area
    torch.testing.assert_close(w, w[:1].expand_as(w))
    assert w[0].sum().item() == pytest.approx(w_union.sum().item(), rel=1e-4)
    assert abs(w[0].sum().item() - np.pi / 4) < 0.1 * np.pi / 4  # disc area (+ Pipe-Menon edge boost)
    # readouts that are not rotations of each other: each frame rescaled to the union area
    scaled = traj * np.linspace(0.8, 1.0, 24, dtype=np.float32)[:, None, None]
    w2 = pipe_menon_dcf(scaled, (N, N))
    total = pipe_menon_dcf(scaled, (N, N), per_readout=False).sum().item()
    torch.testing.assert_close(w2.sum(1), torch.full((24,), total), rtol=1e-4, atol=0)
    # uniformly rotated frames: averaging all frames' griddings returns a smooth image
    seq, _ = mrf_spiral_trajectory(
        20, matrix=N, samples_per_readout=96, n_interleaves_full=10, ordering="sequential"
    )
    img = smooth_image(N)
    g = grid_points(seq, pipe_menon_dcf(seq, (N, N)) / 20, img)
    assert ((g - img).norm() / img.norm()).item() < 0.05
