# Copyright (c) mrf_monai developers.
# Licensed under the Apache License, Version 2.0.
"""Warm starts of the diffusion sampler: a classical reconstruction to start sampling from.

Instead of starting at ``T - 1`` from pure noise, a warm-started sample starts at an
intermediate timestep ``t0`` from ``x_t0 = sqrt(abar_t0) x_init + sqrt(1 - abar_t0) z``, where
``x_init`` is a classical reconstruction of the same slice, and spends all its reverse steps
between ``t0`` and 0 (SDEdit, Meng et al. 2022; for MRI "Come-Closer-Diffuse-Faster", Chung et al.,
CVPR 2022: a better start needs fewer steps and leaves less room for the prior to invent
structure). The forward noise at ``t0`` hides the classical method's fine errors (TV's staircase,
residual aliasing) while its coarse content, which the data determine well, survives; the network
then restores the detail with the k-space data consistency at every step.

:class:`LRTVWarmStart` starts from LRTV (:mod:`mrf_monai.baselines.lrtv`) on the slice's own
acquisition problem (the density-compensated problem the data consistency uses), mapped into the
network's space: divided by the slice's normalisation scale, complex components as real
channels, times the network's per-channel factors.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from mrf_monai.transforms.complex import complex_to_channels

__all__ = ["LRTVWarmStart"]


class LRTVWarmStart:
    """``warm_start`` factory of :class:`~mrf_monai.diffusion.inferer.DiffusionSamplingInferer`: LRTV.

    ``LRTVWarmStart(...)(problem, scale, channel_scale) -> (1, 2R, Nx, Ny)`` float32 on the
    problem's device: the LRTV reconstruction of the slice in the network's normalised space.

    Args:
        lam, n_iter, tv_iter, weights, power_iter, seed: as
            :class:`~mrf_monai.baselines.lrtv.LRTVReconstructor` (the same defaults as the LRTV
            method, ``lam`` relative to the largest gridding value).

    Raises (when called):
        ValueError: a problem without density compensation (the sampler's data consistency
            always builds one with it) or a non-positive scale.
    """

    def __init__(
        self,
        lam: float = 0.01,
        n_iter: int = 30,
        tv_iter: int = 10,
        weights: Sequence[float] | None = None,
        power_iter: int = 15,
        seed: int = 0,
    ) -> None:
        from mrf_monai.baselines.lrtv import LRTVReconstructor  # checks the settings now

        self.settings = {"lam": lam, "n_iter": n_iter, "tv_iter": tv_iter, "weights": weights}
        self.solver = LRTVReconstructor(
            lam, n_iter, tv_iter, weights, preconditioned=True, power_iter=power_iter, seed=seed
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v}' for k, v in self.settings.items())})"

    def __call__(
        self, problem: Any, scale: torch.Tensor | float, channel_scale: torch.Tensor | None = None
    ) -> torch.Tensor:
        if not getattr(problem, "density_compensated", True):
            raise ValueError(
                "the LRTV warm start solves the density-compensated problem; the slice's problem has none"
            )
        s = float(torch.as_tensor(scale))
        if not s > 0:
            raise ValueError(f"the slice's normalisation scale must be positive, got {s}")
        self.solver.device = problem.device
        x = self.solver.solve(problem.normal, problem.rhs, x0=problem.grid).x.detach()
        out = complex_to_channels(x.to(torch.complex64), dim=0) / s
        if channel_scale is not None:
            out = out * torch.as_tensor(channel_scale, dtype=out.dtype, device=out.device)[:, None, None]
        return out[None].float()
