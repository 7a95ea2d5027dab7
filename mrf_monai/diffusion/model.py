# Copyright (c) mrf_monai developers.
# Licensed under the Apache License, Version 2.0.
"""Conditional noise-prediction U-Net and noise schedule of MRF-IDDPM.

The network is MONAI's :class:`~monai.networks.nets.DiffusionModelUNet` (2D) that sees the noisy
compressed TSMI ``x_t`` (``2R`` real channels) concatenated with the aliased gridding image
``cond`` (``2R`` channels, second), i.e. ``in_channels = 4R``. It predicts the noise ``eps``
(``2R`` channels) and, with learned variances (improved DDPM, Nichol & Dhariwal 2021), a second
block ``v`` of ``2R`` channels that interpolates the log-variance of the reverse step between
``log beta_t`` (``v = 1``) and ``log beta_tilde_t`` (``v = -1``)::

    log sigma_t^2 = (v + 1) / 2 * log beta_t + (1 - v) / 2 * log beta_tilde_t

(see :func:`mrf_monai.diffusion.losses.model_log_variance`; ``v`` is the raw network output,
nominally in ``[-1, 1]`` and not clamped, as in improved DDPM). Note that MONAI's
``DDPMScheduler(variance_type="learned_range")`` interpolates variances, not log-variances,
so samplers should use :func:`~mrf_monai.diffusion.losses.model_log_variance`.

Weights written by :mod:`mrf_monai.diffusion.training` (or :func:`save_model`) are a plain
``state_dict`` (``model.pt``) and a JSON file beside it (``model.json``) with the keyword
arguments of :func:`build_model` and :func:`build_scheduler`, the training subspace and the
provenance (:mod:`mrf_monai.io.weights`), so :func:`load_model` rebuilds the network without any
configuration file; everything is read with ``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from monai.networks.nets import DiffusionModelUNet
from monai.networks.nets.diffusion_model_unet import DiffusionUNetResnetBlock
from monai.networks.schedulers import DDIMScheduler, DDPMScheduler
from torch import nn

from mrf_monai.engines.distributed import unwrap_network as unwrap_model
from mrf_monai.io.weights import read_model_file, save_weights

__all__ = [
    "CHECKPOINT_FORMAT",
    "build_model",
    "build_scheduler",
    "build_ddim_scheduler",
    "model_hyper_parameters",
    "scheduler_hyper_parameters",
    "predict_eps_and_var",
    "save_model",
    "load_model",
    "load_checkpoint",
    "load_checkpoint_model",
    "scheduler_from_checkpoint",
    "unwrap_model",
]

#: what the network's first ``2R`` output channels predict (see :func:`build_model`).
PREDICTION_TYPES = ("epsilon", "v")

#: tag of the weights and training checkpoints of this package (``hyper_parameters["format"]``);
#: ``"mrf_monai.diffusion/1"`` was the single pickled dictionary of older releases.
CHECKPOINT_FORMAT = "mrf_monai.diffusion/2"


def build_model(
    rank: int = 5,
    learn_sigma: bool = True,
    channels: Sequence[int] = (64, 128, 128),
    attention_levels: Sequence[bool] = (False, False, True),
    num_res_blocks: int | Sequence[int] = 2,
    num_head_channels: int | Sequence[int] = 32,
    dropout: float = 0.0,
    norm_num_groups: int = 32,
    resblock_updown: bool = False,
    use_flash_attention: bool = False,
    prediction_type: str = "epsilon",
    init_seed: int | None = None,
) -> DiffusionModelUNet:
    """Build the conditional 2D noise-prediction U-Net of MRF-IDDPM.

    Args:
        rank: subspace rank ``R``; the network works on ``2R`` real channels per image.
        learn_sigma: predict the interpolation ``v`` of the reverse-step log-variance besides
            ``eps`` (output ``4R`` channels ``[eps, v]``), else only ``eps`` (``2R`` channels).
        channels: feature channels per resolution level (each divisible by ``norm_num_groups``).
        attention_levels: self-attention at each level (same length as ``channels``).
        num_res_blocks: residual blocks per level.
        num_head_channels: channels per attention head.
        dropout: dropout probability in every residual block, applied right before its last
            convolution as in improved DDPM (MONAI's block has none; it is inserted here
            without changing the parameter names, so state dicts are independent of it).
        norm_num_groups: groups of the group normalisations.
        resblock_updown: residual blocks for up/down-sampling (BigGAN style).
        use_flash_attention: use ``scaled_dot_product_attention`` in the attention blocks.
        prediction_type: what the first ``2R`` output channels are: ``"epsilon"`` (the noise, as
            in the paper) or ``"v"`` (``v = sqrt(abar_t) eps - sqrt(1 - abar_t) x_0``, Salimans &
            Ho 2022), which is well conditioned at every noise level and trains in far fewer
            steps; :func:`predict_eps_and_var` converts it to ``eps``, so samplers and losses
            are unchanged (the loss then weights ``eps`` errors by ``1 / abar_t``, i.e. it is
            the ``v`` loss).
        init_seed: seed of the initial weights (drawn from a forked torch RNG, so the global
            state is untouched); ``None``: the global torch RNG.

    Returns:
        a :class:`~monai.networks.nets.DiffusionModelUNet` with ``in_channels = 4R``; call it as
        ``model(torch.cat([x_t, cond], 1), timesteps)`` or via :func:`predict_eps_and_var`. Its
        attribute ``hyper_parameters`` holds these arguments (:func:`model_hyper_parameters`,
        stored with the weights by the trainer).
    """
    if rank < 1:
        raise ValueError(f"rank must be >= 1, got {rank}.")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}.")
    if len(channels) != len(attention_levels):
        raise ValueError("channels and attention_levels must have the same length.")
    if prediction_type not in PREDICTION_TYPES:
        raise ValueError(f"prediction_type must be one of {PREDICTION_TYPES}, got {prediction_type!r}.")
    data_channels = 2 * rank
    with torch.random.fork_rng(devices=[], enabled=init_seed is not None):
        if init_seed is not None:
            torch.manual_seed(int(init_seed))
        model = DiffusionModelUNet(
            spatial_dims=2,
            in_channels=2 * data_channels,
            out_channels=2 * data_channels if learn_sigma else data_channels,
            num_res_blocks=num_res_blocks if isinstance(num_res_blocks, int) else tuple(num_res_blocks),
            channels=tuple(channels),
            attention_levels=tuple(bool(a) for a in attention_levels),
            norm_num_groups=norm_num_groups,
            resblock_updown=resblock_updown,
            num_head_channels=num_head_channels
            if isinstance(num_head_channels, int)
            else tuple(num_head_channels),
            use_flash_attention=use_flash_attention,
        )
    if dropout > 0:
        _insert_dropout(model, dropout)
    model.prediction_type = prediction_type
    model.hyper_parameters = model_hyper_parameters(
        rank=rank,
        learn_sigma=learn_sigma,
        channels=channels,
        attention_levels=attention_levels,
        num_res_blocks=num_res_blocks,
        num_head_channels=num_head_channels,
        dropout=dropout,
        norm_num_groups=norm_num_groups,
        resblock_updown=resblock_updown,
        use_flash_attention=use_flash_attention,
        prediction_type=prediction_type,
    )
    return model


def _insert_dropout(model: nn.Module, p: float) -> None:
    """Put ``nn.Dropout(p)`` in front of the last convolution of every residual block.

    ``conv2`` of a MONAI residual block is a ``Convolution`` (a sequential whose only child is
    ``conv``); it is replaced by a sequential ``(dropout, conv)`` so the parameter names stay
    ``...conv2.conv.weight``.
    """
    for block in model.modules():
        if isinstance(block, DiffusionUNetResnetBlock):
            conv = block.conv2.conv if hasattr(block.conv2, "conv") else block.conv2
            block.conv2 = nn.Sequential(OrderedDict([("dropout", nn.Dropout(p)), ("conv", conv)]))


def model_hyper_parameters(
    rank: int = 5,
    learn_sigma: bool = True,
    channels: Sequence[int] = (64, 128, 128),
    attention_levels: Sequence[bool] = (False, False, True),
    num_res_blocks: int | Sequence[int] = 2,
    num_head_channels: int | Sequence[int] = 32,
    dropout: float = 0.0,
    norm_num_groups: int = 32,
    resblock_updown: bool = False,
    use_flash_attention: bool = False,
    prediction_type: str = "epsilon",
) -> dict[str, Any]:
    """The keyword arguments of :func:`build_model` as a plain, JSON-compatible dictionary."""
    return {
        "rank": int(rank),
        "learn_sigma": bool(learn_sigma),
        "channels": [int(c) for c in channels],
        "attention_levels": [bool(a) for a in attention_levels],
        "num_res_blocks": num_res_blocks
        if isinstance(num_res_blocks, int)
        else [int(n) for n in num_res_blocks],
        "num_head_channels": (
            num_head_channels if isinstance(num_head_channels, int) else [int(n) for n in num_head_channels]
        ),
        "dropout": float(dropout),
        "norm_num_groups": int(norm_num_groups),
        "resblock_updown": bool(resblock_updown),
        "use_flash_attention": bool(use_flash_attention),
        "prediction_type": str(prediction_type),
    }


def build_scheduler(
    num_train_timesteps: int = 1000,
    beta_start: float = 1e-4,
    beta_end: float = 0.02,
    schedule: str = "linear_beta",
    clip_sample: bool = False,
) -> DDPMScheduler:
    """The forward-process noise schedule (MONAI :class:`~monai.networks.schedulers.DDPMScheduler`).

    MONAI's ``"linear_beta"`` is ``linspace(beta_start, beta_end, T)``, i.e. the DDPM/improved-DDPM
    linear schedule for ``T = 1000`` (improved DDPM rescales the end points by ``1000 / T`` for
    other ``T``; here they are taken as given). ``"scaled_linear_beta"``, ``"sigmoid_beta"``
    and ``"cosine"`` are MONAI's other schedules (``cosine`` ignores the beta end points).

    ``clip_sample`` is off by default: the data are divided by the 99th percentile of the
    condition magnitude, not mapped to ``[-1, 1]``, so clipping ``x_0`` would bias bright voxels.
    """
    kwargs: dict[str, Any] = {}
    if schedule != "cosine":
        kwargs = {"beta_start": float(beta_start), "beta_end": float(beta_end)}
    scheduler = DDPMScheduler(
        num_train_timesteps=int(num_train_timesteps),
        schedule=schedule,
        variance_type="fixed_small",
        clip_sample=clip_sample,
        prediction_type="epsilon",
        **kwargs,
    )
    scheduler.hyper_parameters = scheduler_hyper_parameters(
        num_train_timesteps, beta_start, beta_end, schedule, clip_sample
    )
    return scheduler


def scheduler_hyper_parameters(
    num_train_timesteps: int = 1000,
    beta_start: float = 1e-4,
    beta_end: float = 0.02,
    schedule: str = "linear_beta",
    clip_sample: bool = False,
) -> dict[str, Any]:
    """The keyword arguments of :func:`build_scheduler` as a plain, JSON-compatible dictionary
    (:func:`build_scheduler` stores them as the scheduler's ``hyper_parameters``)."""
    return {
        "num_train_timesteps": int(num_train_timesteps),
        "beta_start": float(beta_start),
        "beta_end": float(beta_end),
        "schedule": str(schedule),
        "clip_sample": bool(clip_sample),
    }


def build_ddim_scheduler(
    num_train_timesteps: int = 1000,
    beta_start: float = 1e-4,
    beta_end: float = 0.02,
    schedule: str = "linear_beta",
    clip_sample: bool = False,
) -> DDIMScheduler:
    """A MONAI :class:`~monai.networks.schedulers.DDIMScheduler` on the same noise schedule as
    :func:`build_scheduler` (same arguments)."""
    kwargs: dict[str, Any] = {}
    if schedule != "cosine":
        kwargs = {"beta_start": float(beta_start), "beta_end": float(beta_end)}
    return DDIMScheduler(
        num_train_timesteps=int(num_train_timesteps),
        schedule=schedule,
        clip_sample=clip_sample,
        set_alpha_to_one=True,
        prediction_type="epsilon",
        **kwargs,
    )


def predict_eps_and_var(
    model: nn.Module,
    x_t: torch.Tensor,
    t: torch.Tensor | int,
    cond: torch.Tensor,
    alphas_cumprod: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Run the conditional network and split its output.

    Args:
        model: network from :func:`build_model` (possibly wrapped in DDP).
        x_t: noisy images ``(B, 2R, H, W)``.
        t: timesteps, an ``int``, a scalar tensor or a ``(B,)`` tensor.
        cond: condition ``(B, 2R, H, W)`` (aliased gridding image, same normalisation).
        alphas_cumprod: ``abar_t`` of the training schedule, needed to convert the output of a
            ``prediction_type="v"`` network to ``eps`` (``None``: the default linear schedule).

    Returns:
        ``(eps, v)``: predicted noise ``(B, 2R, H, W)`` and the variance interpolation ``v``
        ``(B, 2R, H, W)`` for a learned-variance network, else ``None``.
    """
    if x_t.shape != cond.shape:
        raise ValueError(f"x_t {tuple(x_t.shape)} and cond {tuple(cond.shape)} must have the same shape.")
    batch = x_t.shape[0]
    t = torch.as_tensor(t, device=x_t.device)
    if t.ndim == 0:
        t = t.expand(batch)
    t = t.to(device=x_t.device, dtype=torch.long)
    out = model(torch.cat([x_t, cond.to(dtype=x_t.dtype)], dim=1), timesteps=t)
    c = x_t.shape[1]
    if out.shape[1] not in (c, 2 * c):
        raise ValueError(f"network returned {out.shape[1]} channels for {c} data channels.")
    first, var = (out[:, :c], out[:, c:]) if out.shape[1] == 2 * c else (out, None)
    if getattr(unwrap_model(model), "prediction_type", "epsilon") == "v":
        abar = _default_alphas_cumprod() if alphas_cumprod is None else alphas_cumprod
        a = abar.to(device=x_t.device, dtype=torch.float32)[t].view(-1, *([1] * (x_t.ndim - 1)))
        first = (1.0 - a).sqrt() * x_t.float() + a.sqrt() * first.float()
    return first, var


def _default_alphas_cumprod() -> torch.Tensor:
    return build_scheduler().alphas_cumprod


def save_model(
    path: str | os.PathLike, network: nn.Module, hyper_parameters: Mapping[str, Any] | None = None
) -> Path:
    """Write MRF-IDDPM weights: ``path`` (plain ``state_dict``) + ``path.with_suffix(".json")``.

    Args:
        path: weights file, e.g. ``models/model.pt``.
        network: a network of :func:`build_model` (wrappers are unwrapped); its weights are written.
        hyper_parameters: further entries (``"scheduler"``: :func:`build_scheduler` kwargs,
            ``"data"``: basis, sequence, channel scale, ...); ``"format"`` and ``"model"`` (the
            network's ``hyper_parameters``) are filled in.
    """
    bare = unwrap_model(network)
    model_hp = getattr(bare, "hyper_parameters", None)
    if model_hp is None:
        raise TypeError("save_model needs a network built by build_model (it records its hyper_parameters)")
    hp = {"format": CHECKPOINT_FORMAT, **dict(hyper_parameters or {}), "model": dict(model_hp)}
    return save_weights(path, bare.state_dict(), hp)


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read MRF-IDDPM weights or a training checkpoint safely (``torch.load(weights_only=True)``).

    Args:
        path: weights (``model.pt`` with ``model.json`` beside it: exported by the trainer or
            :func:`save_model`) or a training checkpoint (``checkpoints/checkpoint_<step>.pt``).
        map_location: device of the loaded tensors.

    Returns:
        one view of both: ``"format"``, ``"hyper_parameters"`` (``{"model": build_model kwargs,
        "scheduler": build_scheduler kwargs, "data": ..., ...}``), ``"state_dict"`` (the weights
        inference uses: EMA), ``"step"``, ``"best_metric"``; a training checkpoint also has
        ``"model"`` (raw weights), ``"ema"``, ``"optimizer"``, ``"rng"``, ``"history"``, ...

    Raises:
        FileNotFoundError: missing file (or the ``.json`` of a weights file).
        mrf_monai.io.weights.WeightsFileError: a file that a safe load refuses, or of another format
            (e.g. an older release's pickled checkpoint, to be re-exported or converted).
    """
    return read_model_file(path, map_location, CHECKPOINT_FORMAT, "MRF-IDDPM model")


def load_model(
    path: str | os.PathLike, map_location: str | torch.device = "cpu", weights: str = "auto"
) -> tuple[DiffusionModelUNet, dict[str, Any]]:
    """Rebuild the MRF-IDDPM network of a weights file (or training checkpoint) and load its weights.

    Args:
        path: ``models/model.pt`` (with ``models/model.json``) or ``checkpoints/checkpoint_<step>.pt``.
        map_location: device of the returned network.
        weights: ``"auto"`` (the exported/EMA weights), ``"ema"`` or ``"model"`` (the raw,
            non-averaged training weights; training checkpoints only).

    Returns:
        ``(network, hyper_parameters)``: the network in eval mode on ``map_location``, and
        ``{"format", "model", "scheduler", "loss", "training", "data", "step", "best_metric", ...}``
        (``data``: ``basis`` (T, R) complex64, ``sequence``, ``sequence_key``, ``channel_scale``,
        ``patch_size``, ...).
    """
    ckpt = load_checkpoint(path)
    hp = {
        "format": ckpt["format"],
        **dict(ckpt["hyper_parameters"]),
        "step": ckpt.get("step"),
        "best_metric": ckpt.get("best_metric"),
    }
    return load_checkpoint_model(ckpt, map_location=map_location, weights=weights), hp


def load_checkpoint_model(
    path: str | os.PathLike | Mapping[str, Any],
    map_location: str | torch.device = "cpu",
    weights: str = "auto",
    strict: bool = True,
) -> DiffusionModelUNet:
    """Rebuild the network from the stored hyper-parameters and load its weights.

    Args:
        path: weights file, training checkpoint, or what :func:`load_checkpoint` returned.
        map_location: device of the returned network.
        weights: ``"auto"`` (``state_dict``, i.e. EMA weights when stored, else ``ema``, else
            ``model``), ``"ema"`` or ``"model"`` (the raw, non-averaged training weights).
        strict: passed to ``load_state_dict``.

    Returns:
        the network in eval mode on ``map_location``.
    """
    ckpt = dict(path) if isinstance(path, Mapping) else load_checkpoint(path, map_location="cpu")
    model = build_model(**dict(ckpt["hyper_parameters"]["model"]))
    if weights == "auto":
        order = ("state_dict", "ema", "model")
    elif weights in ("ema", "model"):
        order = (weights,)
    else:
        raise ValueError(f"weights must be 'auto', 'ema' or 'model', got {weights!r}.")
    state = next((ckpt[k] for k in order if ckpt.get(k) is not None), None)
    if state is None:
        raise KeyError(f"checkpoint has none of the weights {order}.")
    if "shadow" in state:  # a training checkpoint stores the EMA object's own state
        state = state["shadow"]
    model.load_state_dict(state, strict=strict)
    return model.to(map_location).eval()


def scheduler_from_checkpoint(path: str | os.PathLike | Mapping[str, Any]) -> DDPMScheduler:
    """The training noise schedule of a model (:func:`build_scheduler` kwargs).

    Args:
        path: weights file or training checkpoint, what :func:`load_checkpoint` returned, or the
            hyper-parameters that :func:`load_model` returned.
    """
    if isinstance(path, Mapping):
        hp = path["hyper_parameters"] if "hyper_parameters" in path else path
    else:
        hp = load_checkpoint(path)["hyper_parameters"]
    return build_scheduler(**dict(hp.get("scheduler") or {}))
