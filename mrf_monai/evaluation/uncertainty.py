"""Calibration of the standard-deviation maps of probabilistic methods (MRF-IDDPM).

A probabilistic method writes, next to its T1/T2 maps, the standard deviation over its K
posterior samples (``sub-<label>_desc-std_T1map.nii.gz``, data contract section 3). The std
map is useful when it predicts the error of the map that is reported. Definitions (inside the
reference mask, maps in seconds, results in milliseconds):

- error: ``pred - ref`` of the reported map (for MRF-IDDPM the match of the mean TSMI over
  the K samples), i.e. the error the user sees; ``|error|`` is its absolute value.
- ``spearman``: Spearman rank correlation of ``|error|`` and std over the mask voxels
  (``scipy.stats.spearmanr``; rank based, so it measures whether the std *orders* the voxels
  by error, whatever the scale). 1 is perfect ranking, 0 an uninformative std map.
- calibration curve: the voxels sorted by std and cut into ``n_bins`` equal-count quantile
  bins (voxels with the same std are never split between bins, so ties, e.g. many voxels whose
  samples all matched one atom, can leave fewer and unequal bins). Per bin: the mean std, the
  root mean predicted variance ``sqrt(mean(std^2))`` and the RMSE of the error. A calibrated
  std (error ~ N(0, std^2)) gives ``RMSE = sqrt(mean(std^2))`` in every bin: the identity line.
- ``rmse_over_std``: the median over bins of ``RMSE_b / sqrt(mean(std_b^2))`` (bins whose std
  is 0 left out): 1 calibrated, > 1 over-confident (errors larger than the std says), < 1
  under-confident, in the typical bin. The median, because a mean over bins is dominated by
  the bins of tiny std and a pooled ``RMSE / sqrt(mean(std^2))`` by the bin of the largest
  std (a few outliers). It says nothing about ranking: read it with ``spearman``.
- ``ece_ms``: expected calibration error, ``sum_b (n_b / N) |RMSE_b - sqrt(mean(std_b^2))|``
  in ms (Levi et al. 2022, "Evaluating and calibrating uncertainty prediction in regression
  tasks", without their normalisation so that it keeps the map's unit).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["uncertainty_calibration", "uncertainty_metrics", "UNCERTAINTY_KEYS"]

#: Quantities with a std map: metric prefix -> (map key, std key) of ``read_prediction``.
UNCERTAINTY_KEYS = {"T1": ("t1_s", "t1_std_s"), "T2": ("t2_s", "t2_std_s")}


def _numpy(a: Any) -> np.ndarray:
    """A float64 NumPy copy of an array or a tensor on any device."""
    if hasattr(a, "detach"):
        a = a.detach().cpu().numpy()
    return np.asarray(a, dtype=np.float64)


def _quantile_cuts(sorted_std: np.ndarray, n_bins: int) -> np.ndarray:
    """Boundaries (indices into ``sorted_std``, from 0 to its size) of equal-count bins.

    A cut that falls inside a run of equal values moves to the nearer end of the run (the
    start on a draw), so a tie is never split; cuts that meet merge their bins.
    """
    n = sorted_std.size
    ideal = np.round(np.arange(1, n_bins) * n / n_bins).astype(np.int64).clip(0, n - 1)
    start = np.searchsorted(sorted_std, sorted_std[ideal], side="left")
    end = np.searchsorted(sorted_std, sorted_std[ideal], side="right")
    cuts = np.where(ideal - start <= end - ideal, start, end)
    return np.unique(np.concatenate([[0], cuts[(cuts > 0) & (cuts < n)], [n]]))


def uncertainty_calibration(
    pred_map: Any, std_map: Any, ref_map: Any, mask: Any = None, n_bins: int = 10
) -> dict[str, Any]:
    """Spearman correlation and calibration curve of a std map against the map's error.

    Args:
        pred_map: the reported map (seconds), any shape, NumPy array or tensor.
        std_map: its predicted standard deviation (seconds), same shape.
        ref_map: the reference map (seconds), same shape.
        mask: boolean mask of the voxels to use (default: all voxels).
        n_bins: number of equal-count std bins of the calibration curve (fewer when there
            are fewer voxels or tied std values; see the module notes).

    Returns:
        ``spearman`` (float; NaN when the std or the error is constant), ``rmse_over_std``
        (float; NaN when every bin has std 0), ``ece_ms`` (float), ``n_voxels`` (int) and the
        calibration curve, one entry per bin in increasing std: ``bin_std_mean_ms``,
        ``bin_std_rms_ms`` (``sqrt(mean(std^2))``), ``bin_rmse_ms`` (float arrays) and
        ``bin_n_voxels`` (int array).

    Raises:
        ValueError: the shapes differ, ``n_bins < 1``, the mask is empty, or the std map has
            negative or non-finite values inside the mask.
    """
    from scipy.stats import spearmanr

    pred, std, ref = _numpy(pred_map), _numpy(std_map), _numpy(ref_map)
    if not pred.shape == std.shape == ref.shape:
        raise ValueError(
            f"prediction {pred.shape}, std {std.shape} and reference {ref.shape} maps must have one shape"
        )
    if n_bins < 1:
        raise ValueError(f"n_bins must be at least 1; got {n_bins}")
    m = np.ones(pred.shape, dtype=bool) if mask is None else np.asarray(_numpy(mask), dtype=bool)
    if m.shape != pred.shape:
        raise ValueError(f"mask shape {m.shape} differs from the map shape {pred.shape}")
    if not m.any():
        raise ValueError("the mask is empty: there are no voxels to evaluate the std map on")
    error_ms = (pred[m] - ref[m]) * 1000.0
    std_ms = std[m] * 1000.0
    if not np.all(np.isfinite(std_ms)) or np.any(std_ms < 0):
        raise ValueError("the std map has negative or non-finite values inside the mask")
    abs_error = np.abs(error_ms)
    constant = np.ptp(std_ms) == 0 or np.ptp(abs_error) == 0
    rho = math.nan if constant or std_ms.size < 3 else float(spearmanr(std_ms, abs_error).statistic)
    order = np.argsort(std_ms, kind="stable")
    sorted_std, sorted_err = std_ms[order], error_ms[order]
    cuts = _quantile_cuts(sorted_std, min(n_bins, sorted_std.size))
    bins = [slice(a, b) for a, b in zip(cuts[:-1], cuts[1:])]
    std_mean = np.array([sorted_std[b].mean() for b in bins])
    std_rms = np.array([np.sqrt(np.mean(sorted_std[b] ** 2)) for b in bins])
    rmse = np.array([np.sqrt(np.mean(sorted_err[b] ** 2)) for b in bins])
    counts = np.array([b.stop - b.start for b in bins], dtype=np.int64)
    nonzero = std_rms > 0
    ratio = float(np.median(rmse[nonzero] / std_rms[nonzero])) if nonzero.any() else math.nan
    ece = float(np.sum(counts * np.abs(rmse - std_rms)) / counts.sum())
    return {
        "spearman": rho,
        "rmse_over_std": ratio,
        "ece_ms": ece,
        "n_voxels": int(counts.sum()),
        "bin_std_mean_ms": std_mean,
        "bin_std_rms_ms": std_rms,
        "bin_rmse_ms": rmse,
        "bin_n_voxels": counts,
    }


def uncertainty_metrics(pred: dict, ref: dict, mask: Any, n_bins: int = 10) -> dict[str, float]:
    """The calibration columns of one subject, for each quantity that has a std map.

    Args:
        pred: maps of :func:`mrf_monai.evaluation.metrics.read_prediction` (``t1_s``,
            ``t2_s`` and, for probabilistic methods, ``t1_std_s``, ``t2_std_s``; seconds).
        ref: reference maps with ``t1_s`` and ``t2_s`` (seconds).
        mask: the reference mask.
        n_bins: std bins of :func:`uncertainty_calibration`.

    Returns:
        ``T1_spearman``, ``T1_RMSE_over_std``, ``T1_ECE_ms`` (and the same for T2) for the
        quantities whose std map is in ``pred``; empty for a deterministic method.
    """
    out: dict[str, float] = {}
    for name, (key, std_key) in UNCERTAINTY_KEYS.items():
        if std_key not in pred:
            continue
        c = uncertainty_calibration(pred[key], pred[std_key], ref[key], mask, n_bins=n_bins)
        out[f"{name}_spearman"] = c["spearman"]
        out[f"{name}_RMSE_over_std"] = c["rmse_over_std"]
        out[f"{name}_ECE_ms"] = c["ece_ms"]
    return out
