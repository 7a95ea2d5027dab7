"""Subspace MRF acquisition operator: temporal basis, coil sensitivities and NUFFT.

For compressed images ``c (R, Nx, Ny)`` (the TSMI ``x[t] = sum_r basis[t, r] c[r]``), coil
maps ``S (C, Nx, Ny)`` and one readout ``k[t, s]`` per frame, the operator is

    A c [coil, t, s] = sum_r basis[t, r] NUFFT(S_coil * c_r)(k[t, s])

with the data contract's NUFFT sign and index convention. Variants provided:

* ``forward`` ``A``: one type-2 NUFFT over all ``T * S`` points with ``n_trans = R * C``,
  combined with the basis frame by frame.
* ``adjoint`` ``A^H`` (exact, no density compensation): one type-1 NUFFT with
  ``n_trans = R * C`` of ``conj(basis[t, r]) * k``, then ``sum_coil conj(S_coil) * .``.
* ``grid`` ``G = A^H D``: the same with the density compensation ``D = dcf[t, s]``; this is the
  calibrated "gridding" reconstruction (the SVD-MRF image, the diffusion model's condition).
* ``normal`` ``A^H A`` and ``grid_normal`` ``A^H D A`` (= ``grid(forward(c))``) applied with
  Toeplitz embedding: ``R x R`` convolution kernels on a ``2 Nx x 2 Ny`` grid, computed once
  with one type-1 NUFFT of the weights ``conj(basis[t, r]) basis[t, q] (dcf[t, s])``, applied
  with FFTs in pure torch (any device, no NUFFT library needed); coil maps act in image space.
  The simulator makes training conditions with ``grid_normal(reference)``, which equals the
  gridding of the raw data of a noise-free acquisition.

Coil combination uses ``sum_coil conj(S_coil) * image_coil`` without further normalisation:
pass maps normalised to ``sum_coil |S_coil|^2 = 1`` inside the object
(:func:`mrf_monai.acquisition.coils.estimate_coil_maps_walsh` does).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from .nufft import Nufft2D

__all__ = ["SubspaceNufftOperator", "ToeplitzSubspaceNormal", "grid_subspace", "toeplitz_kernels"]


def _tensor(x, device=None, dtype=None) -> torch.Tensor:
    t = x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
    return t.to(device=device, dtype=dtype) if (device is not None or dtype is not None) else t


class ToeplitzSubspaceNormal:
    """``A^H W A`` of a subspace NUFFT operator, applied with FFTs (pure torch, any device).

    Args:
        kernel_hat: ``(R, R, 2 Nx, 2 Ny)`` complex: FFTs of the Toeplitz kernels
            (see :func:`toeplitz_kernels`).
        image_shape: ``(Nx, Ny)``.
        coil_maps: ``(C, Nx, Ny)`` or ``None`` (single coil).

    Calling it on ``c (..., R, Nx, Ny)`` returns ``(..., R, Nx, Ny)``; ``coil_maps`` may be
    overridden per call (the kernels do not depend on the coils).
    """

    def __init__(
        self,
        kernel_hat: torch.Tensor,
        image_shape: Sequence[int],
        coil_maps: torch.Tensor | None = None,
    ) -> None:
        self.kernel_hat = kernel_hat
        self.image_shape = (int(image_shape[0]), int(image_shape[1]))
        self.coil_maps = coil_maps

    @property
    def rank(self) -> int:
        return int(self.kernel_hat.shape[0])

    def to(self, device: torch.device | str) -> ToeplitzSubspaceNormal:
        """A copy with the kernels (and coil maps) on ``device``."""
        maps = None if self.coil_maps is None else self.coil_maps.to(device)
        return ToeplitzSubspaceNormal(self.kernel_hat.to(device), self.image_shape, maps)

    def __call__(self, c: torch.Tensor, coil_maps: torch.Tensor | None = None) -> torch.Tensor:
        nx, ny = self.image_shape
        if c.ndim < 3 or tuple(c.shape[-3:]) != (self.rank, nx, ny):
            raise ValueError(
                f"expected (..., {self.rank}, {nx}, {ny}) compressed images, got {tuple(c.shape)}."
            )
        maps = self.coil_maps if coil_maps is None else coil_maps
        kh = self.kernel_hat.to(c.device)
        c = c.to(kh.dtype)
        x = c.unsqueeze(-4) if maps is None else maps.to(c.device, kh.dtype)[:, None] * c.unsqueeze(-4)
        xh = torch.fft.fft2(x, s=(2 * nx, 2 * ny))  # zero-padded to the 2N grid
        yh = torch.einsum("rqxy,...cqxy->...crxy", kh, xh)
        y = torch.fft.ifft2(yh)[..., :nx, :ny]
        if maps is None:
            return y.squeeze(-4)
        return (maps.to(c.device, kh.dtype).conj()[:, None] * y).sum(-4)


def toeplitz_kernels(
    traj: torch.Tensor | np.ndarray,
    basis: torch.Tensor,
    image_shape: Sequence[int],
    dcf: torch.Tensor | None = None,
    eps: float = 1e-6,
    backend: str = "auto",
) -> torch.Tensor:
    """FFTs of the Toeplitz kernels of ``A^H D A`` for a subspace NUFFT operator.

    ``P[r, q](d) = sum_{t,s} conj(basis[t, r]) basis[t, q] dcf[t, s] exp(2 pi 1j k[t, s] . d)``
    for pixel offsets ``d`` in ``[-N, N)`` (one type-1 NUFFT with ``n_trans = R * R`` on the
    ``2 Nx x 2 Ny`` grid), arranged circularly and Fourier transformed.

    Args:
        traj: ``(T, S, 2)`` cycles per pixel. basis: ``(T, R)`` complex.
        dcf: ``(T, S)`` density compensation or ``None`` (unit weights: the exact normal operator).

    Returns:
        ``(R, R, 2 Nx, 2 Ny)`` complex64 on the trajectory's device.
    """
    t = _tensor(traj)
    nx, ny = int(image_shape[0]), int(image_shape[1])
    b = _tensor(basis, device=t.device).to(torch.complex64)
    n_t, n_s = int(t.shape[0]), int(t.shape[1])
    rank = int(b.shape[1])
    w = torch.einsum("tr,tq->rqt", b.conj(), b)[..., None].expand(rank, rank, n_t, n_s)
    if dcf is not None:
        w = w * _tensor(dcf, device=t.device).to(torch.float32).reshape(1, 1, n_t, n_s)
    op = Nufft2D(t.reshape(-1, 2), (2 * nx, 2 * ny), eps=eps, backend=backend)
    p = op.adjoint(w.reshape(rank * rank, -1)).reshape(rank, rank, 2 * nx, 2 * ny)
    # mode index m = i - N  ->  circular position m mod 2N
    p = torch.roll(p, shifts=(-nx, -ny), dims=(-2, -1))
    return torch.fft.fft2(p)


class SubspaceNufftOperator:
    """MRF acquisition operator in a temporal subspace (see module docstring).

    Args:
        traj: ``(T, S, 2)`` k-space points per frame, cycles per pixel.
        basis: ``(T, R)`` complex temporal basis (orthonormal columns).
        image_shape: ``(Nx, Ny)``.
        coil_maps: ``(C, Nx, Ny)`` complex sensitivities, or ``None`` for one coil.
        dcf: ``(T, S)`` density compensation (e.g. :func:`pipe_menon_dcf` of ``traj``), needed
            by :meth:`grid` and :meth:`grid_normal`.
        eps: NUFFT accuracy. backend: NUFFT backend (``"auto"``, ``"finufft"``, ...).
        device: device of all tensors (default: the trajectory's).
    """

    def __init__(
        self,
        traj: torch.Tensor | np.ndarray,
        basis: torch.Tensor | np.ndarray,
        image_shape: Sequence[int],
        coil_maps: torch.Tensor | np.ndarray | None = None,
        dcf: torch.Tensor | np.ndarray | None = None,
        eps: float = 1e-6,
        backend: str = "auto",
        device: torch.device | str | None = None,
    ) -> None:
        t = _tensor(traj, device=device)
        if t.ndim != 3 or t.shape[-1] != 2:
            raise ValueError(f"traj must be (T, S, 2), got {tuple(t.shape)}.")
        self.device = t.device
        self.traj = t
        self.n_frames, self.n_samples = int(t.shape[0]), int(t.shape[1])
        b = _tensor(basis, device=self.device).to(torch.complex64)
        if b.ndim != 2 or b.shape[0] != self.n_frames:
            raise ValueError(
                f"basis must be (T, R) with T = {self.n_frames} frames of traj, got {tuple(b.shape)}; "
                "truncate the basis rows to the acquired frames."
            )
        self.basis = b
        self.rank = int(b.shape[1])
        self.image_shape = (int(image_shape[0]), int(image_shape[1]))
        if coil_maps is not None:
            coil_maps = _tensor(coil_maps, device=self.device).to(torch.complex64)
            if coil_maps.ndim != 3 or tuple(coil_maps.shape[1:]) != self.image_shape:
                raise ValueError(f"coil_maps must be (C, {self.image_shape}), got {tuple(coil_maps.shape)}.")
        self.coil_maps = coil_maps
        self.n_coils = 1 if coil_maps is None else int(coil_maps.shape[0])
        if dcf is not None:
            dcf = _tensor(dcf, device=self.device).to(torch.float32)
            if tuple(dcf.shape) != (self.n_frames, self.n_samples):
                raise ValueError(
                    f"dcf must be (T, S) = {(self.n_frames, self.n_samples)}, got {tuple(dcf.shape)}."
                )
        self.dcf = dcf
        self.eps = eps
        self.backend = backend
        self.nufft = Nufft2D(t.reshape(-1, 2), self.image_shape, eps=eps, backend=backend)
        self._toeplitz: dict[bool, ToeplitzSubspaceNormal] = {}

    # -------------------------------------------------------------- A, A^H, gridding
    def forward(self, c: torch.Tensor) -> torch.Tensor:
        """``A c``: ``(R, Nx, Ny)`` -> k-space ``(C, T, S)``."""
        self._check_image(c)
        c = c.to(self.device, torch.complex64)
        x = c[None] if self.coil_maps is None else self.coil_maps[:, None] * c[None]  # (C, R, Nx, Ny)
        z = self.nufft.forward(x.reshape(-1, *self.image_shape))
        z = z.reshape(self.n_coils, self.rank, self.n_frames, self.n_samples)
        return torch.einsum("tr,crts->cts", self.basis, z)

    __call__ = forward

    def adjoint(self, kspace: torch.Tensor) -> torch.Tensor:
        """Exact adjoint ``A^H`` (no density compensation): ``(C, T, S)`` -> ``(R, Nx, Ny)``."""
        return self._combine(self._backproject(kspace, None))

    def grid(self, kspace: torch.Tensor) -> torch.Tensor:
        """Calibrated gridding ``A^H D k``: density compensated, coil combined, ``(R, Nx, Ny)``."""
        return self._combine(self._backproject(kspace, self._require_dcf()))

    def grid_coils(self, kspace: torch.Tensor) -> torch.Tensor:
        """Density-compensated subspace images of each coil, ``(C, T, S)`` -> ``(C, R, Nx, Ny)``.

        No coil maps are applied (works for any number of coils); used to estimate coil maps.
        """
        return self._backproject(kspace, self._require_dcf(), any_coils=True)

    def adjoint_coils(self, kspace: torch.Tensor) -> torch.Tensor:
        """Exact adjoint (no density compensation) of each coil, ``(C, T, S)`` -> ``(C, R, Nx, Ny)``.

        No coil maps are applied (works for any number of coils).
        """
        return self._backproject(kspace, None, any_coils=True)

    # -------------------------------------------------------------- normal operators
    def toeplitz(self, density_compensated: bool = False) -> ToeplitzSubspaceNormal:
        """The Toeplitz normal operator ``A^H A`` (or ``A^H D A`` when ``density_compensated``).

        Kernels are computed on first use and cached; ``.to(device)`` moves the result.
        """
        key = bool(density_compensated)
        if key not in self._toeplitz:
            dcf = self._require_dcf() if key else None
            kh = toeplitz_kernels(
                self.traj, self.basis, self.image_shape, dcf, eps=self.eps, backend=self.backend
            )
            self._toeplitz[key] = ToeplitzSubspaceNormal(kh, self.image_shape, self.coil_maps)
        return self._toeplitz[key]

    def normal(self, c: torch.Tensor) -> torch.Tensor:
        """``A^H A c`` with Toeplitz embedding; ``c (..., R, Nx, Ny)``."""
        return self.toeplitz(False)(c)

    def grid_normal(self, c: torch.Tensor) -> torch.Tensor:
        """``A^H D A c`` = ``grid(forward(c))`` with Toeplitz embedding; ``c (..., R, Nx, Ny)``.

        The noise-free gridding image (training condition) of the compressed TSMI ``c``.
        """
        return self.toeplitz(True)(c)

    normal_dcf = grid_normal

    # -------------------------------------------------------------- helpers
    def _check_image(self, c: torch.Tensor) -> None:
        if tuple(c.shape) != (self.rank, *self.image_shape):
            raise ValueError(
                f"expected compressed images (R, Nx, Ny) = {(self.rank, *self.image_shape)}, "
                f"got {tuple(c.shape)}."
            )

    def _require_dcf(self) -> torch.Tensor:
        if self.dcf is None:
            raise ValueError(
                "this operation needs density compensation: build the operator with "
                "dcf=pipe_menon_dcf(traj, image_shape)."
            )
        return self.dcf

    def _backproject(
        self, kspace: torch.Tensor, dcf: torch.Tensor | None, any_coils: bool = False
    ) -> torch.Tensor:
        k = _tensor(kspace, device=self.device).to(torch.complex64)
        if k.ndim == 2:
            k = k[None]
        n_coils = int(k.shape[0])
        if (
            k.ndim != 3
            or tuple(k.shape[1:]) != (self.n_frames, self.n_samples)
            or (not any_coils and n_coils != self.n_coils)
        ):
            raise ValueError(
                f"k-space must be (C, T, S) = {(self.n_coils, self.n_frames, self.n_samples)}, "
                f"got {tuple(kspace.shape)}."
            )
        if dcf is not None:
            k = k * dcf
        z = torch.einsum("tr,cts->crts", self.basis.conj(), k).reshape(n_coils * self.rank, -1)
        return self.nufft.adjoint(z).reshape(n_coils, self.rank, *self.image_shape)

    def _combine(self, x: torch.Tensor) -> torch.Tensor:
        if self.coil_maps is None:
            return x[0]
        return (self.coil_maps.conj()[:, None] * x).sum(0)


def grid_subspace(
    kspace: torch.Tensor | np.ndarray,
    traj: torch.Tensor | np.ndarray,
    basis: torch.Tensor | np.ndarray,
    image_shape: Sequence[int],
    coil_maps: torch.Tensor | np.ndarray | None = None,
    dcf: torch.Tensor | np.ndarray | None = None,
    **kwargs,
) -> torch.Tensor:
    """Calibrated gridding of MRF k-space into the subspace (the aliased SVD-MRF image).

    The one-call form of :meth:`mrf_monai.acquisition.gridding.SubspaceGridder.grid` (the
    gridding front end; use a ``SubspaceGridder`` to reuse its caches across slices).

    Args:
        kspace: ``(C, T, S)`` (or ``(T, S)`` for one coil) complex samples.
        traj: ``(T, S, 2)`` cycles per pixel. basis: ``(T, R)``.
        image_shape: ``(Nx, Ny)``.
        coil_maps: ``(C, Nx, Ny)``; ``None`` with several coils estimates Walsh maps from the
            per-coil gridded subspace images.
        dcf: ``(T, S)``; ``None`` computes :func:`pipe_menon_dcf` of ``traj``.
        kwargs: ``eps``, ``backend``, ``device`` (default: the trajectory's) and the other
            options of ``SubspaceGridder``.

    Returns:
        ``(R, Nx, Ny)`` complex64.
    """
    from .gridding import SubspaceGridder  # the front end builds on this module

    if kwargs.get("device") is None:
        kwargs["device"] = traj.device if isinstance(traj, torch.Tensor) else None
    return SubspaceGridder(**kwargs).grid(kspace, traj, basis, image_shape, coil_maps=coil_maps, dcf=dcf)
