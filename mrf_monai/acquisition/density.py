"""Density compensation for arbitrary 2D trajectories (Pipe and Menon iteration).

The sampling density is estimated with a Gaussian kernel ``K`` of standard deviation
``kernel_width / N`` cycles per pixel (``N`` = the larger matrix size) that integrates to 1
over k-space. The convolution ``(K * w)(k_i) = sum_j w_j K(k_i - k_j)`` is computed for any
trajectory with two NUFFTs: a type-1 of the weights onto an oversampled grid of Fourier
coefficients, a multiplication by the kernel's Fourier series (a Gaussian), and a type-2
back to the points. The Pipe-Menon fixed point ``w <- w / (K * w)`` then gives
``sum_j w_j K(k_i - k_j) = 1``: ``w`` is the k-space area (in cycles per pixel squared)
that each sample represents, so ``sum_j w_j f(k_j)`` approximates ``integral f(k) dk``.

Calibration (docs/interfaces.md, "Gridding calibration"): the leading axes of
``traj (..., S, 2)`` index readouts that are gridded on their own (MRF: one interleaf per
time frame). The density is estimated on the union of all readouts and then made
per-readout unbiased:

* readouts that are rotations of one design (same ``|k|`` profile, e.g. golden-angle spiral
  interleaves) all get the union weights averaged over readouts, times the number of
  readouts: the design's own weights, identical for every frame;
* other readouts get their union weights rescaled so that each readout's weights sum to the
  total area of the union.

Either way each frame's density-compensated adjoint has the right DC gain (the area of the
sampled k-space region), and gridding all ``n`` readouts with ``w / n`` approximates the
fully sampled union: for an image whose spectrum lies inside the sampled region it returns
the image, and gridding one frame returns the image plus aliasing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from .nufft import Nufft2D

__all__ = ["pipe_menon_dcf"]


def _fast_size(n: int) -> int:
    """Smallest even integer >= n whose prime factors are 2, 3, 5."""
    n = max(2, int(n))
    while True:
        m = n
        for p in (2, 3, 5):
            while m % p == 0:
                m //= p
        if m == 1 and n % 2 == 0:
            return n
        n += 1


def pipe_menon_dcf(
    traj: torch.Tensor | np.ndarray,
    image_shape: Sequence[int],
    n_iter: int = 15,
    kernel_width: float = 0.6,
    per_readout: bool = True,
    eps: float = 1e-4,
    backend: str = "auto",
) -> torch.Tensor:
    """Pipe-Menon density compensation weights for any 2D trajectory.

    Args:
        traj: ``(..., S, 2)`` or ``(M, 2)`` k-space points in cycles per pixel (torch or numpy).
        image_shape: ``(Nx, Ny)`` of the reconstructed image.
        n_iter: fixed-point iterations ``w <- w / (K * w)``.
        kernel_width: standard deviation of the Gaussian density kernel in units of
            ``1 / max(Nx, Ny)`` cycles per pixel; it must bridge the largest gap between
            neighbouring samples of the union (about 0.5 to 1 for Nyquist-sampled unions).
        per_readout: make each readout's own adjoint unbiased (see module docstring); the
            leading axes of ``traj`` index the ``prod(traj.shape[:-2])`` readouts. A ``(M, 2)``
            trajectory is one readout. Pass ``False`` (or reshape to ``(M, 2)``) to get the weights for
            gridding all points together.
        eps: NUFFT accuracy (the weights need little).
        backend: NUFFT backend (see :func:`mrf_monai.acquisition.nufft.make_nufft`).

    Returns:
        ``traj.shape[:-1]`` float32 tensor on the trajectory's device: k-space area per sample
        in cycles per pixel squared (per readout when ``per_readout``).
    """
    t = traj if isinstance(traj, torch.Tensor) else torch.as_tensor(np.asarray(traj))
    if t.ndim < 2 or t.shape[-1] != 2:
        raise ValueError(f"traj must have shape (..., S, 2) or (M, 2), got {tuple(t.shape)}.")
    if n_iter < 1:
        raise ValueError(f"n_iter must be >= 1, got {n_iter}.")
    n_readouts = int(np.prod(t.shape[:-2])) if t.ndim > 2 else 1
    pts = t.reshape(-1, 2)
    n = max(int(image_shape[0]), int(image_shape[1]))
    sigma_k = kernel_width / n
    # Fourier coefficients of the kernel fall below ~1e-7 at |m| = 0.9 / sigma_k
    g_size = _fast_size(math.ceil(2 * 0.9 / sigma_k))
    op = Nufft2D(pts, (g_size, g_size), eps=eps, backend=backend)
    m = torch.arange(g_size, device=op.device, dtype=torch.float32) - g_size // 2
    g1 = torch.exp(-2 * math.pi**2 * sigma_k**2 * m**2)
    window = (g1[:, None] * g1[None, :]).to(torch.complex64)

    def convolve(w: torch.Tensor) -> torch.Tensor:
        coeffs = op.adjoint(w.to(torch.complex64)[None])[0]
        return op.forward((coeffs * window)[None])[0].real

    w = torch.ones(pts.shape[0], dtype=torch.float32, device=op.device)
    for _ in range(n_iter):
        density = convolve(w)
        w = w / density.clamp_min(1e-12 * float(density.max()))
    if per_readout and n_readouts > 1:
        w = w.reshape(n_readouts, -1)
        radius = pts.reshape(n_readouts, -1, 2).to(w.device, torch.float32).norm(dim=-1)
        if bool(((radius - radius[:1]).abs() <= 1e-5).all()):
            w = w.mean(0, keepdim=True).expand_as(w) * n_readouts
        else:
            w = w * (w.sum() / w.sum(1, keepdim=True).clamp_min(1e-30))
    return w.reshape(t.shape[:-1]).to(torch.float32)
