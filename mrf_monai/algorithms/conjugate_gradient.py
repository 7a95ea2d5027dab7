"""Conjugate gradient for ``H x = b`` with ``H`` self-adjoint positive definite, batched.

The leading ``batch_dims`` axes of ``b`` index independent systems that share the operator
(e.g. the samples of one slice): every item gets its own step lengths from its own inner
products, exactly as if it were solved alone. Pure torch; runs on the device of ``b``.
"""

from __future__ import annotations

import torch

from .inner import LinearOperator, real_inner

__all__ = ["conjugate_gradient"]

#: floor of the denominators (an exactly solved item then takes zero steps, not NaN ones)
_TINY = 1e-30


def conjugate_gradient(
    operator: LinearOperator,
    rhs: torch.Tensor,
    x0: torch.Tensor | None = None,
    n_iter: int = 10,
    tolerance: float | None = None,
    batch_dims: int = 0,
) -> torch.Tensor:
    """Solve ``operator(x) = rhs`` with at most ``n_iter`` conjugate-gradient iterations.

    Args:
        operator: self-adjoint positive definite linear map (in ``Re <., .>``), applied to
            tensors shaped like ``rhs`` (all items at once).
        rhs: ``(*batch, *item)`` right-hand side, real or complex.
        x0: start vector shaped like ``rhs`` (default zeros).
        n_iter: maximum number of iterations (each applies ``operator`` once).
        tolerance: stop early when every item's residual satisfies
            ``||r|| <= tolerance * ||rhs||`` (one host synchronisation per iteration);
            ``None`` runs all ``n_iter`` iterations without synchronising.
        batch_dims: number of leading axes of ``rhs`` that index independent systems; the
            inner products run over the remaining axes.

    Returns:
        The approximate solution, shaped like ``rhs``.
    """
    if n_iter < 0:
        raise ValueError(f"n_iter must be >= 0, got {n_iter}.")
    if not 0 <= batch_dims < rhs.ndim:
        raise ValueError(f"batch_dims must be in [0, {rhs.ndim}) for rhs of shape {tuple(rhs.shape)}.")
    if x0 is not None and x0.shape != rhs.shape:
        raise ValueError(f"x0 has shape {tuple(x0.shape)} but rhs {tuple(rhs.shape)}.")
    item_dims = tuple(range(batch_dims, rhs.ndim))

    def dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return real_inner(a, b, dim=item_dims, keepdim=True)

    if x0 is None:
        x = torch.zeros_like(rhs)
        r = rhs.clone()
    else:
        x = x0
        r = rhs - operator(x)
    p, rs = r, dot(r, r)
    threshold = None if tolerance is None else (float(tolerance) ** 2) * dot(rhs, rhs)
    for _ in range(n_iter):
        if threshold is not None and bool((rs <= threshold).all()):
            break
        ap = operator(p)
        alpha = rs / dot(p, ap).clamp(min=_TINY)
        x = x + alpha * p
        r = r - alpha * ap
        rs_new = dot(r, r)
        p = r + (rs_new / rs.clamp(min=_TINY)) * p
        rs = rs_new
    return x
