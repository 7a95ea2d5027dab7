"""Evaluation: map and TSMI metrics (``metrics``), std-map calibration (``uncertainty``) and method
comparison reports (``report``)."""

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
from .uncertainty import uncertainty_calibration, uncertainty_metrics

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
    "uncertainty_calibration",
    "uncertainty_metrics",
]
