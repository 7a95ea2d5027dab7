# Copyright (c) mrf_monai developers.
# Licensed under the Apache License, Version 2.0.
"""Training losses of MRF-IDDPM and the Gaussian-diffusion algebra they need.

``loss_type="mse"`` is DDPM's ``L_simple = E ||eps - eps_theta(x_t, t, c)||^2``.

``loss_type="hybrid"`` is improved DDPM's (Nichol & Dhariwal 2021, their eq. 16)
``L_hybrid = L_simple + lambda * L_vlb`` with ``lambda = 0.001``, for a network that also predicts
the log-variance interpolation ``v`` (see :func:`model_log_variance`). ``L_vlb = sum_t L_t`` is
estimated with the uniformly sampled ``t`` of ``L_simple`` as ``T * L_t``, so the weight of the
per-sample term is ``lambda * T`` (``= 1`` for ``T = 1000``, exactly improved DDPM's code). As in
improved DDPM the mean is detached in ``L_vlb`` (stop-gradient): ``L_vlb`` only trains the
variance, ``L_simple`` only the mean. Terms are in bits per dimension.

* ``L_t`` for ``t > 0``: ``KL(q(x_{t-1} | x_t, x_0) || p_theta(x_{t-1} | x_t))`` of two Gaussians.
* ``L_0``: the decoder negative log-likelihood ``-log p_theta(x_0 | x_1)``. The data here are
  continuous (normalised compressed TSMIs, not 8-bit images), so the default
  ``decoder_nll="gaussian"`` uses the continuous Gaussian density (the "continuous
  approximation"; it can be negative). ``decoder_nll="discretized"`` uses improved DDPM's
  discretised Gaussian with bins of width ``bin_width`` (``2/255`` for data in ``[-1, 1]``)
  and open end bins at ``+-1``; only meaningful for data scaled to ``[-1, 1]``.

All functions take tensors on any device; the schedule tables are computed in float64 on
that device from a MONAI scheduler (anything with ``betas`` and ``num_train_timesteps``).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

__all__ = [
    "schedule_tables",
    "extract",
    "predict_x0_from_eps",
    "q_posterior_mean_variance",
    "model_log_variance",
    "p_mean_variance",
    "normal_kl",
    "gaussian_log_likelihood",
    "discretized_gaussian_log_likelihood",
    "DiffusionLoss",
]

_LOG2 = math.log(2.0)


def schedule_tables(scheduler: Any, device: torch.device | str | None = None) -> dict[str, torch.Tensor]:
    """Per-timestep tables (float64, shape ``(T,)``) of a scheduler's noise schedule.

    Keys: ``betas``, ``alphas_cumprod``, ``alphas_cumprod_prev``, ``posterior_variance``
    (``beta_tilde``), ``posterior_log_variance_clipped`` (``log beta_tilde`` with the
    ``t = 0`` entry, which is 0, replaced by ``beta_tilde_1``), ``posterior_mean_coef1``
    (of ``x_0``), ``posterior_mean_coef2`` (of ``x_t``), ``log_betas``.
    """
    betas = torch.as_tensor(scheduler.betas, dtype=torch.float64, device=device)
    alphas = 1.0 - betas
    ac = torch.cumprod(alphas, 0)
    ac_prev = torch.cat([ac.new_ones(1), ac[:-1]])
    post_var = betas * (1.0 - ac_prev) / (1.0 - ac)
    if post_var.numel() > 1:
        post_log_var = torch.log(torch.cat([post_var[1:2], post_var[1:]]))
    else:
        post_log_var = torch.log(betas)
    return {
        "betas": betas,
        "log_betas": torch.log(betas),
        "alphas_cumprod": ac,
        "alphas_cumprod_prev": ac_prev,
        "posterior_variance": post_var,
        "posterior_log_variance_clipped": post_log_var,
        "posterior_mean_coef1": betas * torch.sqrt(ac_prev) / (1.0 - ac),
        "posterior_mean_coef2": (1.0 - ac_prev) * torch.sqrt(alphas) / (1.0 - ac),
    }


def extract(table: torch.Tensor, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``table[t]`` reshaped to ``(B, 1, ..., 1)`` with the dtype and device of ``like``."""
    out = table.to(like.device)[t.to(like.device).long()]
    return out.reshape(-1, *([1] * (like.ndim - 1))).to(like.dtype)


def predict_x0_from_eps(
    x_t: torch.Tensor, t: torch.Tensor, eps: torch.Tensor, scheduler: Any
) -> torch.Tensor:
    """``x_0 = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t)``."""
    ac = schedule_tables(scheduler, x_t.device)["alphas_cumprod"]
    return (x_t - extract(torch.sqrt(1.0 - ac), t, x_t) * eps) / extract(torch.sqrt(ac), t, x_t)


def q_posterior_mean_variance(
    x_0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor, scheduler: Any
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mean, variance and clipped log-variance of ``q(x_{t-1} | x_t, x_0)``."""
    tab = schedule_tables(scheduler, x_t.device)
    mean = (
        extract(tab["posterior_mean_coef1"], t, x_t) * x_0
        + extract(tab["posterior_mean_coef2"], t, x_t) * x_t
    )
    return (
        mean,
        extract(tab["posterior_variance"], t, x_t),
        extract(tab["posterior_log_variance_clipped"], t, x_t),
    )


def model_log_variance(v: torch.Tensor, t: torch.Tensor, scheduler: Any) -> torch.Tensor:
    """Improved-DDPM learned log-variance of the reverse step ``p_theta(x_{t-1} | x_t)``.

    ``log sigma^2 = frac * log beta_t + (1 - frac) * log beta_tilde_t`` with ``frac = (v + 1) / 2``
    (``v = 1``: ``beta_t``; ``v = -1``: ``beta_tilde_t``, clipped at ``t = 0``).
    """
    tab = schedule_tables(scheduler, v.device)
    min_log = extract(tab["posterior_log_variance_clipped"], t, v)
    max_log = extract(tab["log_betas"], t, v)
    frac = (v + 1.0) / 2.0
    return frac * max_log + (1.0 - frac) * min_log


def p_mean_variance(
    x_t: torch.Tensor,
    t: torch.Tensor,
    eps: torch.Tensor,
    v: torch.Tensor | None,
    scheduler: Any,
    clip_x0: float | None = None,
) -> dict[str, torch.Tensor]:
    """Mean and log-variance of the reverse step from the network's ``eps`` (and ``v``).

    Without ``v`` the log-variance is the fixed ``log beta_tilde_t`` (clipped). ``clip_x0``
    clamps the predicted ``x_0`` to ``[-clip_x0, clip_x0]`` (``None``: no clipping).

    Returns:
        dictionary with ``mean``, ``log_variance`` and ``pred_x0``.
    """
    x0 = predict_x0_from_eps(x_t, t, eps, scheduler)
    if clip_x0 is not None:
        x0 = x0.clamp(-clip_x0, clip_x0)
    mean, _, post_log_var = q_posterior_mean_variance(x0, x_t, t, scheduler)
    log_var = model_log_variance(v, t, scheduler) if v is not None else post_log_var.expand_as(x_t)
    return {"mean": mean, "log_variance": log_var, "pred_x0": x0}


def normal_kl(
    mean1: torch.Tensor, logvar1: torch.Tensor, mean2: torch.Tensor, logvar2: torch.Tensor
) -> torch.Tensor:
    """Element-wise ``KL(N(mean1, exp(logvar1)) || N(mean2, exp(logvar2)))`` in nats."""
    return 0.5 * (
        -1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * torch.exp(-logvar2)
    )


def gaussian_log_likelihood(x: torch.Tensor, mean: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
    """Element-wise continuous Gaussian log-density (nats) of ``x`` with std ``exp(log_scale)``."""
    return -0.5 * math.log(2.0 * math.pi) - log_scale - 0.5 * ((x - mean) * torch.exp(-log_scale)) ** 2


def discretized_gaussian_log_likelihood(
    x: torch.Tensor, mean: torch.Tensor, log_scale: torch.Tensor, bin_width: float = 2.0 / 255.0
) -> torch.Tensor:
    """Element-wise log-probability (nats) of the bin of width ``bin_width`` around ``x`` under a
    Gaussian, with open bins at the ends of ``[-1, 1]`` (improved DDPM's image decoder)."""
    std_normal = torch.distributions.Normal(torch.zeros((), device=x.device), torch.ones((), device=x.device))
    centred = x - mean
    inv_std = torch.exp(-log_scale)
    cdf_plus = std_normal.cdf(inv_std * (centred + bin_width / 2))
    cdf_min = std_normal.cdf(inv_std * (centred - bin_width / 2))
    log_cdf_plus = torch.log(cdf_plus.clamp(min=1e-12))
    log_one_minus_cdf_min = torch.log((1.0 - cdf_min).clamp(min=1e-12))
    log_delta = torch.log((cdf_plus - cdf_min).clamp(min=1e-12))
    return torch.where(x < -0.999, log_cdf_plus, torch.where(x > 0.999, log_one_minus_cdf_min, log_delta))


def _mean_flat(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(x.shape[0], -1).mean(dim=1)


class DiffusionLoss(nn.Module):
    """``L_simple`` or improved DDPM's hybrid loss for an epsilon-prediction network.

    Args:
        scheduler: the training noise schedule (:func:`mrf_monai.diffusion.model.build_scheduler`).
        loss_type: ``"mse"`` (``L_simple``) or ``"hybrid"`` (``L_simple + lambda L_vlb``; needs
            the network's ``v`` output). The paper calls the latter "IDDPM".
        vlb_weight: ``lambda`` (improved DDPM: 0.001).
        decoder_nll: ``"gaussian"`` (continuous, default) or ``"discretized"`` for ``L_0``.
        bin_width: bin width of the discretised decoder.

    ``forward`` returns a dictionary: ``loss`` (scalar to back-propagate), ``mse`` (scalar),
    ``vlb`` (scalar, per-sample ``L_t`` in bits/dim; zero for ``"mse"``) and ``loss_per_sample``.
    """

    def __init__(
        self,
        scheduler: Any,
        loss_type: str = "hybrid",
        vlb_weight: float = 0.001,
        decoder_nll: str = "gaussian",
        bin_width: float = 2.0 / 255.0,
        prediction_type: str = "epsilon",
    ) -> None:
        super().__init__()
        if prediction_type not in ("epsilon", "v"):
            raise ValueError(f"prediction_type must be 'epsilon' or 'v', got {prediction_type!r}.")
        self.prediction_type = prediction_type
        if loss_type not in ("mse", "hybrid"):
            raise ValueError(f"loss_type must be 'mse' or 'hybrid', got {loss_type!r}.")
        if decoder_nll not in ("gaussian", "discretized"):
            raise ValueError(f"decoder_nll must be 'gaussian' or 'discretized', got {decoder_nll!r}.")
        self.scheduler = scheduler
        self.loss_type = loss_type
        self.vlb_weight = float(vlb_weight)
        self.decoder_nll = decoder_nll
        self.bin_width = float(bin_width)

    def vlb_terms(
        self, x_0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor, eps: torch.Tensor, v: torch.Tensor | None
    ) -> torch.Tensor:
        """Per-sample ``L_t`` (bits/dim): Gaussian KL for ``t > 0``, decoder NLL for ``t = 0``."""
        true_mean, _, true_log_var = q_posterior_mean_variance(x_0, x_t, t, self.scheduler)
        p = p_mean_variance(x_t, t, eps, v, self.scheduler)
        kl = _mean_flat(normal_kl(true_mean, true_log_var, p["mean"], p["log_variance"])) / _LOG2
        log_scale = 0.5 * p["log_variance"]
        if self.decoder_nll == "gaussian":
            ll = gaussian_log_likelihood(x_0, p["mean"], log_scale)
        else:
            ll = discretized_gaussian_log_likelihood(x_0, p["mean"], log_scale, self.bin_width)
        nll = -_mean_flat(ll) / _LOG2
        return torch.where(t.to(x_t.device) == 0, nll, kl)

    def forward(
        self,
        eps_pred: torch.Tensor,
        noise: torch.Tensor,
        t: torch.Tensor,
        x_0: torch.Tensor | None = None,
        x_t: torch.Tensor | None = None,
        v_pred: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """
        Args:
            eps_pred: predicted noise ``(B, C, H, W)``.
            noise: the true noise used to make ``x_t``.
            t: timesteps ``(B,)``.
            x_0: clean images (needed by ``"hybrid"``).
            x_t: noisy images (needed by ``"hybrid"``).
            v_pred: variance interpolation output (needed by ``"hybrid"``).
        """
        mse = _mean_flat((eps_pred.float() - noise.float()) ** 2)
        if self.prediction_type == "v":
            # eps_hat - eps = sqrt(abar_t) (v_hat - v): dividing by abar_t gives the v loss
            abar = self.scheduler.alphas_cumprod.to(mse.device)[t.to(mse.device)].float()
            mse = mse / abar
        vlb = torch.zeros_like(mse)
        if self.loss_type == "hybrid":
            if x_0 is None or x_t is None or v_pred is None:
                raise ValueError("the hybrid loss needs x_0, x_t and v_pred (a learn_sigma network).")
            # stop-gradient on the mean: L_vlb trains only the variance
            vlb = self.vlb_terms(x_0.float(), x_t.float(), t, eps_pred.detach().float(), v_pred.float())
            scale = self.vlb_weight * float(self.scheduler.num_train_timesteps)
            per_sample = mse + scale * vlb
        else:
            per_sample = mse
        return {
            "loss": per_sample.mean(),
            "mse": mse.mean(),
            "vlb": vlb.mean(),
            "loss_per_sample": per_sample,
        }
