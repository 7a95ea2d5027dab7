"""The U-Net baseline's inferer: one pass over the whole slice, zero-padded to the network's size."""

from __future__ import annotations

from typing import Any

import torch
from monai.inferers import Inferer
from torch import nn

from .network import predict_padded

__all__ = ["PaddedInferer"]


class PaddedInferer(Inferer):
    """``inferer(inputs, network) -> (1, C, H, W)``: the network on the whole slice.

    The input ``(C, H, W)`` (or ``(1, C, H, W)``) is zero-padded symmetrically to a multiple of
    ``multiple`` (the U-Net's total down-sampling, at least 16), passed through the network on
    the network's device, and cropped back.

    Args:
        multiple: padding multiple; ``None``: ``max(16, network.divisor)``.
    """

    def __init__(self, multiple: int | None = 16) -> None:
        super().__init__()
        if multiple is not None and multiple < 1:
            raise ValueError(f"multiple must be positive, got {multiple}")
        self.multiple = multiple

    def __call__(self, inputs: torch.Tensor, network: nn.Module, *args: Any, **kwargs: Any) -> torch.Tensor:  # type: ignore[override]
        x = torch.as_tensor(inputs)
        if x.ndim == 3:
            x = x[None]
        if x.ndim != 4:
            raise ValueError(f"PaddedInferer expects (C, H, W) or (B, C, H, W), got {tuple(x.shape)}")
        param = next(network.parameters(), None)
        if param is not None:
            x = x.to(device=param.device, dtype=param.dtype)
        return predict_padded(network, x, self.multiple)
