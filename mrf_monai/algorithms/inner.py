"""The real inner product ``Re <a, b>`` of real or complex tensors (the solvers' geometry)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

__all__ = ["LinearOperator", "real_inner"]

#: a linear map on tensors (e.g. a Toeplitz normal operator ``A^H W A``)
LinearOperator = Callable[[torch.Tensor], torch.Tensor]


def real_inner(
    a: torch.Tensor, b: torch.Tensor, dim: int | Sequence[int] | None = None, keepdim: bool = False
) -> torch.Tensor:
    """``Re <a, b> = Re sum conj(a) b``, over all elements or over the axes ``dim``.

    Complex vectors are treated as real vectors of twice the length, so that a complex-linear
    self-adjoint operator is symmetric in this inner product.

    Args:
        a, b: tensors of the same shape (real or complex).
        dim: axes summed over; ``None`` sums all of them (a 0-d tensor).
        keepdim: keep the summed axes with size 1 (for broadcasting per-item results).

    Returns:
        Real tensor on the inputs' device.
    """
    prod = (a.conj() * b).real if a.is_complex() else a * b
    if dim is None:
        return prod.sum()
    return prod.sum(dim=tuple(dim) if not isinstance(dim, int) else dim, keepdim=keepdim)
