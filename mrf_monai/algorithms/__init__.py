"""Iterative solvers on tensors (pure torch, any device): one concept per module.

* :func:`conjugate_gradient` (:mod:`.conjugate_gradient`): CG for self-adjoint positive definite
  systems, batched over leading axes;
* :func:`power_iteration` (:mod:`.power_iteration`): largest eigenvalue of a self-adjoint positive
  semi-definite operator (the Lipschitz constant of a data term);
* :func:`fista`, :class:`FistaResult`, :func:`quadratic_objective` (:mod:`.fista`): accelerated
  proximal gradient with adaptive restart;
* :func:`real_inner` (:mod:`.inner`): ``Re <a, b>``, the inner product they share.

The solvers take operators as plain callables and import nothing from the rest of the package
(the layer below ``acquisition``).
"""

from .conjugate_gradient import conjugate_gradient
from .fista import FistaResult, fista, quadratic_objective
from .inner import real_inner
from .power_iteration import power_iteration

__all__ = [
    "FistaResult",
    "conjugate_gradient",
    "fista",
    "power_iteration",
    "quadratic_objective",
    "real_inner",
]
