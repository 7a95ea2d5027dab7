# Copyright (c) mrf_monai developers.
# Licensed under the Apache License, Version 2.0.
"""Training of MRF-IDDPM on the shared engine (:class:`mrf_monai.engines.Trainer`).

:class:`DiffusionTrainer` trains the conditional noise predictor of
:mod:`mrf_monai.diffusion.model` on ``{"image": reference, "cond": condition}`` pairs
(``(2R, H, W)`` float32 each) with the improved-DDPM hybrid loss
(:class:`~mrf_monai.diffusion.losses.DiffusionLoss`), an exponential moving average of the
weights (what is exported and sampled) and DDIM validation with dictionary matching (T1/T2
MAPE). The loop, mixed precision, checkpoints, exact resuming, ``max_time_s``, TensorBoard and
``torchrun`` + DDP are the engine's.

In the bundle (``bundles/mrf_iddpm/configs/train.json``) network, optimiser, loss and data are
config components::

    "network_def": {"_target_": "mrf_monai.diffusion.model.build_model", "rank": "@rank", ...},
    "network": "$@network_def.to(@device)",
    "optimizer": {"_target_": "torch.optim.Adam", "params": "$@network.parameters()", "lr": "@lr"},
    "noise_scheduler": {"_target_": "mrf_monai.diffusion.model.build_scheduler", ...},
    "loss": {"_target_": "mrf_monai.diffusion.losses.DiffusionLoss", "scheduler": "@noise_scheduler", ...},
    "trainer": {"_target_": "mrf_monai.diffusion.training.DiffusionTrainer", "network": "@network",
                "optimizer": "@optimizer", "loss_function": "@loss",
                "train_dataset": "@train#dataset", "train_transforms": "@train#preprocessing", ...}
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from mrf_monai.engines.data import step_seed
from mrf_monai.engines.trainer import Trainer
from mrf_monai.engines.validation import display_image, map_errors, nrmse
from mrf_monai.transforms.complex import channels_to_complex

from .ema import ExponentialMovingAverage
from .losses import DiffusionLoss
from .model import CHECKPOINT_FORMAT, predict_eps_and_var
from .sampling import sample

__all__ = ["DiffusionTrainer"]

#: how the data are normalised (stored with the weights for the record).
NORMALISATION = "per-slice scale = quantile(|cond[0]|, 0.99) (docs/interfaces.md)"


class DiffusionTrainer(Trainer):
    """Trains MRF-IDDPM; build it from a bundle config and call :meth:`run`.

    Args:
        network: the noise predictor of :func:`~mrf_monai.diffusion.model.build_model`.
        optimizer: optimiser of ``network.parameters()`` (the bundle: Adam).
        loss_function: a :class:`~mrf_monai.diffusion.losses.DiffusionLoss`; its ``scheduler``
            (from :func:`~mrf_monai.diffusion.model.build_scheduler`) is the forward process
            used for training, validation and stored with the weights. ``"hybrid"`` needs a
            network with ``learn_sigma``; the loss and network prediction types must agree.
        train_dataset: map-style dataset of ``{"image", "cond"}`` dicts (``(2R, H, W)`` float).
        output_dir: run folder: ``checkpoints/``, ``tensorboard/``, ``model_final.pt`` (+ ``.json``).
        ema_decay: EMA decay; ``ema_warmup``: ADM-style warm-up of the decay.
        val_ddim_steps: DDIM steps of the validation sample; ``val_num_samples`` samples averaged.
        **engine_kwargs: every further argument of :class:`mrf_monai.engines.Trainer`
            (``train_transforms``, ``max_steps``, ``batch_size``, ``lr_warmup_steps``,
            ``grad_clip``, ``amp``, ``amp_dtype``, ``max_time_s``, ``checkpoint_every``, ``resume``,
            ``val_dataset``, ``val_roi``, ``val_every``, ``dictionary``, ``model_path``,
            ``channel_scale``, ``init_from``, ...). The validation image (``val_roi``) must be
            divisible by ``2 ** (levels - 1)``.

    Fine-tuning (``init_from``, :mod:`mrf_monai.engines.initialise`): the exported file holds the
    EMA weights, so both the trained network and its EMA start from them (the EMA's warm-up
    counter starts at 0, like every other state of the new run).

    The exported weights (``model_path``, ``checkpoints/best.pt``, ``model_final.pt``) are the
    EMA weights; training checkpoints also hold the raw weights (``"model"``) and the EMA state.
    """

    format_tag = CHECKPOINT_FORMAT

    def __init__(
        self,
        network: nn.Module,
        optimizer: torch.optim.Optimizer,
        loss_function: DiffusionLoss,
        train_dataset: Any,
        output_dir: str | os.PathLike = "runs/mrf_iddpm",
        ema_decay: float = 0.9999,
        ema_warmup: bool = False,
        val_ddim_steps: int = 50,
        val_num_samples: int = 1,
        **engine_kwargs: Any,
    ) -> None:
        super().__init__(network, optimizer, train_dataset, output_dir=output_dir, **engine_kwargs)
        model_hp = self.model_hyper_parameters
        if not isinstance(loss_function, DiffusionLoss):
            raise TypeError(f"loss_function must be a DiffusionLoss, got {type(loss_function).__name__}")
        if loss_function.loss_type == "hybrid" and not model_hp["learn_sigma"]:
            raise ValueError(
                "loss_type='hybrid' needs a network with learn_sigma=True (use 'mse' otherwise)."
            )
        if loss_function.prediction_type != model_hp["prediction_type"]:
            raise ValueError(
                f"the loss expects prediction_type {loss_function.prediction_type!r}, the network predicts "
                f"{model_hp['prediction_type']!r}: give both the same prediction_type"
            )
        self.loss_fn = loss_function
        self.scheduler = loss_function.scheduler
        scheduler_hp = getattr(self.scheduler, "hyper_parameters", None)
        if not isinstance(scheduler_hp, Mapping):
            raise TypeError(
                "the loss's scheduler has no 'hyper_parameters', which the exported weights need: build it "
                "with mrf_monai.diffusion.model.build_scheduler"
            )
        self.val_ddim_steps = int(val_ddim_steps)
        self.val_num_samples = max(1, int(val_num_samples))
        self.ema = ExponentialMovingAverage(self.network, decay=ema_decay, warmup=ema_warmup)
        self.hyper_parameters = {
            "model": model_hp,
            "scheduler": dict(scheduler_hp),
            "loss": {
                "loss_type": loss_function.loss_type,
                "vlb_weight": float(loss_function.vlb_weight),
                "decoder_nll": loss_function.decoder_nll,
            },
            "training": {**self.training_hyper_parameters(), "ema_decay": float(ema_decay)},
            "normalisation": NORMALISATION,
            "data": self.data_description,
            **self.extra_hyper_parameters,
        }

    # ------------------------------------------------------------------ engine hooks
    def compute_loss(self, batch: Mapping[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        """Noise a batch at random timesteps (per-step seeded) and return the diffusion loss."""
        x0, cond = self.prepare_batch(batch)
        gen = self.step_generator(3)
        t = torch.randint(0, self.scheduler.num_train_timesteps, (x0.shape[0],), generator=gen).to(
            self.device
        )
        noise = torch.randn(x0.shape, generator=gen).to(self.device)
        x_t = self.scheduler.add_noise(original_samples=x0, noise=noise, timesteps=t)
        with self.autocast():
            eps, v = predict_eps_and_var(self.ddp_network, x_t, t, cond, self.scheduler.alphas_cumprod)
        losses = self.loss_fn(eps.float(), noise, t, x0, x_t, None if v is None else v.float())
        logs = {k: float(losses[k].detach()) for k in ("loss", "mse", "vlb")}
        return losses["loss"], logs

    def after_step(self) -> None:
        """Update the EMA weights."""
        self.ema.update(self.network)

    def export_state_dict(self) -> dict[str, torch.Tensor]:
        """The EMA weights (what inference samples with)."""
        return self.ema.module.state_dict()

    def training_state(self) -> dict[str, Any]:
        """Raw training weights and the EMA state."""
        return {"model": self.network.state_dict(), "ema": self.ema.state_dict()}

    def load_training_state(self, ckpt: Mapping[str, Any]) -> None:
        """Restore raw and EMA weights."""
        self.network.load_state_dict(ckpt["model"])
        self.ema.load_state_dict(ckpt["ema"])
        self.ema.to(self.device)

    # ------------------------------------------------------------------ validation
    def validation_item(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The centre crop of the validation slice, checked against the network's down-sampling."""
        ref, cond = super().validation_item()
        factor = 2 ** (len(self.model_hyper_parameters["channels"]) - 1)
        if ref.shape[-1] % factor or ref.shape[-2] % factor:
            raise ValueError(
                f"validation image {tuple(ref.shape[-2:])} must be divisible by {factor}; set val_roi."
            )
        return ref, cond

    @torch.no_grad()
    def validate(self) -> dict[str, Any]:
        """DDIM-sample the validation slice with the EMA network and score it (process 0)."""
        ref, cond = self.validation_item()
        net = self.ema.module.eval()
        gen = torch.Generator().manual_seed(self.validation_seed())
        cond_b = self.scaled(cond[None].expand(self.val_num_samples, *cond.shape).to(self.device))
        samples = sample(
            net, cond_b, n_steps=self.val_ddim_steps, method="ddim", generator=gen, scheduler=self.scheduler
        )
        est = self.scaled(samples.mean(0).float(), inverse=True).cpu()
        out: dict[str, Any] = {
            "nrmse": nrmse(est, ref),
            "images": {"condition": cond, "sample": est, "reference": ref},
        }
        if self.dictionary is not None:
            out.update(map_errors(est, ref, self.dictionary, condition=cond))
        else:
            out["metric"] = out["nrmse"]
        return out

    def validation_seed(self) -> int:
        """Seed of the validation samples (the same at every validation: scores are comparable)."""
        return step_seed(self.seed, 0, 5)

    def log_validation(self, writer: Any, result: Mapping[str, Any]) -> None:
        """Scalars, the first component's magnitude of condition, sample and reference, and the maps."""
        super().log_validation(writer, result)
        if writer is None:
            return
        for k, img in result["images"].items():
            writer.add_image(f"val/{k}", display_image(channels_to_complex(img)[0].abs()), self.step)
        for k, img in result.get("maps", {}).items():
            writer.add_image(f"val/{k}", display_image(img), self.step)
