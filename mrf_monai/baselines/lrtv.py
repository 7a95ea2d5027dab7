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
``1 / L`` with ``L`` from a power iteration on the normal operator. The solvers live in
:mod:`mrf_monai.algorithms` (re-exported here); each slice's problem comes from the gridding
front end (:meth:`mrf_monai.acquisition.gridding.SubspaceGridder.slice_problem`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from monai.inferers import Inferer

from mrf_monai.acquisition.gridding import SubspaceGridder
from mrf_monai.algorithms import FistaResult, fista, power_iteration, quadratic_objective
from mrf_monai.baselines.tv import total_variation, tv_prox

__all__ = [
    "power_iteration",
    "quadratic_objective",
    "fista",
    "FistaResult",
    "lrtv_solve",
    "LRTVReconstructor",
    "LRTVInferer",
]

LinearOperator = Callable[[torch.Tensor], torch.Tensor]


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
        device: where FISTA runs (the Toeplitz normal operator is pure torch).
        seed: seed of the power iteration's start vector (reproducible output).
        gridder: the gridding front end that sets up each slice's problem (NUFFTs, density,
            coil maps); default ``SubspaceGridder()`` (on the CPU).
    """

    def __init__(
        self,
        lam: float = 0.01,
        n_iter: int = 30,
        tv_iter: int = 10,
        weights: Sequence[float] | None = None,
        preconditioned: bool = True,
        power_iter: int = 15,
        device: str | torch.device = "cpu",
        seed: int = 0,
        gridder: SubspaceGridder | None = None,
    ) -> None:
        if not isinstance(lam, int | float) or isinstance(lam, bool) or lam < 0:
            raise ValueError(f"lam must be a number >= 0, got {lam!r}")
        for name, value in (("n_iter", n_iter), ("tv_iter", tv_iter), ("power_iter", power_iter)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a whole number >= 1, got {value!r}")
        if not isinstance(preconditioned, bool):
            raise ValueError(f"preconditioned must be true or false, got {preconditioned!r}")
        self.lam = float(lam)
        self.n_iter = int(n_iter)
        self.tv_iter = int(tv_iter)
        self.weights = None if weights is None else torch.as_tensor(list(weights), dtype=torch.float32)
        self.preconditioned = bool(preconditioned)
        self.power_iter = int(power_iter)
        self.device = torch.device(device)
        self.seed = int(seed)
        self.gridder = SubspaceGridder() if gridder is None else gridder

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
        """The LRTV problem of one slice: ``(normal, rhs, grid)`` on :attr:`device`.

        :meth:`mrf_monai.acquisition.gridding.SubspaceGridder.slice_problem` of the slice:
        ``grid`` is the calibrated gridding image (the SVD-MRF reconstruction); ``rhs`` is
        ``grid`` (= ``A^H D y``) for the preconditioned problem, else ``A^H y``; ``normal``
        applies the Toeplitz ``A^H D A`` (or ``A^H A``) with the slice's coil maps. The density
        compensation and the Toeplitz kernels are reused while consecutive slices share the
        trajectory and the basis.
        """
        p = self.gridder.slice_problem(raw, slice_index, basis, density_compensated=self.preconditioned)
        p = p.to(self.device)
        return p.normal, p.rhs, p.grid

    def __call__(self, raw: Any, slice_index: int, dictionary: Any) -> dict[str, torch.Tensor]:
        """Reconstruct slice ``slice_index`` of ``raw`` in the subspace of ``dictionary``.

        Returns:
            ``{"tsmi": (R, Nx, Ny) complex64}`` on the CPU.
        """
        basis = torch.as_tensor(dictionary.basis).to("cpu", torch.complex64)
        normal, rhs, grid = self.problem(raw, slice_index, basis)
        result = self.solve(normal, rhs, x0=grid)
        return {"tsmi": result.x.detach().to("cpu", torch.complex64)}


class LRTVInferer(Inferer):
    """LRTV as the inferer of the pipeline (``mrf_monai/pipeline/configs/lrtv.json``).

    ``inferer(inputs, network=None, problem=...) -> (R, Nx, Ny)``: FISTA with TV on the slice's
    :class:`~mrf_monai.acquisition.problem.SliceProblem` (built by ``GridSubspaced(problem_key=...)``
    with the same density, coil maps and caches as the gridding), started at ``inputs`` (the
    gridding image). Arguments as :class:`LRTVReconstructor`.
    """

    def __init__(
        self,
        lam: float = 0.01,
        n_iter: int = 30,
        tv_iter: int = 10,
        weights: Sequence[float] | None = None,
        preconditioned: bool = True,
        power_iter: int = 15,
        device: str | torch.device = "cpu",
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.solver = LRTVReconstructor(
            lam, n_iter, tv_iter, weights, preconditioned, power_iter, device, seed
        )

    def __call__(self, inputs: torch.Tensor, network: Any = None, problem: Any = None) -> torch.Tensor:  # type: ignore[override]
        if problem is None:
            raise ValueError(
                "LRTVInferer needs the slice's problem (GridSubspaced with problem_key='problem')"
            )
        if problem.density_compensated != self.solver.preconditioned:
            raise ValueError(
                "the slice's problem and LRTV disagree on the data term: set GridSubspaced's "
                "density_compensated to LRTV's preconditioned"
            )
        problem = problem.to(self.solver.device)
        x0 = torch.as_tensor(inputs).to(self.solver.device, torch.complex64)
        return self.solver.solve(problem.normal, problem.rhs, x0=x0).x.detach().to(torch.complex64)
