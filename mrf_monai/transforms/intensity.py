"""Per-slice intensity normalisation shared by training and inference (``docs/interfaces.md``).

``scale = quantile(|cond[0]|, 0.99)``: the magnitude of component 0 of the aliased gridded
condition, over the whole slice. Condition and reference are divided by it and network
outputs multiplied by it again. The condition may be complex ``(R, H, W)`` or real channels
``(2R, H, W)`` (``[Re..., Im...]``, then ``|cond[0]| = hypot(cond[0], cond[R])``).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import InvertibleTransform, MapTransform, Transform
from monai.utils import TransformBackends

__all__ = [
    "condition_scale",
    "denormalize",
    "NormalizeByCondition",
    "NormalizeByConditiond",
    "Denormalized",
    "ScaleChannelsd",
]

_MAX_QUANTILE_ELEMENTS = 16_000_000  # torch.quantile's input size limit


def condition_scale(cond, quantile: float = 0.99) -> torch.Tensor:
    """The normalisation scale (0-d float32 tensor) of a condition ``(R, ...)`` complex or
    ``(2R, ...)`` real channels.

    Raises:
        ValueError: the scale is zero or not finite (an empty or broken condition).
    """
    if not 0.0 < quantile <= 1.0:
        raise ValueError(f"quantile must be in (0, 1], got {quantile}")
    c = torch.as_tensor(cond)
    if isinstance(c, MetaTensor):
        c = c.as_tensor()
    if c.is_complex():
        mag = c[0].abs()
    else:
        if c.shape[0] % 2:
            raise ValueError(
                f"a real condition must have 2R channels [Re..., Im...], got {c.shape[0]}; "
                "pass the complex image"
            )
        mag = torch.hypot(c[0], c[c.shape[0] // 2])
    v = mag.reshape(-1).to(torch.float64)
    if v.numel() > _MAX_QUANTILE_ELEMENTS:
        v = v[torch.linspace(0, v.numel() - 1, _MAX_QUANTILE_ELEMENTS, device=v.device).long()]
    scale = torch.quantile(v, quantile).to(torch.float32)
    if not torch.isfinite(scale) or scale <= 0:
        raise ValueError(
            f"cannot normalise by the condition: its {quantile:.2%} quantile of |cond[0]| is {float(scale)}; "
            "the condition (aliased gridded image) is empty, zero or not finite -- check the k-space data, "
            "trajectory and gridding of this slice"
        )
    return scale


def _broadcast(scale, x) -> torch.Tensor | float:
    s = torch.as_tensor(scale)
    if isinstance(s, MetaTensor):
        s = s.as_tensor()
    if s.ndim == 1 and s.numel() > 1 and s.numel() == x.shape[0]:
        s = s.reshape(-1, *([1] * (x.ndim - 1)))  # per-sample scales of a batch
    return s


def denormalize(x, scale):
    """``x * scale`` (undo the normalisation); ``scale`` may be 0-d or one per batch item."""
    s = _broadcast(scale, x)
    if isinstance(x, np.ndarray):
        return x * np.asarray(s.cpu() if hasattr(s, "cpu") else s, dtype=np.float64).astype(x.real.dtype)
    return x * s.to(device=x.device, dtype=x.real.dtype if x.is_complex() else x.dtype)


def _divide(x, scale):
    s = _broadcast(scale, x)
    if isinstance(x, np.ndarray):
        return x / np.asarray(s.cpu(), dtype=np.float64).astype(x.real.dtype)
    return x / s.to(device=x.device, dtype=x.real.dtype if x.is_complex() else x.dtype)


class NormalizeByCondition(Transform):
    """Divide an image by the scale of a condition (by default the image itself).

    ``__call__(img, cond=None, scale=None)``: the scale is ``scale`` if given, else
    :func:`condition_scale` of ``cond`` (or of ``img`` when ``cond`` is ``None``). A
    MetaTensor output carries the scale in ``meta["scale"]`` so that :meth:`inverse`
    can undo it; for plain tensors pass the scale to :meth:`inverse`.
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(self, quantile: float = 0.99) -> None:
        self.quantile = quantile

    def __call__(self, img, cond=None, scale=None):
        if scale is None:
            scale = condition_scale(img if cond is None else cond, self.quantile)
        out = _divide(img, scale)
        if isinstance(out, MetaTensor):
            out.meta["scale"] = torch.as_tensor(scale).clone()
        return out

    def inverse(self, img, scale=None):
        if scale is None:
            if not isinstance(img, MetaTensor) or "scale" not in img.meta:
                raise ValueError("inverse needs the scale: pass scale=... or a MetaTensor with meta['scale']")
            scale = img.meta["scale"]
        out = denormalize(img, scale)
        if isinstance(out, MetaTensor):
            out.meta.pop("scale", None)
        return out


class NormalizeByConditiond(MapTransform, InvertibleTransform):
    """Divide ``keys`` by the scale of ``data[cond_key]`` and store it in ``data[scale_key]``.

    ``inverse`` multiplies ``keys`` by ``data[scale_key]`` again (0-d, or ``(B,)`` after
    batching). Typical use: ``NormalizeByConditiond(keys=("image", "cond"), cond_key="cond")``.
    """

    backend = NormalizeByCondition.backend

    def __init__(
        self,
        keys: KeysCollection,
        cond_key: str = "cond",
        quantile: float = 0.99,
        scale_key: str = "scale",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.cond_key = cond_key
        self.scale_key = scale_key
        self.normalizer = NormalizeByCondition(quantile)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        if self.cond_key not in d:
            raise KeyError(f"NormalizeByConditiond: the condition key {self.cond_key!r} is not in the data")
        scale = condition_scale(d[self.cond_key], self.normalizer.quantile)
        for key in self.key_iterator(d):
            d[key] = _divide(d[key], scale)
        d[self.scale_key] = scale
        return d

    def inverse(self, data: Mapping[Hashable, torch.Tensor], keys: Sequence[Hashable] | None = None):
        """Undo the normalisation of ``keys`` (default: this transform's keys, e.g. network outputs
        stored under other names can be passed explicitly)."""
        d = dict(data)
        if self.scale_key not in d:
            raise KeyError(f"cannot invert: the scale key {self.scale_key!r} is not in the data")
        for key in keys if keys is not None else self.key_iterator(d):
            d[key] = denormalize(d[key], d[self.scale_key])
        return d


class Denormalized(MapTransform):
    """Multiply ``keys`` by the per-slice scale in ``data[scale_key]`` (undo :class:`NormalizeByConditiond`).

    Unlike ``NormalizeByConditiond.inverse`` it applies to any keys, e.g. network outputs
    ``(K, 2R, H, W)`` or complex samples ``(K, R, H, W)`` of one slice.
    """

    backend = NormalizeByCondition.backend

    def __init__(
        self, keys: KeysCollection, scale_key: str = "scale", allow_missing_keys: bool = False
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.scale_key = scale_key

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        if self.scale_key not in d:
            raise KeyError(f"Denormalized: the scale key {self.scale_key!r} is not in the data")
        scale = torch.as_tensor(d[self.scale_key])
        for key in self.key_iterator(d):
            x = d[key]
            d[key] = x * scale.to(device=x.device, dtype=x.real.dtype if x.is_complex() else x.dtype)
        return d


class ScaleChannelsd(MapTransform):
    """Multiply (or divide, ``inverse=True``) the channels of ``keys`` by fixed factors.

    The per-component factors of the diffusion model (:mod:`mrf_monai.diffusion.scaling`) are
    applied to the condition before sampling and removed from the samples after it.

    Args:
        keys: real-channel tensors ``(..., 2R, H, W)``.
        factors: ``(2R,)`` factors, or ``None`` (identity: networks stored without them).
        inverse: divide instead of multiply.
        dim: the channel axis.
    """

    backend = [TransformBackends.TORCH]

    def __init__(
        self,
        keys: KeysCollection,
        factors: Sequence[float] | torch.Tensor | None,
        inverse: bool = False,
        dim: int = -3,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.factors = None if factors is None else torch.as_tensor(factors, dtype=torch.float32).flatten()
        self.inverse = bool(inverse)
        self.dim = dim

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        if self.factors is None:
            return d
        for key in self.key_iterator(d):
            x = torch.as_tensor(d[key])
            dim = self.dim % x.ndim
            if x.shape[dim] != self.factors.numel():
                raise ValueError(
                    f"ScaleChannelsd: {key!r} has {x.shape[dim]} channels on axis {dim}, the factors "
                    f"{self.factors.numel()}; the network was trained for another rank"
                )
            w = self.factors.to(x.device, x.dtype).reshape(-1, *([1] * (x.ndim - dim - 1)))
            d[key] = x / w if self.inverse else x * w
        return d
