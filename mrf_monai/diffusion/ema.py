# Copyright (c) mrf_monai developers.
# Licensed under the Apache License, Version 2.0.
"""Exponential moving average (EMA) of network weights, as used by (improved) DDPM.

``shadow <- decay * shadow + (1 - decay) * weights`` after every optimiser step. With
``warmup=True`` the effective decay is ``min(decay, (1 + n) / (10 + n))`` after ``n`` updates
(the TensorFlow/ADM convention), so short runs are not dominated by the initial weights.
Buffers (none in the MONAI U-Net, which uses group norm) are copied, not averaged.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from .model import unwrap_model

__all__ = ["ExponentialMovingAverage"]


class ExponentialMovingAverage:
    """Keeps an averaged copy of a network.

    Args:
        model: the trained network (DDP/compile wrappers are unwrapped); it is deep-copied.
        decay: EMA decay (improved DDPM: 0.9999).
        warmup: use ``min(decay, (1 + n) / (10 + n))`` as the decay of the ``n``-th update.

    Example::

        ema = ExponentialMovingAverage(net, decay=0.9999)
        for batch in loader:
            ...; optimizer.step(); ema.update(net)
        sampler_net = ema.module
    """

    def __init__(self, model: nn.Module, decay: float = 0.9999, warmup: bool = False) -> None:
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"decay must be in [0, 1], got {decay}.")
        self.decay = float(decay)
        self.warmup = bool(warmup)
        self.num_updates = 0
        self.module: nn.Module = copy.deepcopy(unwrap_model(model)).eval()
        self.module.requires_grad_(False)

    def current_decay(self) -> float:
        """The decay used by the next :meth:`update`."""
        if self.warmup:
            n = self.num_updates
            return min(self.decay, (1.0 + n) / (10.0 + n))
        return self.decay

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the shadow weights towards ``model``'s current weights."""
        decay = self.current_decay()
        src = unwrap_model(model)
        ema_params = [p for p in self.module.parameters()]
        new_params = [p.detach().to(q.device, q.dtype) for p, q in zip(src.parameters(), ema_params)]
        if len(ema_params) != len(list(src.parameters())):
            raise ValueError("model and EMA module have different parameter lists.")
        if ema_params:
            torch._foreach_lerp_(ema_params, new_params, 1.0 - decay)
        for b_ema, b in zip(self.module.buffers(), src.buffers()):
            b_ema.copy_(b)
        self.num_updates += 1

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        """Write the averaged weights into ``model``."""
        unwrap_model(model).load_state_dict(self.module.state_dict())

    def to(self, device: torch.device | str) -> ExponentialMovingAverage:
        """Move the shadow weights (in place) and return ``self``."""
        self.module.to(device)
        return self

    def state_dict(self) -> dict[str, Any]:
        """Shadow weights and counters."""
        return {
            "decay": self.decay,
            "warmup": self.warmup,
            "num_updates": self.num_updates,
            "shadow": self.module.state_dict(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`'s output (the decay of the running object is kept)."""
        self.num_updates = int(state["num_updates"])
        self.module.load_state_dict(state["shadow"])
