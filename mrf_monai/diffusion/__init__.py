# Copyright (c) mrf_monai developers.
# Licensed under the Apache License, Version 2.0.
"""MRF-IDDPM: conditional diffusion model, losses, EMA and training loop.

Sub-modules: ``model`` (network, schedule, checkpoints), ``losses`` (L_simple / hybrid loss),
``ema`` (exponential moving average of weights), ``training`` (the bundle's trainer),
``sampling`` / ``inferer`` / ``reconstructor`` (inference).
"""

from .losses import DiffusionLoss, model_log_variance, p_mean_variance, predict_x0_from_eps
from .model import (
    build_ddim_scheduler,
    build_model,
    build_scheduler,
    load_checkpoint,
    load_checkpoint_model,
    predict_eps_and_var,
    scheduler_from_checkpoint,
)

__all__ = [
    "DiffusionLoss",
    "build_ddim_scheduler",
    "build_model",
    "build_scheduler",
    "load_checkpoint",
    "load_checkpoint_model",
    "model_log_variance",
    "p_mean_variance",
    "predict_eps_and_var",
    "predict_x0_from_eps",
    "scheduler_from_checkpoint",
]
