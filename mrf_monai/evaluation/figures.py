"""Figures of quantitative maps: reference, each method, absolute errors and uncertainty.

Everything is drawn in milliseconds with colour bars, one row per (quantity, view), so a
reader compares methods column by column. Matplotlib runs headless (Agg backend).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

__all__ = ["calibration_figure", "map_comparison_figure", "uncertainty_scatter_figure"]

#: Display windows in ms (brain at 3 T): T1 up to 4 s covers CSF, T2 up to 300 ms keeps
#: tissue contrast visible (CSF saturates, as in clinical displays).
WINDOWS_MS = {"T1": (0.0, 4000.0), "T2": (0.0, 300.0)}
ERROR_WINDOWS_MS = {"T1": (0.0, 500.0), "T2": (0.0, 50.0)}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _show(ax, image_ms: np.ndarray, window: tuple[float, float], cmap: str, title: str, fig) -> None:
    # Arrays are (i, j) = (read, phase); show j horizontally and i vertically like a scanner
    # display of an axial slice (rows = phase-encoding direction is a viewer choice too).
    im = ax.imshow(np.asarray(image_ms).T, cmap=cmap, vmin=window[0], vmax=window[1], origin="lower")
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    cb = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02)
    cb.ax.tick_params(labelsize=7)
    cb.set_label("ms", fontsize=7)


def map_comparison_figure(
    path: str | Path,
    reference: Mapping[str, np.ndarray],
    methods: Mapping[str, Mapping[str, np.ndarray]],
    mask: np.ndarray,
    std: Mapping[str, np.ndarray] | None = None,
    std_method: str = "MRF-IDDPM",
    title: str | None = None,
) -> Path:
    """Write a PNG comparing T1 and T2 maps of several methods with the reference.

    Args:
        path: output PNG path.
        reference: ``{"T1": t1_s, "T2": t2_s}`` reference maps (seconds), 2D ``(Nx, Ny)``.
        methods: method name -> ``{"T1": t1_s, "T2": t2_s}`` (seconds).
        mask: 2D boolean mask of the tissue used for metrics; errors are shown inside it.
        std: optional ``{"T1": std_s, "T2": std_s}`` of the probabilistic method.
        std_method: the column under which the standard deviation maps are drawn.
        title: optional figure title.

    Returns:
        The path written.
    """
    plt = _pyplot()
    mask = np.asarray(mask, dtype=bool)
    names = list(methods)
    n_cols = 1 + len(names) + (1 if std else 0)
    fig, axes = plt.subplots(4, n_cols, figsize=(2.6 * n_cols, 9.6), squeeze=False)
    for q_index, quantity in enumerate(("T1", "T2")):
        row_map, row_err = 2 * q_index, 2 * q_index + 1
        ref_ms = np.asarray(reference[quantity]) * 1000.0 * mask
        _show(axes[row_map, 0], ref_ms, WINDOWS_MS[quantity], "viridis", f"reference {quantity}", fig)
        axes[row_err, 0].axis("off")
        for col, name in enumerate(names, start=1):
            pred_ms = np.asarray(methods[name][quantity]) * 1000.0 * mask
            err = np.abs(pred_ms - ref_ms)
            mape = 100.0 * np.mean(err[mask] / np.maximum(ref_ms[mask], 1e-6)) if mask.any() else float("nan")
            _show(axes[row_map, col], pred_ms, WINDOWS_MS[quantity], "viridis", f"{name} {quantity}", fig)
            _show(
                axes[row_err, col],
                err,
                ERROR_WINDOWS_MS[quantity],
                "magma",
                f"|error| (MAPE {mape:.1f} %)",
                fig,
            )
        if std:
            col = n_cols - 1
            std_ms = np.asarray(std[quantity]) * 1000.0 * mask
            window = ERROR_WINDOWS_MS[quantity]
            _show(axes[row_map, col], std_ms, window, "magma", f"{std_method} std {quantity}", fig)
            axes[row_err, col].axis("off")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
    return path


def uncertainty_scatter_figure(
    path: str | Path,
    abs_error: Mapping[str, np.ndarray],
    std: Mapping[str, np.ndarray],
    max_points: int = 20000,
    seed: int = 0,
) -> tuple[Path, dict[str, float]]:
    """Scatter of absolute error against predicted standard deviation (ms), per quantity.

    Args:
        path: output PNG path.
        abs_error: ``{"T1": err_s, "T2": err_s}`` absolute errors inside the mask (1D, seconds).
        std: ``{"T1": std_s, "T2": std_s}`` the matching standard deviations (1D, seconds).
        max_points: points drawn per panel (random subset, reproducible by ``seed``).

    Returns:
        The path written and the Spearman rank correlation per quantity.
    """
    from scipy.stats import spearmanr

    plt = _pyplot()
    rng = np.random.default_rng(seed)
    fig, axes = plt.subplots(1, 2, figsize=(9, 4))
    correlations: dict[str, float] = {}
    for ax, quantity in zip(axes, ("T1", "T2")):
        e = np.asarray(abs_error[quantity]).ravel() * 1000.0
        s = np.asarray(std[quantity]).ravel() * 1000.0
        rho = float(spearmanr(s, e).statistic) if e.size > 2 else float("nan")
        correlations[quantity] = rho
        pick = rng.choice(e.size, size=min(max_points, e.size), replace=False) if e.size else []
        ax.scatter(s[pick], e[pick], s=2, alpha=0.3)
        ax.set_xlabel(f"predicted std of {quantity} (ms)")
        ax.set_ylabel(f"|error| of {quantity} (ms)")
        ax.set_title(f"{quantity}: Spearman rho = {rho:.2f}")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
    return path, correlations


def calibration_figure(
    path: str | Path,
    pooled: Mapping[str, Mapping],
    subjects: Mapping[str, Mapping[str, Mapping]] | None = None,
    title: str | None = None,
) -> Path:
    """Calibration curves of std maps: RMSE of the error against the predicted std, per quantity.

    One panel per quantity (T1, T2) on log-log axes: the pooled curve (markers), one thin line
    per subject, and the identity line (a calibrated std). Points above the line are
    over-confident bins (errors larger than the std), below it under-confident ones. Bins whose
    std is 0 cannot be drawn on a log axis; their share of voxels is given in the legend.

    Args:
        path: output PNG path.
        pooled: quantity -> result of
            :func:`mrf_monai.evaluation.uncertainty.uncertainty_calibration` over all voxels.
        subjects: optional subject -> quantity -> the same result for that subject alone.
        title: optional figure title.

    Returns:
        The path written (atomically: a temporary name, then renamed).
    """
    from ..io.atomic import atomic_write_path

    plt = _pyplot()
    quantities = [q for q in ("T1", "T2") if q in pooled]
    fig, axes = plt.subplots(1, max(len(quantities), 1), figsize=(4.6 * max(len(quantities), 1), 4.4))
    axes = np.atleast_1d(axes)
    for ax, quantity in zip(axes, quantities):
        drawn: list[np.ndarray] = []  # every value drawn, for common square limits
        for curves in (subjects or {}).values():
            if quantity not in curves:
                continue
            x, y = np.asarray(curves[quantity]["bin_std_rms_ms"]), np.asarray(curves[quantity]["bin_rmse_ms"])
            keep = (x > 0) & (y > 0)
            ax.plot(x[keep], y[keep], color="0.6", lw=0.8, alpha=0.8)
            drawn += [x[keep], y[keep]]
        c = pooled[quantity]
        x, y = np.asarray(c["bin_std_rms_ms"]), np.asarray(c["bin_rmse_ms"])
        n = np.asarray(c["bin_n_voxels"])
        keep = (x > 0) & (y > 0)
        zero_share = 100.0 * n[x == 0].sum() / max(int(n.sum()), 1)
        label = "pooled bins" + (
            f" ({zero_share:.0f} % of voxels with std 0 not drawn)" if zero_share else ""
        )
        ax.plot(x[keep], y[keep], "o-", color="C0", ms=4, label=label)
        drawn += [x[keep], y[keep]]
        if subjects:
            ax.plot([], [], color="0.6", lw=0.8, label="single subjects")
        values = np.concatenate(drawn)
        lo, hi = (values.min(), values.max()) if values.size else (1.0, 10.0)
        line = np.array([lo / 1.5, hi * 1.5])
        ax.plot(line, line, "k--", lw=1, label="calibrated (RMSE = std)")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlim(line)
        ax.set_ylim(line)
        ax.set_aspect("equal")
        ax.set_xlabel(f"predicted std of {quantity}, RMS in bin (ms)")
        ax.set_ylabel(f"RMSE of {quantity} in bin (ms)")
        ax.set_title(
            f"{quantity}: Spearman {c['spearman']:.2f}, median bin RMSE/std {c['rmse_over_std']:.2f}, "
            f"ECE {c['ece_ms']:.3g} ms",
            fontsize=9,
        )
        ax.legend(fontsize=7, loc="best")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    try:
        with atomic_write_path(path) as tmp:
            fig.savefig(tmp, dpi=110, format="png")
    finally:
        plt.close(fig)
    return path
