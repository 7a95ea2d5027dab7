"""Power iteration: the largest eigenvalue of a self-adjoint positive semi-definite operator."""

from __future__ import annotations

import torch

from .inner import LinearOperator, real_inner

__all__ = ["power_iteration"]


def power_iteration(
    normal: LinearOperator,
    x0: torch.Tensor,
    n_iter: int = 20,
    generator: torch.Generator | None = None,
) -> float:
    """Largest eigenvalue of a self-adjoint positive semi-definite operator.

    Args:
        normal: the operator, e.g. ``A^H W A``.
        x0: a tensor with the operator's input shape, dtype and device (its values are
            replaced by a random start vector).
        n_iter: iterations (the estimate is a lower bound that increases monotonically).
        generator: optional CPU random generator for a reproducible start vector (drawn on
            the CPU and moved to ``x0``'s device, so that the start does not depend on the
            device).

    Returns:
        The Rayleigh quotient after ``n_iter`` iterations (a Python float; one host
        synchronisation per iteration).
    """
    if x0.is_complex():
        re = torch.randn(x0.shape, generator=generator, dtype=x0.real.dtype)
        im = torch.randn(x0.shape, generator=generator, dtype=x0.real.dtype)
        v = torch.complex(re, im).to(device=x0.device, dtype=x0.dtype)
    else:
        v = torch.randn(x0.shape, generator=generator, dtype=x0.dtype).to(x0.device)
    v = v / torch.linalg.vector_norm(v)
    eig = torch.zeros((), device=x0.device)
    for _ in range(n_iter):
        w = normal(v)
        eig = real_inner(v, w)
        norm = torch.linalg.vector_norm(w)
        if norm == 0:
            return 0.0
        v = w / norm
    return float(eig)
