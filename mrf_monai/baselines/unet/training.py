"""Supervised training of the U-Net baseline on the shared engine (:class:`mrf_monai.engines.Trainer`).

The U-Net is trained on the same pairs, per-step seeded batches, patches and checkpoint layout
as MRF-IDDPM, with an L1 (default) or MSE loss between its output and the reference, and is
validated on the whole slice in one forward pass (zero-padded to a multiple of its
down-sampling factor).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from mrf_monai.engines.trainer import Trainer
from mrf_monai.engines.validation import map_errors, nrmse

from .network import UNET_CHECKPOINT_FORMAT, predict_padded

__all__ = ["UNetTrainer", "loss_name"]

_LOSS_NAMES = {"L1Loss": "l1", "MSELoss": "mse"}


def loss_name(loss_function: nn.Module) -> str:
    """``"l1"`` for ``torch.nn.L1Loss``, ``"mse"`` for ``torch.nn.MSELoss``, else the class name."""
    return _LOSS_NAMES.get(type(loss_function).__name__, type(loss_function).__name__)


class UNetTrainer(Trainer):
    """Supervised training of the U-Net baseline; build it from a bundle config and call :meth:`run`.

    Args:
        network: a :class:`~mrf_monai.baselines.unet.ResidualUNet` (``build_unet``).
        optimizer: optimiser of ``network.parameters()`` (the bundle: Adam).
        loss_function: ``prediction, target -> scalar`` (the bundle: ``torch.nn.L1Loss``, or
            ``torch.nn.MSELoss``), computed in float32 on all channels and pixels.
        train_dataset: map-style dataset of ``{"image", "cond"}`` dicts (``(2R, H, W)`` float).
        output_dir: run folder.
        quantile: intensity-normalisation quantile of the data (stored with the weights; the
            reconstructor normalises by it).
        **engine_kwargs: every further argument of :class:`mrf_monai.engines.Trainer`
            (``train_transforms``, ``max_steps``, ``batch_size``, ``lr_warmup_steps``, ``grad_clip``,
            ``amp``, ``amp_dtype``, ``max_time_s``, ``checkpoint_every``, ``resume``,
            ``val_dataset``, ``val_every``, ``dictionary``, ``sequence``, ``model_path``,
            ``channel_scale``, ``init_from`` (fine-tuning from exported U-Net weights), ...).
            Validation uses the whole slice unless ``val_roi`` is set.

    The sequence and the training basis (the dataset's, else the dictionary's) are stored with
    the weights so that inference refuses other data.
    """

    format_tag = UNET_CHECKPOINT_FORMAT
    progress_label = "unet"

    def __init__(
        self,
        network: nn.Module,
        optimizer: torch.optim.Optimizer,
        loss_function: nn.Module,
        train_dataset: Any,
        output_dir: str | os.PathLike = "runs/unet_baseline",
        quantile: float = 0.99,
        **engine_kwargs: Any,
    ) -> None:
        super().__init__(network, optimizer, train_dataset, output_dir=output_dir, **engine_kwargs)
        self.loss_function = loss_function
        self.quantile = float(quantile)
        model_hp = self.model_hyper_parameters
        self.hyper_parameters = {
            "model": model_hp,
            "rank": int(model_hp["rank"]),
            "sequence_key": self.data_description.get("sequence_key"),
            "data": self.data_description,
            "quantile": self.quantile,
            "training": {
                "loss": loss_name(loss_function),
                **self.training_hyper_parameters(),
                **self.extra_hyper_parameters,
            },
        }

    def compute_loss(self, batch: Mapping[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        """Whole-item prediction of the batch and its loss against the reference."""
        target, cond = self.prepare_batch(batch)
        with self.autocast():
            pred = predict_padded(self.ddp_network, cond)
        loss = self.loss_function(pred.float(), target)
        return loss, {"loss": float(loss.detach())}

    @torch.no_grad()
    def predict(self, cond: torch.Tensor) -> torch.Tensor:
        """The network's estimate ``(2R, H, W)`` (CPU, unscaled) of one normalised condition."""
        self.network.eval()
        est = predict_padded(self.network, self.scaled(cond[None].to(self.device)))
        return self.scaled(est, inverse=True)[0].float().cpu()

    @torch.no_grad()
    def validate(self) -> dict[str, Any]:
        """Whole-slice prediction of the validation item; NRMSE and (with a dictionary) MAPEs."""
        ref, cond = self.validation_item()
        est = self.predict(cond)
        out: dict[str, Any] = {"nrmse": nrmse(est, ref)}
        if self.dictionary is not None:
            errors = map_errors(est, ref, self.dictionary)
            out.update({k: errors[k] for k in ("t1_mape", "t2_mape", "metric")})
        else:
            out["metric"] = out["nrmse"]
        return out
