"""The residual U-Net of the baseline, its padding helpers and its weights files.

The network (DRUNet-like, Zhang et al. 2021) is MONAI's :class:`~monai.networks.nets.UNet`
built from residual units, without normalisation layers and without biases, and it predicts
a *residual* that is added to its input::

    x_ref ~ f(x_c) = x_c + UNet(x_c)

on ``2R`` real channels (``[Re c_0..Re c_{R-1}, Im c_0..Im c_{R-1}]``).

Weights are a plain ``state_dict`` (``model.pt``) and a JSON file beside it (``model.json``,
:mod:`mrf_monai.io.weights`), loaded with ``torch.load(..., weights_only=True)``::

    {"format": "mrf_monai.baselines.unet/2",
     "model": build_unet kwargs, "rank": R, "quantile": 0.99, "sequence_key": str | None,
     "data": {"basis": (T, R) complex | None, "sequence": dict | None, "sequence_key": str | None,
              "rank": R, "channel_scale": [...], "patch_size": [...], ...},
     "training": {...}, "step": int, "best_metric": float}

so :func:`load_model` rebuilds the network without configuration.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from monai.networks.nets import UNet
from torch import nn

from mrf_monai.engines.data import training_data_description
from mrf_monai.engines.distributed import unwrap_network
from mrf_monai.io.weights import read_model_file, save_weights

__all__ = [
    "UNET_CHECKPOINT_FORMAT",
    "ResidualUNet",
    "build_unet",
    "unet_hyper_parameters",
    "pad_to_multiple",
    "predict_padded",
    "training_data_description",
    "save_unet_checkpoint",
    "load_unet_checkpoint",
    "load_model",
]

#: tag of the U-Net baseline's weights and training checkpoints (``hyper_parameters["format"]``);
#: ``"mrf_monai.baselines.unet/1"`` was the single pickled dictionary of older releases.
UNET_CHECKPOINT_FORMAT = "mrf_monai.baselines.unet/2"

#: shown when a weights file is missing.
_TRAIN_HINT = (
    "train it with `python -m monai.bundle run training "
    "--meta_file bundles/unet_baseline/configs/metadata.json "
    "--config_file bundles/unet_baseline/configs/train.json`"
)


class ResidualUNet(nn.Module):
    """``x + UNet(x)`` on ``2R`` real channels (residual learning of the aliasing artefact).

    Args:
        rank: subspace rank ``R``; input and output have ``2R`` channels.
        channels: feature channels per resolution level (DRUNet: 64, 128, 256, 512).
        strides: down-sampling strides between levels (``len(channels) - 1`` entries).
        num_res_units: residual units per level (MONAI :class:`~monai.networks.blocks.ResidualUnit`).
        act: activation (MONAI name or ``(name, kwargs)``).
        norm: normalisation layer, ``None`` for none (DRUNet has none, which keeps the map
            ``x -> f(x)`` positively homogeneous without biases).
        bias: convolution biases.
        dropout: dropout probability.

    The attribute ``hyper_parameters`` holds these arguments (:func:`unet_hyper_parameters`),
    which the trainer stores with the weights.
    """

    def __init__(
        self,
        rank: int = 5,
        channels: Sequence[int] = (64, 128, 256, 512),
        strides: Sequence[int] = (2, 2, 2),
        num_res_units: int = 2,
        act: str | tuple = "RELU",
        norm: str | tuple | None = None,
        bias: bool = False,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if rank < 1:
            raise ValueError(f"rank must be >= 1, got {rank}")
        if len(strides) != len(channels) - 1:
            raise ValueError(
                f"need len(strides) == len(channels) - 1, got {len(strides)} and {len(channels)}"
            )
        self.rank = int(rank)
        self.unet = UNet(
            spatial_dims=2,
            in_channels=2 * rank,
            out_channels=2 * rank,
            channels=tuple(int(c) for c in channels),
            strides=tuple(int(s) for s in strides),
            num_res_units=int(num_res_units),
            act=act,
            norm=norm,  # type: ignore[arg-type]
            bias=bias,
            dropout=dropout,
        )
        #: spatial sizes must be multiples of this (product of the strides).
        self.divisor = int(math.prod(int(s) for s in strides))
        self.hyper_parameters = unet_hyper_parameters(
            rank, channels, strides, num_res_units, act, norm, bias, dropout
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 2R, H, W) -> (B, 2R, H, W)``; ``H`` and ``W`` multiples of :attr:`divisor`."""
        if x.shape[1] != 2 * self.rank:
            raise ValueError(f"expected {2 * self.rank} channels (rank {self.rank}), got {x.shape[1]}")
        return x + self.unet(x)


def unet_hyper_parameters(
    rank: int = 5,
    channels: Sequence[int] = (64, 128, 256, 512),
    strides: Sequence[int] = (2, 2, 2),
    num_res_units: int = 2,
    act: str | Sequence = "RELU",
    norm: str | Sequence | None = None,
    bias: bool = False,
    dropout: float = 0.0,
) -> dict[str, Any]:
    """The keyword arguments of :func:`build_unet` as a plain, JSON-compatible dictionary."""
    return {
        "rank": int(rank),
        "channels": [int(c) for c in channels],
        "strides": [int(s) for s in strides],
        "num_res_units": int(num_res_units),
        "act": act if isinstance(act, str) else list(act),
        "norm": norm if (norm is None or isinstance(norm, str)) else list(norm),
        "bias": bool(bias),
        "dropout": float(dropout),
    }


def build_unet(init_seed: int | None = None, **kwargs: Any) -> ResidualUNet:
    """Build the residual U-Net baseline from :func:`unet_hyper_parameters` keyword arguments.

    Args:
        init_seed: seed of the initial weights (drawn from a forked torch RNG, so the global
            state is untouched); ``None``: the global torch RNG.
        **kwargs: ``rank``, ``channels``, ``strides``, ``num_res_units``, ``act``, ``norm``,
            ``bias``, ``dropout``.
    """
    hp = unet_hyper_parameters(**kwargs)
    act = hp["act"] if isinstance(hp["act"], str) else tuple(hp["act"])
    norm = hp["norm"] if (hp["norm"] is None or isinstance(hp["norm"], str)) else tuple(hp["norm"])
    with torch.random.fork_rng(devices=[], enabled=init_seed is not None):
        if init_seed is not None:
            torch.manual_seed(int(init_seed))
        return ResidualUNet(
            rank=hp["rank"],
            channels=hp["channels"],
            strides=hp["strides"],
            num_res_units=hp["num_res_units"],
            act=act,
            norm=norm,
            bias=hp["bias"],
            dropout=hp["dropout"],
        )


def pad_to_multiple(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, tuple[slice, slice]]:
    """Zero-pad the last two axes symmetrically to multiples of ``multiple``.

    Returns:
        the padded tensor and the two slices that crop it back to the input size.
    """
    h, w = x.shape[-2:]
    ph = (-h) % multiple
    pw = (-w) % multiple
    top, left = ph // 2, pw // 2
    padded = torch.nn.functional.pad(x, (left, pw - left, top, ph - top))
    return padded, (slice(top, top + h), slice(left, left + w))


def predict_padded(model: nn.Module, x: torch.Tensor, multiple: int | None = None) -> torch.Tensor:
    """Apply the network to whole images of any size: zero-pad to ``multiple``, run, crop back.

    Args:
        model: a :class:`ResidualUNet` (or a wrapper of one).
        x: ``(B, 2R, H, W)`` normalised channels.
        multiple: padding multiple; default ``max(16, model.divisor)`` rounded up to a
            multiple of the divisor.

    Returns:
        ``(B, 2R, H, W)``.
    """
    if multiple is None:
        divisor = int(getattr(unwrap_network(model), "divisor", 16))
        multiple = divisor * math.ceil(16 / divisor)
    padded, (sx, sy) = pad_to_multiple(x, multiple)
    return model(padded)[..., sx, sy]


def save_unet_checkpoint(
    path: str | os.PathLike,
    model: nn.Module,
    hyper_parameters: Mapping[str, Any] | None = None,
    data: Mapping[str, Any] | None = None,
    quantile: float = 0.99,
    training: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write U-Net baseline weights: ``path`` (plain ``state_dict``) + ``path.with_suffix(".json")``.

    Args:
        path: weights file (``.pt``).
        model: a :class:`ResidualUNet` (DDP/compile wrappers are unwrapped).
        hyper_parameters: :func:`unet_hyper_parameters` of the network (default: ``model``'s own).
        data: :func:`training_data_description` of the training data (basis, sequence);
            ``None`` disables the subspace and sequence checks at inference (only the rank
            is checked).
        quantile: intensity-normalisation quantile used in training.
        training: training settings (loss, steps, learning rate, data), stored for the record.
        extra: further JSON entries (e.g. ``"step"``, ``"best_metric"``).
    """
    model = unwrap_network(model)
    hp = dict(hyper_parameters if hyper_parameters is not None else model.hyper_parameters)
    data = dict(data or {})
    if data.get("rank") is not None and int(data["rank"]) != int(hp["rank"]):
        raise ValueError(f"the training data have rank {data['rank']} but the network rank {hp['rank']}")
    document: dict[str, Any] = {
        "format": UNET_CHECKPOINT_FORMAT,
        "model": hp,
        "rank": int(hp["rank"]),
        "sequence_key": data.get("sequence_key"),
        "data": data,
        "quantile": float(quantile),
        "training": dict(training or {}),
        **dict(extra or {}),
    }
    return save_weights(path, model.state_dict(), document)


def load_unet_checkpoint(
    path: str | os.PathLike | Mapping[str, Any], map_location: str | torch.device = "cpu"
) -> tuple[ResidualUNet, dict[str, Any]]:
    """Rebuild the network of U-Net weights (or a training checkpoint) and load them.

    Returns:
        ``(model, checkpoint)``: the model in eval mode on ``map_location`` and
        ``{"format", "hyper_parameters", "state_dict", "step", "best_metric", ...}``
        (:func:`mrf_monai.io.weights.read_model_file`).
    """
    if isinstance(path, Mapping):
        ckpt = dict(path)
    else:
        if not Path(path).is_file():
            raise FileNotFoundError(f"U-Net baseline weights {path} not found; {_TRAIN_HINT}")
        ckpt = read_model_file(path, "cpu", UNET_CHECKPOINT_FORMAT, "U-Net baseline model")
    model = build_unet(**ckpt["hyper_parameters"]["model"])
    model.load_state_dict(ckpt["state_dict"])
    return model.to(map_location).eval(), ckpt


def load_model(
    path: str | os.PathLike, map_location: str | torch.device = "cpu"
) -> tuple[ResidualUNet, dict[str, Any]]:
    """Rebuild the U-Net baseline from ``models/model.pt`` + ``models/model.json`` (or a checkpoint).

    Returns:
        ``(network, hyper_parameters)``: the network in eval mode on ``map_location`` and
        ``{"format", "model", "rank", "quantile", "sequence_key", "data", "training", "step",
        "best_metric", ...}`` (``data``: ``basis``, ``sequence``, ``sequence_key``, ``rank``,
        ``channel_scale``, ``patch_size``, ...).
    """
    model, ckpt = load_unet_checkpoint(path, map_location)
    hp = {
        "format": ckpt["format"],
        **dict(ckpt["hyper_parameters"]),
        "step": ckpt.get("step"),
        "best_metric": ckpt.get("best_metric"),
    }
    return model, hp
