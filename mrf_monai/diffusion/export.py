# Copyright (c) mrf_monai developers.
# Licensed under the Apache License, Version 2.0.
"""Single-input export form of the MRF-IDDPM network, for ``monai.bundle ckpt_export``.

MONAI's ``python -m monai.bundle ckpt_export`` converts a bundle's network to TorchScript with one
example input (``inputs=[torch.rand(input_shape)]``), while the network of :func:`build_model`
takes two, ``model(x, timesteps)``; and ``torch.jit.script`` cannot compile MONAI's
``DiffusionModelUNet`` (its attention blocks reshape with ``*shape[:2]``), so the export has to
trace. :class:`TimestepChannelUNet` is the same network with one input: the network input with one
more channel, the timestep, constant over the image::

    export_input = torch.cat([x_t, cond, t * ones(N, 1, *spatial)], dim=1)   # (N, 4R + 1, H, W)
    export_model(export_input) == model(torch.cat([x_t, cond], 1), t)       # (N, 4R or 2R, H, W)

(:func:`append_timestep_channel` builds that input). ``t`` is read from the first voxel of the
last channel and passed to the network as a float tensor, like the timesteps of the eager network
(its sinusoidal embedding converts them to float32 anyway), so integer timesteps give exactly the
eager output. The trace records that read as an operation: the exported module works for every
timestep, batch size and spatial size (a multiple of ``2 ** (len(channels) - 1)``), not only those
of the example input.

The export form is a subclass of MONAI's ``DiffusionModelUNet`` with the same modules, so its
``state_dict`` keys are exactly those of the plain network and of ``models/model.pt``. Its
parameters start undefined (NaN) and :meth:`TimestepChannelUNet.load_state_dict` refuses a
state dict that leaves any of them undefined: MONAI's ``ckpt_export`` loads the checkpoint with
``monai.networks.utils.copy_model_state`` when ignite is not installed, which silently skips keys
that are missing or of another shape (e.g. a checkpoint of other hyper-parameters than the
``model.json`` the config reads), and that would otherwise export a partly random network.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from monai.networks.nets import DiffusionModelUNet

from .model import build_model

__all__ = ["TimestepChannelUNet", "build_export_model", "to_export_model", "append_timestep_channel"]


class TimestepChannelUNet(DiffusionModelUNet):
    """MRF-IDDPM network with a single input: the network input plus a timestep channel.

    Not built directly: use :func:`build_export_model` (the bundle's ``export_network_def``) or
    :func:`to_export_model`. Its modules, parameters and ``state_dict`` keys are those of
    :func:`~mrf_monai.diffusion.model.build_model`'s network; only :meth:`forward` differs.
    """

    #: whether a complete state dict has been loaded (set by :meth:`load_state_dict`).
    weights_loaded: bool = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        """Run the network on ``x = cat([network input, timestep channel], 1)``.

        Args:
            x: ``(N, in_channels + 1, *spatial)``: the network input (``[x_t, cond]``, ``4R``
                channels) and, last, the diffusion timestep of each batch item, constant over
                the image (only its first voxel is read).

        Returns:
            the network output ``(N, out_channels, *spatial)``, as ``model(x[:, :-1], t)``.

        Raises:
            RuntimeError: no complete weights have been loaded yet.
            ValueError: ``x`` has not ``in_channels + 1`` channels.
        """
        if not self.weights_loaded:
            raise RuntimeError(
                "TimestepChannelUNet has no weights yet: load a complete state dict first "
                "(load_state_dict, or monai.bundle ckpt_export --ckpt_file models/model.pt)."
            )
        if x.ndim < 3 or x.shape[1] != self.in_channels + 1:
            raise ValueError(
                f"the export form of the network takes (N, {self.in_channels + 1}, *spatial): "
                f"{self.in_channels} network channels and the timestep channel, "
                f"got {tuple(int(s) for s in x.shape)}; "
                f'with ckpt_export pass --input_shape "[1, {self.in_channels + 1}, 32, 32]".'
            )
        timesteps = x[:, -1].reshape(x.shape[0], -1)[:, 0]
        return super().forward(x[:, :-1], timesteps=timesteps)

    def load_state_dict(
        self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False
    ) -> Any:
        """``nn.Module.load_state_dict``, then check that no parameter or buffer is left undefined.

        Raises:
            RuntimeError: what ``nn.Module.load_state_dict`` raises, or some floating-point
                variables are still NaN: the state dict lacks them or holds them in another
                shape (the message names them), or holds NaN itself.
        """
        result = super().load_state_dict(state_dict, strict=strict, assign=assign)
        undefined = [
            name
            for name, value in self.state_dict().items()
            if value.is_floating_point() and bool(torch.isnan(value).any())
        ]
        if undefined:
            self.weights_loaded = False
            raise RuntimeError(
                f"the weights loaded into the MRF-IDDPM export network leave {len(undefined)} of "
                f"{len(self.state_dict())} variables undefined (NaN), e.g. {undefined[:3]}: the "
                "checkpoint lacks them, holds them in another shape or holds NaN. Export a plain "
                "state dict (models/model.pt) whose model.json is the one the config reads "
                "(ckpt_export ... --ckpt_file X.pt --model_path X.pt)."
            )
        self.weights_loaded = True
        return result


def build_export_model(hyper_parameters: Mapping[str, Any]) -> TimestepChannelUNet:
    """The export form of the network of ``build_model(**hyper_parameters)``, without weights.

    Args:
        hyper_parameters: keyword arguments of :func:`~mrf_monai.diffusion.model.build_model`
            (``model.json["model"]``, :func:`~mrf_monai.io.weights.load_hyper_parameters`).

    Returns:
        a :class:`TimestepChannelUNet` in eval mode whose floating-point parameters and buffers
        are NaN until a complete state dict is loaded (:meth:`TimestepChannelUNet.load_state_dict`).
    """
    network = build_model(**dict(hyper_parameters))
    # the same object, re-classed to the subclass that only replaces ``forward`` (as
    # torch.nn.utils.parametrize re-classes modules): the modules and state-dict keys are those
    # build_model made, with no second copy of its construction.
    network.__class__ = TimestepChannelUNet
    with torch.no_grad():
        for value in network.state_dict().values():
            if value.is_floating_point():
                value.fill_(float("nan"))
    network.weights_loaded = False
    return network.eval()


def to_export_model(network: DiffusionModelUNet) -> TimestepChannelUNet:
    """The export form of a loaded network of :func:`~mrf_monai.diffusion.model.build_model`.

    Args:
        network: the eager network (its ``hyper_parameters`` attribute rebuilds it); not modified.

    Returns:
        a new :class:`TimestepChannelUNet` on the network's device, with a copy of its weights.
    """
    hp = getattr(network, "hyper_parameters", None)
    if hp is None:
        raise TypeError(
            "to_export_model needs a network built by mrf_monai.diffusion.model.build_model "
            "(it records its hyper_parameters)"
        )
    export = build_export_model(hp)
    param = next(network.parameters(), None)
    if param is not None:
        export = export.to(param.device)
    export.load_state_dict(network.state_dict())
    return export


def append_timestep_channel(x: torch.Tensor, timesteps: torch.Tensor | int | float) -> torch.Tensor:
    """The input of :class:`TimestepChannelUNet`: ``x`` with the timesteps as one more channel.

    Args:
        x: network input ``(N, C, *spatial)`` (``[x_t, cond]``).
        timesteps: an ``int`` / ``float``, a scalar tensor or one timestep per batch item ``(N,)``.

    Returns:
        ``(N, C + 1, *spatial)`` of ``x``'s dtype and device, the last channel constant per item.
    """
    t = torch.as_tensor(timesteps, device=x.device, dtype=x.dtype)
    if t.ndim == 0:
        t = t.expand(x.shape[0])
    if t.shape != (x.shape[0],):
        raise ValueError(f"timesteps of shape {tuple(t.shape)} for a batch of {x.shape[0]} items.")
    channel = t.view(-1, *([1] * (x.ndim - 1))).expand(x.shape[0], 1, *x.shape[2:])
    return torch.cat([x, channel], dim=1)
