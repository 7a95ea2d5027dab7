# Copyright (c) mrf_monai developers.
# Licensed under the Apache License, Version 2.0.
"""Few-step solvers of the probability-flow ODE: DPM-Solver++(2M) and UniPC (data prediction).

Deterministic samplers integrate the probability-flow ODE of the variance-preserving diffusion
``x_t = alpha_t x_0 + sigma_t eps`` (``alpha_t = sqrt(abar_t)``, ``sigma_t = sqrt(1 - abar_t)``).
Written in the half log-SNR ``lambda_t = log(alpha_t / sigma_t)`` with the network's clean-image
estimate ``D(x_t, t) = x0_hat``, its exact solution from ``t`` to ``s`` (``h = lambda_s - lambda_t``) is::

    x_s = sigma_s / sigma_t x_t + sigma_s int_{lambda_t}^{lambda_s} e^{lambda} D dlambda

DDIM is the first-order rule (``D`` constant over the step). Both solvers here only need
``x0_hat``: the network's ``eps`` (or ``v``, converted by
:func:`mrf_monai.diffusion.model.predict_eps_and_var`) gives ``x0_hat = (x_t - sigma_t eps) /
alpha_t``; a learned variance is not used by an ODE solver. Both reuse the estimates of earlier
steps (multistep), so they cost one network call per step, like DDIM.

``"dpmpp2m"``, DPM-Solver++(2M) (Lu et al. 2022, arXiv:2211.01095, Algorithm 2), from step
``i - 1``'s estimate ``D_{i-1}`` and this step's ``D_i``, ``r = (lambda_i - lambda_{i-1}) / h``::

    D   = (1 + 1 / (2 r)) D_i - 1 / (2 r) D_{i-1}          (D_i alone at the first step)
    x_s = sigma_s / sigma_t x_t - alpha_s expm1(-h) D

``"unipc"``, UniPC-2 (Zhao et al. 2023, arXiv:2302.04867, variant ``B(h) = expm1(h)``): the
predictor UniP-2 is the DPM-Solver++(2M) step above; once the network has been evaluated at the
predicted ``x_s``, the corrector UniC re-takes the step that led there with the new estimate
``D_s`` as well (one order higher, no extra network call), and the next predictor starts from the
corrected sample. The estimates kept for later steps are those at the predicted samples, as in
the paper.

The last step goes to ``sigma = 0``, where ``lambda`` is infinite: it is the first-order step,
which returns ``D`` of the last visited timestep (as DDIM does; DPM-Solver's "lower order
final").

Corrections of ``x0_hat`` (clipping, k-space data consistency: the ``x0_transform`` of
:class:`mrf_monai.diffusion.sampling.ReverseProcess`) are applied by the caller before
:meth:`MultistepSolver.step`; the corrected estimate is what the history stores and what later
steps extrapolate from. All coefficients are computed in float64 and used as Python floats.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

__all__ = ["SOLVER_METHODS", "MultistepSolver", "SolverState"]

#: few-step ODE solvers (``ReverseProcess(method=...)``).
SOLVER_METHODS = ("dpmpp2m", "unipc")


@dataclass
class SolverState:
    """What a multistep solver remembers between steps of one sampling run.

    Attributes:
        next_step: the step index the next :meth:`MultistepSolver.step` call must have.
        x0: (corrected) clean-image estimates of the last two steps, oldest first.
        last_sample: the sample the last predictor started from (UniPC's corrector re-takes
            that step).
    """

    next_step: int = 0
    x0: list[torch.Tensor] = field(default_factory=list)
    last_sample: torch.Tensor | None = None


class MultistepSolver:
    """DPM-Solver++(2M) or UniPC-2 on a decreasing sequence of visited noise levels.

    Args:
        abar: ``abar_t`` of the visited timesteps, in the order they are visited (decreasing
            noise, i.e. increasing ``abar``), ``(K,)``; after the last one the solver goes to
            the clean image (``abar = 1``).
        method: ``"dpmpp2m"`` or ``"unipc"``.
    """

    def __init__(self, abar: torch.Tensor, method: str = "dpmpp2m") -> None:
        if method not in SOLVER_METHODS:
            raise ValueError(f"method must be one of {SOLVER_METHODS}, got {method!r}.")
        a = torch.as_tensor(abar, dtype=torch.float64).cpu()
        if a.ndim != 1 or a.numel() < 1 or bool(((a <= 0) | (a >= 1)).any()):
            raise ValueError("abar must be a 1-D sequence of values in (0, 1).")
        if a.numel() > 1 and not bool((a[1:] > a[:-1]).all()):
            raise ValueError("abar must increase (the visited noise levels must decrease).")
        self.method = method
        self.alpha = [math.sqrt(float(v)) for v in a]
        self.sigma = [math.sqrt(1.0 - float(v)) for v in a]
        self.lam = [math.log(al / si) for al, si in zip(self.alpha, self.sigma)]

    def __len__(self) -> int:
        return len(self.alpha)

    def new_state(self) -> SolverState:
        """An empty history (the start of a sampling run)."""
        return SolverState()

    def step(self, x: torch.Tensor, i: int, x0: torch.Tensor, state: SolverState) -> torch.Tensor:
        """One step from the ``i``-th visited noise level to the next (the clean image after the last).

        Args:
            x: the sample at step ``i`` (where the network was evaluated).
            i: step index ``0..K-1``; steps must come in order, starting at 0, with ``state``.
            x0: the (corrected) clean-image estimate at ``x``.
            state: this run's history (:meth:`new_state`), updated in place.

        Returns:
            the sample at the next noise level.
        """
        if i != state.next_step or not 0 <= i < len(self):
            raise ValueError(
                f"solver step {i} out of order (expected step {state.next_step} of {len(self)}); "
                "start every sampling run with a new state."
            )
        state.next_step = i + 1
        if i == len(self) - 1:  # to sigma = 0: the first-order step returns the estimate
            state.x0, state.last_sample = [], None
            return x0
        if self.method == "unipc" and i > 0:
            x = self._correct(x, i, x0, state)
        x0_prev = state.x0[-1] if state.x0 else None
        state.last_sample = x
        state.x0 = [*state.x0[-1:], x0]
        return self._predict(x, i, x0, x0_prev)

    # ------------------------------------------------------------------ the rules
    def _h(self, i: int) -> float:
        """``lambda_{i+1} - lambda_i`` (a step between two visited noise levels)."""
        return self.lam[i + 1] - self.lam[i]

    def _predict(
        self, x: torch.Tensor, i: int, x0: torch.Tensor, x0_prev: torch.Tensor | None
    ) -> torch.Tensor:
        """DPM-Solver++(2M) (= UniP-2 with ``B(h) = expm1(h)``) from step ``i`` to ``i + 1``."""
        h = self._h(i)
        d = x0
        if x0_prev is not None:
            r = (self.lam[i] - self.lam[i - 1]) / h
            d = x0 + (0.5 / r) * (x0 - x0_prev)
        return (self.sigma[i + 1] / self.sigma[i]) * x - (self.alpha[i + 1] * math.expm1(-h)) * d

    def _correct(self, x: torch.Tensor, i: int, x0: torch.Tensor, state: SolverState) -> torch.Tensor:
        """UniC: re-take the step ``i - 1 -> i`` with the new estimate ``x0`` at step ``i``."""
        j = i - 1  # the step being corrected starts at level j
        h = self._h(j)
        hh = -h
        phi_1 = math.expm1(hh)
        b_h = phi_1
        m0 = state.x0[-1]
        x_last = state.last_sample
        base = (self.sigma[i] / self.sigma[j]) * x_last - (self.alpha[i] * phi_1) * m0
        if len(state.x0) < 2:  # UniC-1: rho = 1/2
            return base - (self.alpha[i] * b_h * 0.5) * (x0 - m0)
        # UniC-2: rho solves R rho = b with R = [[1, 1], [r_k, 1]], r_k = (lambda_{j-1} - lambda_j) / h
        r_k = (self.lam[j - 1] - self.lam[j]) / h
        phi_k = phi_1 / hh - 1.0
        b1 = phi_k / b_h
        phi_k = phi_k / hh - 0.5
        b2 = phi_k * 2.0 / b_h
        rho_hist = (b1 - b2) / (1.0 - r_k)
        rho_new = b1 - rho_hist
        d1 = (state.x0[-2] - m0) / r_k
        return base - (self.alpha[i] * b_h) * (rho_hist * d1 + rho_new * (x0 - m0))
