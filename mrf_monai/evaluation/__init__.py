"""Evaluation: map and TSMI metrics (``metrics``) and method comparison reports (``report``)."""

from .metrics import (
    evaluate_subject,
    map_metrics,
    mape,
    nrmse,
    psnr,
    read_prediction,
    reference_tsmi,
    rmse,
    ssim,
    tsmi_metrics,
)

__all__ = [
    "evaluate_subject",
    "map_metrics",
    "mape",
    "nrmse",
    "psnr",
    "read_prediction",
    "reference_tsmi",
    "rmse",
    "ssim",
    "tsmi_metrics",
]
