# Copyright (c) mrf_monai developers.
# Licensed under the Apache License, Version 2.0.
"""Proximal k-space data consistency of the diffusion sampler's ``x0`` estimate (a plug-in).

At every reverse step the network's estimate ``x0_hat`` of the clean compressed TSMI is
replaced by the closest image that also agrees with the measured k-space::

    x0 = argmin_x ||D^1/2 (A x - y)||^2 + lam ||x - x0_hat||^2
       = (A^H D A + lam I)^-1 (A^H D y + lam x0_hat),

solved approximately by a few conjugate-gradient iterations started at ``x0_hat``, with the
slice's density-compensated Toeplitz normal operator (the LRTV data term; MRF-DiPh's proximal
step without its dictionary projection). ``lam = dc_lambda * ||A^H D A||`` (power iteration,
computed once). Everything runs on the device of ``x0_hat``: the slice's problem is moved
there once, so that the sampling loop makes no host round trips.

The sampler works in the network's space: complex components as ``[Re .., Im ..]`` channels,
divided by the slice's scale and multiplied by the per-channel factors ``w``
(``docs/interfaces.md``); the step maps to the problem's space and back.
"""

from __future__ import annotations

import torch

from mrf_monai.acquisition.problem import SliceProblem
from mrf_monai.algorithms import conjugate_gradient, power_iteration
from mrf_monai.transforms.complex import channels_to_complex, complex_to_channels

__all__ = ["KSpaceDataConsistency"]


class KSpaceDataConsistency:
    """``x0_transform`` of the whole-slice sampler: a proximal k-space data-consistency step.

    Args:
        problem: the slice's density-compensated :class:`SliceProblem` (``rhs = A^H D y``,
            ``normal = A^H D A``; ``SubspaceGridder.slice_problem(raw, s, basis)``).
        scale: the slice's normalisation scale (the network sees ``TSMI / scale``).
        channel_scale: per-channel factors ``w`` ``(2R,)`` of the network's space, or ``None``
            (all 1).
        n_steps: conjugate-gradient iterations per call.
        lam: weight of the network's estimate relative to ``||N||``.
        seed: seed of the power iteration's start vector.
        power_iter: power iterations for ``||N||``.

    ``__call__(x0 (B, 2R, Nx, Ny), step_index) -> (B, 2R, Nx, Ny)``: real channels in the
    network's normalised space, on any device; the result has ``x0``'s device and dtype.
    """

    def __init__(
        self,
        problem: SliceProblem,
        scale: float,
        channel_scale: torch.Tensor | None = None,
        n_steps: int = 5,
        lam: float = 0.1,
        seed: int = 0,
        power_iter: int = 15,
    ) -> None:
        if n_steps < 0:
            raise ValueError(f"n_steps must be >= 0, got {n_steps}.")
        if not float(scale) > 0:
            raise ValueError(f"scale must be positive, got {scale}.")
        if lam < 0:
            raise ValueError(f"lam must be >= 0, got {lam}.")
        self.problem = problem
        self.scale = float(scale)
        rank = problem.rank
        w = torch.ones(2 * rank) if channel_scale is None else torch.as_tensor(channel_scale).float()
        if tuple(w.shape) != (2 * rank,):
            raise ValueError(
                f"channel_scale must be (2R,) = ({2 * rank},) for rank {rank}, got {tuple(w.shape)}."
            )
        self.channel_scale = w
        self.n_steps = int(n_steps)
        self.lam = float(lam)
        self.seed = int(seed)
        self.power_iter = int(power_iter)
        self._lam_abs: float | None = None
        self._rhs = problem.rhs.to(torch.complex64) / self.scale
        self._wc = w[:, None, None].to(problem.device)

    @property
    def device(self) -> torch.device:
        """Where the step runs now (the device of the problem's tensors)."""
        return self.problem.device

    def to(self, device: torch.device | str) -> KSpaceDataConsistency:
        """Move the problem (kernels, coil maps, right-hand side) to ``device``; returns ``self``."""
        device = torch.device(device)
        problem = self.problem.to(device)
        if problem is not self.problem:
            self.problem = problem
            self._rhs = self._rhs.to(device)
            self._wc = self._wc.to(device)
        return self

    @property
    def lam_abs(self) -> float:
        """``lam * ||N||`` (the power iteration runs on first use, on the problem's device)."""
        if self._lam_abs is None:
            generator = torch.Generator().manual_seed(self.seed)
            lipschitz = power_iteration(
                self.problem.normal, self._rhs, n_iter=self.power_iter, generator=generator
            )
            self._lam_abs = self.lam * lipschitz
        return self._lam_abs

    def __call__(self, x0: torch.Tensor, step_index: int) -> torch.Tensor:
        """The data-consistent version of the estimate ``x0`` ``(B, 2R, Nx, Ny)`` (any reverse step)."""
        if x0.ndim != 4 or x0.shape[1] != self.channel_scale.numel():
            raise ValueError(
                f"x0 must be (B, {self.channel_scale.numel()}, Nx, Ny) real channels, got {tuple(x0.shape)}."
            )
        self.to(x0.device)
        # single precision whatever autocast the network runs under
        with torch.autocast(x0.device.type, enabled=False):
            lam = self.lam_abs
            normal, wc = self.problem.normal, self._wc
            x = channels_to_complex(x0.float() / wc, dim=1)

            def operator(v: torch.Tensor) -> torch.Tensor:
                return normal(v) + lam * v

            x = conjugate_gradient(operator, self._rhs + lam * x, x0=x, n_iter=self.n_steps, batch_dims=1)
        return (complex_to_channels(x, dim=1) * wc).to(dtype=x0.dtype)
