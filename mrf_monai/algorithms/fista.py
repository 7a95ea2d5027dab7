"""FISTA (Beck & Teboulle 2009) with the adaptive restart of O'Donoghue & Candes (2015).

Minimises ``f(x) + g(x)`` with the quadratic data term ``f(x) = 1/2 Re<x, N x> - Re<x, b>``
(``N = A^H W A`` self-adjoint, ``b = A^H W y``: ``1/2 ||W^{1/2}(A x - y)||^2`` up to a
constant) and a regulariser ``g`` given by its proximal map.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from .inner import LinearOperator, real_inner

__all__ = ["FistaResult", "fista", "quadratic_objective"]


def quadratic_objective(normal: LinearOperator, rhs: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``1/2 Re <x, N x> - Re <x, b>``: the data term ``1/2 ||W^{1/2}(A x - y)||^2`` up to a
    constant, computed from the normal operator ``N = A^H W A`` and ``b = A^H W y`` only."""
    return 0.5 * real_inner(x, normal(x)) - real_inner(x, rhs)


@dataclass
class FistaResult:
    """Output of :func:`fista`: the solution and the per-iteration objective (when tracked)."""

    x: torch.Tensor
    objective: list[float] = field(default_factory=list)
    step: float = 0.0
    n_restarts: int = 0


def fista(
    normal: LinearOperator,
    rhs: torch.Tensor,
    prox: Callable[[torch.Tensor, float], torch.Tensor],
    x0: torch.Tensor,
    step: float,
    n_iter: int = 30,
    regulariser: Callable[[torch.Tensor], torch.Tensor] | None = None,
    restart: bool = True,
    track_objective: bool = False,
) -> FistaResult:
    """FISTA for ``min_x 1/2 Re<x, N x> - Re<x, b> + g(x)`` with a prox of ``g``.

    Args:
        normal: the self-adjoint normal operator ``N`` (e.g. Toeplitz ``A^H W A``).
        rhs: ``b = A^H W y``.
        prox: ``prox(v, t) = argmin_x 1/2 ||x - v||^2 + t g(x)``.
        x0: initial point (e.g. the gridding image).
        step: gradient step ``<= 1 / ||N||``.
        n_iter: iterations.
        regulariser: ``g(x)``; only used when ``track_objective``.
        restart: adaptive momentum restart when the momentum points uphill (O'Donoghue &
            Candes 2015), which removes FISTA's ripples (one host synchronisation per iteration).
        track_objective: record ``f(x_k) + g(x_k)`` after every iteration (one extra
            normal-operator application per iteration).

    Returns:
        :class:`FistaResult`.
    """
    x = x0.clone()
    y = x.clone()
    t = 1.0
    history: list[float] = []
    n_restarts = 0
    for _ in range(n_iter):
        grad = normal(y) - rhs
        x_new = prox(y - step * grad, step)
        if restart and real_inner(y - x_new, x_new - x) > 0:
            # momentum points uphill: drop it (gradient restart)
            t = 1.0
            n_restarts += 1
        t_new = 0.5 * (1.0 + (1.0 + 4.0 * t * t) ** 0.5)
        y = x_new + ((t - 1.0) / t_new) * (x_new - x)
        x, t = x_new, t_new
        if track_objective:
            value = quadratic_objective(normal, rhs, x)
            if regulariser is not None:
                value = value + regulariser(x)
            history.append(float(value))
    return FistaResult(x=x, objective=history, step=step, n_restarts=n_restarts)
