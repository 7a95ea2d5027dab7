"""2D non-uniform FFT with the data contract's sign and index conventions.

The forward model (data contract, section 2) of an image ``m`` of shape ``(Nx, Ny)`` at a
k-space point ``(kx, ky)`` in cycles per pixel is

    s(kx, ky) = sum_ij m[i, j] exp(-2 pi 1j (kx (i - Nx//2) + ky (j - Ny//2)))

:class:`Nufft2D` evaluates it (``forward``, a type-2 NUFFT) and its exact adjoint
(``adjoint``, a type-1 NUFFT). A batch of images is transformed in one library call
(``n_trans``), so that all frames, coils and subspace components share one sort of the
points.

Backends: ``finufft`` (CPU), ``cufinufft`` (CUDA, when importable) and ``torchkbnufft``
(any device, slower and less accurate, used on CUDA when cufinufft is missing).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

__all__ = ["Nufft2D", "make_nufft", "available_backends"]

_BACKENDS = ("finufft", "cufinufft", "torchkbnufft")
#: below this many (points + oversampled grid cells) x transforms finufft runs single-threaded
_SMALL_WORK = 2_000_000


def _importable(name: str) -> bool:
    try:
        __import__(name)
    except ImportError:
        return False
    return True


def available_backends() -> list[str]:
    """Names of the NUFFT backends importable in this environment."""
    return [b for b in _BACKENDS if _importable(b)]


def _as_traj_tensor(traj: torch.Tensor | np.ndarray, device: torch.device | str | None) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(traj) if not isinstance(traj, torch.Tensor) else traj)
    if device is not None:
        t = t.to(device)
    if t.ndim != 2 or t.shape[-1] != 2:
        raise ValueError(
            f"traj must have shape (M, 2) (kx, ky in cycles per pixel), got {tuple(t.shape)}; "
            "flatten readouts with traj.reshape(-1, 2)."
        )
    if not torch.is_floating_point(t):
        raise TypeError(f"traj must be a real floating-point array, got {t.dtype}.")
    return t


class Nufft2D:
    """Type-2 (forward) and type-1 (adjoint) NUFFT for one fixed set of k-space points.

    Args:
        traj: ``(M, 2)`` k-space points ``(kx, ky)`` in cycles per pixel (``[-0.5, 0.5)``
            is the edge of k-space of the ``image_shape`` matrix); torch tensor or numpy.
        image_shape: ``(Nx, Ny)``; axis -2 of the images is ``i`` (pairs with ``kx``),
            axis -1 is ``j`` (pairs with ``ky``).
        n_trans_hint: number of images per call to plan for in advance (optional; plans for
            other batch sizes are made on first use and kept).
        eps: requested relative accuracy (finufft / cufinufft).
        device: device of the inputs and outputs; ``None`` takes the trajectory's device.
        backend: ``"auto"`` (finufft on CPU; cufinufft, else torchkbnufft on CUDA),
            ``"finufft"``, ``"cufinufft"`` or ``"torchkbnufft"``.
        n_threads: CPU threads for finufft (``None``: one thread for small transforms, else
            the library default).

    Inputs and outputs are complex torch tensors on ``device``: ``forward`` maps
    ``(B, Nx, Ny) -> (B, M)``, ``adjoint`` maps ``(B, M) -> (B, Nx, Ny)``; a single image
    ``(Nx, Ny)`` / sample vector ``(M,)`` is accepted too. Single precision (complex64)
    by default; complex128 inputs are transformed in double precision with finufft.
    """

    def __init__(
        self,
        traj: torch.Tensor | np.ndarray,
        image_shape: Sequence[int],
        n_trans_hint: int | None = None,
        eps: float = 1e-6,
        device: torch.device | str | None = None,
        backend: str = "auto",
        n_threads: int | None = None,
    ) -> None:
        traj_t = _as_traj_tensor(traj, device)
        self.device = traj_t.device
        self.image_shape = (int(image_shape[0]), int(image_shape[1]))
        if min(self.image_shape) < 2:
            raise ValueError(f"image_shape must be at least 2 x 2, got {self.image_shape}.")
        self.n_points = int(traj_t.shape[0])
        self.eps = float(eps)
        self.n_threads = n_threads
        self.backend = self._choose_backend(backend)
        self._traj = traj_t.to(torch.float64)
        # points in radians; finufft needs them in [-3 pi, 3 pi], the data are periodic
        self._plans: dict[tuple, object] = {}
        if self.backend == "torchkbnufft":
            self._init_torchkbnufft()
        if n_trans_hint is not None and self.backend != "torchkbnufft":
            for kind in (1, 2):
                self._plan(kind, int(n_trans_hint), torch.complex64)

    # ------------------------------------------------------------------ public API
    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Type-2 NUFFT: ``(B, Nx, Ny)`` (or ``(Nx, Ny)``) image -> ``(B, M)`` samples."""
        squeeze = image.ndim == 2
        x = image[None] if squeeze else image
        if x.ndim != 3 or tuple(x.shape[-2:]) != self.image_shape:
            raise ValueError(
                f"forward expects images of shape (B, {self.image_shape[0]}, {self.image_shape[1]}), "
                f"got {tuple(image.shape)}."
            )
        x = self._as_complex(x)
        if self.backend == "torchkbnufft":
            y = self._tkb_forward(x)
        else:
            y = self._execute(2, x)
        return y[0] if squeeze else y

    def adjoint(self, kspace: torch.Tensor) -> torch.Tensor:
        """Type-1 NUFFT (exact adjoint of :meth:`forward`): ``(B, M)`` -> ``(B, Nx, Ny)``."""
        squeeze = kspace.ndim == 1
        y = kspace[None] if squeeze else kspace
        if y.ndim != 2 or y.shape[-1] != self.n_points:
            raise ValueError(
                f"adjoint expects k-space of shape (B, {self.n_points}), got {tuple(kspace.shape)}."
            )
        y = self._as_complex(y)
        if self.backend == "torchkbnufft":
            x = self._tkb_adjoint(y)
        else:
            x = self._execute(1, y)
        return x[0] if squeeze else x

    __call__ = forward

    # ------------------------------------------------------------------ helpers
    def _choose_backend(self, backend: str) -> str:
        if backend not in ("auto", *_BACKENDS):
            raise ValueError(f"backend must be 'auto' or one of {_BACKENDS}, got {backend!r}.")
        cuda = self.device.type == "cuda"
        if backend == "auto":
            if not cuda:
                backend = "finufft" if _importable("finufft") else "torchkbnufft"
            else:
                backend = "cufinufft" if _importable("cufinufft") else "torchkbnufft"
        if backend == "finufft" and cuda:
            raise ValueError("backend 'finufft' runs on CPU only; use 'cufinufft' or 'torchkbnufft' on CUDA.")
        if backend == "cufinufft" and not cuda:
            raise ValueError("backend 'cufinufft' needs CUDA tensors; use 'finufft' on CPU.")
        if not _importable(backend):
            raise ImportError(
                f"NUFFT backend {backend!r} is not installed; install it (pip install {backend}) "
                f"or choose one of {available_backends()}."
            )
        return backend

    def _as_complex(self, x: torch.Tensor) -> torch.Tensor:
        if x.device != self.device:
            raise ValueError(f"input is on {x.device} but this NUFFT was planned on {self.device}.")
        if not torch.is_complex(x):
            x = x.to(torch.complex64)
        return x

    def _plan(self, kind: int, n_trans: int, dtype: torch.dtype):
        key = (kind, n_trans, dtype)
        plan = self._plans.get(key)
        if plan is not None:
            return plan
        real = torch.float64 if dtype == torch.complex128 else torch.float32
        modes = self.image_shape
        isign = -1 if kind == 2 else 1
        cdtype = "complex128" if dtype == torch.complex128 else "complex64"
        eps = max(self.eps, 2e-7) if dtype == torch.complex64 else self.eps
        pts = (2 * math.pi * self._traj).to(real)
        if self.backend == "finufft":
            import finufft

            kwargs = {"modeord": 0}
            if self.n_threads is not None:
                kwargs["nthreads"] = int(self.n_threads)
            elif n_trans * (self.n_points + 4 * modes[0] * modes[1]) < _SMALL_WORK:
                kwargs["nthreads"] = 1  # threading overhead dominates small transforms
            plan = finufft.Plan(kind, modes, n_trans=n_trans, eps=eps, isign=isign, dtype=cdtype, **kwargs)
            x = np.ascontiguousarray(pts[:, 0].cpu().numpy())
            y = np.ascontiguousarray(pts[:, 1].cpu().numpy())
            plan.setpts(x, y)
            plan._pts = (x, y)  # finufft keeps pointers to the points: keep them alive
        else:  # cufinufft
            import cufinufft

            plan = cufinufft.Plan(kind, modes, n_trans=n_trans, eps=eps, isign=isign, dtype=cdtype, modeord=0)
            x = pts[:, 0].contiguous()
            y = pts[:, 1].contiguous()
            plan.setpts(x, y)
            plan._pts = (x, y)
        self._plans[key] = plan
        return plan

    def _execute(self, kind: int, data: torch.Tensor) -> torch.Tensor:
        dtype = torch.complex128 if data.dtype == torch.complex128 else torch.complex64
        data = data.to(dtype).contiguous()
        n_trans = int(data.shape[0])
        plan = self._plan(kind, n_trans, dtype)
        if self.backend == "finufft":
            arr = data.numpy() if data.device.type == "cpu" else data.cpu().numpy()
            if n_trans == 1:
                arr = arr[0]
            out = plan.execute(arr)
            out = torch.from_numpy(np.ascontiguousarray(out))
        else:
            arr = data[0] if n_trans == 1 else data
            out = torch.as_tensor(plan.execute(arr), device=self.device)
        if kind == 2:
            return out.reshape(n_trans, self.n_points)
        return out.reshape(n_trans, *self.image_shape)

    # torchkbnufft: y = sum_n x[n] exp(-i omega . (n - N//2)) with omega in radians, which
    # is the contract's model with omega = 2 pi k (checked against a direct DFT in the tests).
    def _init_torchkbnufft(self) -> None:
        import torchkbnufft as tkb

        grid = tuple(2 * n for n in self.image_shape)
        self._omega = (2 * math.pi * self._traj).to(torch.float32).T.contiguous()
        self._tkb_fwd = tkb.KbNufft(im_size=self.image_shape, grid_size=grid, device=self.device)
        self._tkb_adj = tkb.KbNufftAdjoint(im_size=self.image_shape, grid_size=grid, device=self.device)

    def _tkb_forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self._tkb_fwd(x.to(torch.complex64)[:, None], self._omega)
        return out[:, 0]

    def _tkb_adjoint(self, y: torch.Tensor) -> torch.Tensor:
        out = self._tkb_adj(y.to(torch.complex64)[:, None], self._omega)
        return out[:, 0]


def make_nufft(
    traj: torch.Tensor | np.ndarray,
    image_shape: Sequence[int],
    backend: str = "auto",
    **kwargs,
) -> Nufft2D:
    """Build a :class:`Nufft2D` for ``traj`` ``(..., 2)`` (flattened to ``(M, 2)``).

    ``backend``: ``"auto"`` | ``"finufft"`` | ``"cufinufft"`` | ``"torchkbnufft"``; other
    keyword arguments go to :class:`Nufft2D` (``eps``, ``device``, ``n_trans_hint``, ``n_threads``).
    """
    t = traj if isinstance(traj, torch.Tensor) else torch.as_tensor(np.asarray(traj))
    return Nufft2D(t.reshape(-1, 2), image_shape, backend=backend, **kwargs)
