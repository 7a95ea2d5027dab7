"""LRTV: low-rank (subspace) MRF reconstruction with spatial total variation.

The compressed TSMI ``c (R, Nx, Ny)`` is the solution of::

    min_c  1/2 || W^{1/2} (A c - y) ||^2 + lam * sum_r w_r TV(c_r)

with ``A`` the subspace NUFFT operator (basis expansion, coil sensitivities, one spiral
interleaf per frame), ``TV`` the isotropic complex total variation of each component
(:mod:`mrf_monai.baselines.tv`) and ``W`` the density compensation.

Choice of the data term (documented in ``docs/baselines.md``): by default the
*density-compensated* (preconditioned) normal equations are used, i.e. ``W = dcf``: the
gradient is ``A^H W A c - A^H W y`` where ``A^H W y`` is exactly the calibrated gridding
image (the SVD-MRF image, which also initialises the solver) and ``A^H W A`` is the
operator's Toeplitz ``grid_normal``. With a variable-density spiral the plain normal
operator ``A^H A`` is badly conditioned (the k-space centre is sampled far more densely
than the edge and sets the step), so that the unweighted problem needs many more
iterations; the weighted one reaches a good image in 30 FISTA iterations and its solution
lives on the same intensity scale as the gridding image, so that ``lam`` relative to the
gridded image's maximum is scale-invariant. On simulated validation slices it is also the
more accurate of the two at 30 iterations (``docs/baselines.md``). ``preconditioned=False``
selects the plain least squares problem (``A^H A``, ``A^H y``), the maximum-likelihood data
term for white noise.

The solver is FISTA (Beck & Teboulle 2009) with the gradient-based adaptive restart of
O'Donoghue & Candes (2015); the TV prox is a few warm-started FGP iterations; the step is
``1 / L`` with ``L`` from a power iteration on the normal operator.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from mrf_monai.baselines.tv import total_variation, tv_prox

__all__ = [
    "power_iteration",
    "quadratic_objective",
    "fista",
    "FistaResult",
    "lrtv_solve",
    "LRTVReconstructor",
]

LinearOperator = Callable[[torch.Tensor], torch.Tensor]


def _real_inner(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``Re <a, b>`` summed over all elements."""
    return (a.conj() * b).real.sum() if a.is_complex() else (a * b).sum()


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
        generator: optional CPU random generator for a reproducible start vector.

    Returns:
        The Rayleigh quotient after ``n_iter`` iterations (a Python float).
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
        eig = _real_inner(v, w)
        norm = torch.linalg.vector_norm(w)
        if norm == 0:
            return 0.0
        v = w / norm
    return float(eig)


def quadratic_objective(normal: LinearOperator, rhs: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``1/2 Re <x, N x> - Re <x, b>``: the data term ``1/2 ||W^{1/2}(A x - y)||^2`` up to a
    constant, computed from the normal operator ``N = A^H W A`` and ``b = A^H W y`` only."""
    return 0.5 * _real_inner(x, normal(x)) - _real_inner(x, rhs)


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
            Candes 2015), which removes FISTA's ripples.
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
        if restart and _real_inner(y - x_new, x_new - x) > 0:
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


def lrtv_solve(
    normal: LinearOperator,
    rhs: torch.Tensor,
    lam: float,
    x0: torch.Tensor | None = None,
    weights: torch.Tensor | None = None,
    n_iter: int = 30,
    tv_iter: int = 10,
    power_iter: int = 20,
    step: float | None = None,
    restart: bool = True,
    track_objective: bool = False,
    generator: torch.Generator | None = None,
) -> FistaResult:
    """Subspace reconstruction with total variation, solved by FISTA.

    Minimises ``1/2 Re<c, N c> - Re<c, b> + lam * sum_r w_r TV(c_r)``.

    Args:
        normal: normal operator ``N`` on ``(R, Nx, Ny)`` tensors.
        rhs: ``b (R, Nx, Ny)``.
        lam: absolute regularisation weight (same units as ``rhs``).
        x0: initial point, default ``rhs`` (the gridding image for the preconditioned
            problem).
        weights: optional per-component TV weights ``(R,)``.
        n_iter: FISTA iterations.
        tv_iter: FGP iterations of the TV prox per FISTA iteration (warm started from the
            previous dual).
        power_iter: power iterations for the step size when ``step`` is not given.
        step: gradient step; default ``1 / (1.05 L)`` with ``L`` from the power iteration
            (the power estimate is a lower bound, the margin keeps the step safe).
        restart: adaptive momentum restart.
        track_objective: record the objective after every iteration.
        generator: random generator of the power iteration's start vector.

    Returns:
        :class:`FistaResult` with ``x`` the ``(R, Nx, Ny)`` solution.
    """
    if x0 is None:
        x0 = rhs
    if step is None:
        lipschitz = power_iteration(normal, x0, n_iter=power_iter, generator=generator)
        if lipschitz <= 0:
            raise ValueError("the normal operator is zero; no k-space data reaches the image")
        step = 1.0 / (1.05 * lipschitz)
    state: dict[str, Any] = {"dual": None}

    def prox(v: torch.Tensor, t: float) -> torch.Tensor:
        u, state["dual"] = tv_prox(
            v, lam * t, weights=weights, n_iter=tv_iter, dual=state["dual"], return_dual=True
        )
        return u

    def regulariser(x: torch.Tensor) -> torch.Tensor:
        return lam * total_variation(x, weights)

    return fista(
        normal,
        rhs,
        prox,
        x0,
        step,
        n_iter=n_iter,
        regulariser=regulariser,
        restart=restart,
        track_objective=track_objective,
    )


class LRTVReconstructor:
    """LRTV subspace reconstruction of one slice (a :class:`mrf_monai.pipeline.Reconstructor`).

    Args:
        lam: TV weight *relative* to ``max |gridding image|`` of the slice (scale invariant);
            the default was chosen on simulated validation subjects (``docs/baselines.md``).
            With ``preconditioned=False`` it is further multiplied by ``||A^H A||`` (power
            iteration) because the plain data term carries the sampling density; the default
            is tuned for the preconditioned problem.
        n_iter: FISTA iterations.
        tv_iter: FGP iterations of the TV prox per FISTA iteration (warm started).
        weights: optional per-component TV weights ``(R,)`` (default: all 1).
        preconditioned: density-compensated data term (``A^H D A``, ``A^H D y``; default) or
            plain least squares (``A^H A``, ``A^H y``); see the module docstring.
        power_iter: power iterations for the step size.
        device: where FISTA runs (the Toeplitz normal operator is pure torch); the NUFFTs of
            the set-up run on the CPU.
        seed: seed of the power iteration's start vector (reproducible output).
    """

    def __init__(
        self,
        lam: float = 0.015,
        n_iter: int = 30,
        tv_iter: int = 10,
        weights: Sequence[float] | None = None,
        preconditioned: bool = True,
        power_iter: int = 15,
        device: str | torch.device = "cpu",
        seed: int = 0,
    ) -> None:
        if lam < 0:
            raise ValueError(f"lam must be >= 0, got {lam}")
        self.lam = float(lam)
        self.n_iter = int(n_iter)
        self.tv_iter = int(tv_iter)
        self.weights = None if weights is None else torch.as_tensor(list(weights), dtype=torch.float32)
        self.preconditioned = bool(preconditioned)
        self.power_iter = int(power_iter)
        self.device = torch.device(device)
        self.seed = int(seed)
        self._cache: tuple[str, torch.Tensor, Any, Any] | None = None

    def solve(self, normal: LinearOperator, rhs: torch.Tensor, x0: torch.Tensor | None = None) -> FistaResult:
        """Run LRTV on a given problem ``(normal, rhs)`` (``rhs (R, Nx, Ny)``) with the relative ``lam``."""
        rhs = rhs.to(self.device)
        x0 = rhs if x0 is None else x0.to(self.device)
        weights = None if self.weights is None else self.weights.to(self.device)
        if weights is not None and weights.numel() != rhs.shape[0]:
            raise ValueError(f"{weights.numel()} TV weights for {rhs.shape[0]} subspace components")
        lipschitz = power_iteration(
            normal, x0, n_iter=self.power_iter, generator=torch.Generator().manual_seed(self.seed)
        )
        if lipschitz <= 0:
            raise ValueError("the normal operator is zero; no k-space data reaches the image")
        # preconditioned: A^H D A ~ identity on the sampled band, the data term lives on the image
        # scale; plain: A^H A carries the (large) sampling density, so the weight is scaled by L
        lam_abs = self.lam * float(x0.abs().max()) * (1.0 if self.preconditioned else lipschitz)
        return lrtv_solve(
            normal,
            rhs,
            lam_abs,
            x0=x0,
            weights=weights,
            n_iter=self.n_iter,
            tv_iter=self.tv_iter,
            step=1.0 / (1.05 * lipschitz),
        )

    def problem(
        self, raw: Any, slice_index: int, basis: torch.Tensor
    ) -> tuple[LinearOperator, torch.Tensor, torch.Tensor]:
        """The LRTV problem of one slice: ``(normal, rhs, grid)``.

        ``grid`` is the calibrated gridding image (the SVD-MRF reconstruction: Pipe-Menon
        density compensation, Walsh coil maps from the per-coil gridded subspace images, as
        :func:`mrf_monai.acquisition.operators.grid_subspace`); ``rhs`` is ``grid`` (=
        ``A^H D y``) for the preconditioned problem, else ``A^H y``; ``normal`` applies the
        Toeplitz ``A^H D A`` (or ``A^H A``) with the slice's coil maps on :attr:`device`. The
        density compensation and the Toeplitz kernels depend only on the trajectory and the
        basis and are reused while consecutive slices share them.
        """
        from mrf_monai.acquisition.coils import combine_coils, estimate_coil_maps_walsh
        from mrf_monai.acquisition.density import pipe_menon_dcf
        from mrf_monai.acquisition.operators import SubspaceNufftOperator

        kspace = torch.as_tensor(np.asarray(raw.kspace[slice_index]))
        traj_np = np.ascontiguousarray(raw.traj[slice_index])
        if basis.shape[0] != traj_np.shape[0]:
            raise ValueError(
                f"the dictionary's basis has {basis.shape[0]} frames but the raw data have "
                f"{traj_np.shape[0]}; use a dictionary of the raw data's sequence"
            )
        image_shape = (int(raw.matrix[0]), int(raw.matrix[1]))
        key = hashlib.sha1(
            traj_np.tobytes() + basis.numpy().tobytes() + repr((image_shape, self.preconditioned)).encode()
        ).hexdigest()
        if self._cache is None or self._cache[0] != key:
            traj = torch.as_tensor(traj_np)
            dcf = pipe_menon_dcf(traj, image_shape)
            op = SubspaceNufftOperator(traj, basis, image_shape, None, dcf)
            toeplitz = op.toeplitz(density_compensated=self.preconditioned).to(self.device)
            self._cache = (key, dcf, op, toeplitz)
        _, dcf, op, toeplitz = self._cache
        if kspace.ndim == 3 and kspace.shape[0] > 1:
            coil_images = op.grid_coils(kspace)
            maps = estimate_coil_maps_walsh(coil_images)
            grid = combine_coils(coil_images, maps)
            if self.preconditioned:
                rhs = grid
            else:
                rhs = SubspaceNufftOperator(op.traj, basis, image_shape, maps, dcf).adjoint(kspace)
            maps_dev: torch.Tensor | None = maps.to(self.device, torch.complex64)
        else:
            k1 = kspace.reshape(1, *kspace.shape[-2:])
            grid = op.grid(k1)
            rhs = grid if self.preconditioned else op.adjoint(k1)
            maps_dev = None

        def normal(c: torch.Tensor) -> torch.Tensor:
            return toeplitz(c, coil_maps=maps_dev)

        return normal, rhs, grid

    def __call__(self, raw: Any, slice_index: int, dictionary: Any) -> dict[str, torch.Tensor]:
        """Reconstruct slice ``slice_index`` of ``raw`` in the subspace of ``dictionary``.

        Returns:
            ``{"tsmi": (R, Nx, Ny) complex64}`` on the CPU.
        """
        basis = torch.as_tensor(dictionary.basis).to("cpu", torch.complex64)
        normal, rhs, grid = self.problem(raw, slice_index, basis)
        result = self.solve(normal, rhs, x0=grid)
        return {"tsmi": result.x.detach().to("cpu", torch.complex64)}
