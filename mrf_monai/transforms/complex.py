"""Complex <-> real channel layout for the network.

A compressed TSMI ``c`` of shape ``(R, H, W)`` complex becomes the real tensor
``(2R, H, W) = [Re c_0 .. Re c_{R-1}, Im c_0 .. Im c_{R-1}]`` (``docs/interfaces.md``).
``dim`` selects the component axis (0 for one sample, 1 for a batch ``(B, R, H, W)``).
MetaTensor metadata is kept; numpy input gives numpy output.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, Transform
from monai.utils import TransformBackends

__all__ = [
    "complex_to_channels",
    "channels_to_complex",
    "ComplexToChannels",
    "ChannelsToComplex",
    "ComplexToChannelsd",
    "ChannelsToComplexd",
]

_REAL_OF = {torch.complex64: torch.float32, torch.complex128: torch.float64, torch.complex32: torch.float16}


def complex_to_channels(x: torch.Tensor | np.ndarray, dim: int = 0) -> torch.Tensor | np.ndarray:
    """``(..., R, ...)`` complex -> ``(..., 2R, ...)`` real ``[Re 0..R-1, Im 0..R-1]`` along ``dim``.

    complex64 gives float32, complex128 float64. Real input is a clear error (it is
    probably already in channel layout).
    """
    if isinstance(x, np.ndarray):
        if not np.iscomplexobj(x):
            raise TypeError(
                f"complex_to_channels expects a complex array, got {x.dtype}; is it already channels?"
            )
        return np.concatenate([x.real, x.imag], axis=dim)
    x = torch.as_tensor(x)
    if not x.is_complex():
        raise TypeError(
            f"complex_to_channels expects a complex tensor, got {x.dtype}; is it already channels?"
        )
    return torch.cat([x.real, x.imag], dim=dim)


def channels_to_complex(x: torch.Tensor | np.ndarray, dim: int = 0) -> torch.Tensor | np.ndarray:
    """Inverse of :func:`complex_to_channels`: ``2R`` real channels along ``dim`` -> ``R`` complex."""
    n = x.shape[dim]
    if n % 2:
        raise ValueError(
            f"channels_to_complex needs an even number of channels along dim {dim} ([Re..., Im...]), got {n}"
        )
    if isinstance(x, np.ndarray):
        if np.iscomplexobj(x):
            raise TypeError("channels_to_complex expects a real array, got a complex one")
        re, im = np.split(x, 2, axis=dim)
        return re + 1j * im if x.dtype == np.float64 else (re + 1j * im).astype(np.complex64)
    x = torch.as_tensor(x)
    if x.is_complex():
        raise TypeError("channels_to_complex expects a real tensor, got a complex one")
    if x.dtype not in (torch.float32, torch.float64):
        x = x.float()
    re, im = torch.chunk(x, 2, dim=dim)
    return torch.complex(re, im)


class ComplexToChannels(Transform):
    """Array transform: complex ``(R, ...)`` -> real ``(2R, ...)`` (see :func:`complex_to_channels`)."""

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(self, dim: int = 0) -> None:
        self.dim = dim

    def __call__(self, img):
        return complex_to_channels(img, self.dim)

    def inverse(self, img):
        return channels_to_complex(img, self.dim)


class ChannelsToComplex(Transform):
    """Array transform: real ``(2R, ...)`` -> complex ``(R, ...)`` (see :func:`channels_to_complex`)."""

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(self, dim: int = 0) -> None:
        self.dim = dim

    def __call__(self, img):
        return channels_to_complex(img, self.dim)

    def inverse(self, img):
        return complex_to_channels(img, self.dim)


class ComplexToChannelsd(MapTransform):
    """Dictionary twin of :class:`ComplexToChannels`."""

    backend = ComplexToChannels.backend

    def __init__(self, keys: KeysCollection, dim: int = 0, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.converter = ComplexToChannels(dim)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.converter(d[key])
        return d

    def inverse(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.converter.inverse(d[key])
        return d


class ChannelsToComplexd(MapTransform):
    """Dictionary twin of :class:`ChannelsToComplex`."""

    backend = ChannelsToComplex.backend

    def __init__(self, keys: KeysCollection, dim: int = 0, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.converter = ChannelsToComplex(dim)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.converter(d[key])
        return d

    def inverse(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.converter.inverse(d[key])
        return d
