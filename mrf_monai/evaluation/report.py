"""Evaluate one or more methods' outputs against a reference dataset and tabulate them.

``metrics.csv`` holds one row per (method, subject) with every metric of
:func:`mrf_monai.evaluation.metrics.evaluate_subject`; ``summary.md`` holds one Markdown
table with one row per method: mean +- standard deviation (ddof 1, over subjects) of the
headline metrics, plus the run time per slice where the outputs have ``timing.json``.
Methods with std maps (MRF-IDDPM) also get the std-map calibration columns
(:mod:`mrf_monai.evaluation.uncertainty`) and, from :func:`write_calibration_figures`, one
``calibration_<method>.png`` each.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .metrics import evaluate_subject

__all__ = [
    "SUMMARY_COLUMNS",
    "collect_metrics",
    "summary_markdown",
    "summary_table",
    "write_metrics_csv",
    "write_calibration_figures",
    "write_report",
]

#: Summary columns: metric key -> heading (the paper's table first).
SUMMARY_COLUMNS = {
    "T1_MAPE": "T1 MAPE %",
    "T2_MAPE": "T2 MAPE %",
    "T1_RMSE_ms": "T1 RMSE ms",
    "T2_RMSE_ms": "T2 RMSE ms",
    "TSMI_NRMSE": "TSMI NRMSE",
    "TSMI_SSIM": "TSMI SSIM",
    "T1_SSIM": "T1 SSIM",
    "T2_SSIM": "T2 SSIM",
    "T1_PSNR": "T1 PSNR dB",
    "T2_PSNR": "T2 PSNR dB",
    "seconds_per_slice": "s / slice",
    # std-map calibration of probabilistic methods (last: the older columns keep their places)
    "T1_spearman": "T1 std Spearman",
    "T2_spearman": "T2 std Spearman",
    "T1_RMSE_over_std": "T1 RMSE/std",
    "T2_RMSE_over_std": "T2 RMSE/std",
    "T1_ECE_ms": "T1 ECE ms",
    "T2_ECE_ms": "T2 ECE ms",
}


def _method_name(pred_dir: Path) -> str:
    """The method recorded in the first ``timing.json`` found, else the folder's name."""
    for timing in sorted(pred_dir.glob("sub-*/timing.json")):
        try:
            name = json.loads(timing.read_text()).get("method")
        except (OSError, ValueError):
            continue
        if name:
            return str(name)
    return pred_dir.name


def _method_names(pred_paths: Sequence[Path], methods: Sequence[str] | None) -> list[str]:
    """One name per prediction folder: ``methods``, else from ``timing.json`` or the folder."""
    if methods is not None and len(methods) != len(pred_paths):
        raise ValueError(
            f"give one method name per --pred folder: {len(methods)} names for {len(pred_paths)} folders"
        )
    names = list(methods) if methods is not None else [_method_name(p) for p in pred_paths]
    if len(set(names)) < len(names):  # the same method twice: tell them apart by folder
        names = [f"{n} ({p.name})" for n, p in zip(names, pred_paths)]
    return names


def _reason(err: Exception) -> str:
    """One line for a failed evaluation: the message (with the type for unexpected errors)."""
    text = str(err).strip() or type(err).__name__
    if not isinstance(err, ValueError | OSError):
        text = f"{type(err).__name__}: {text}"
    return " ".join(text.split())


def collect_metrics(
    pred_dirs: Sequence[str | os.PathLike],
    ref: str | os.PathLike | Sequence[str | os.PathLike],
    methods: Sequence[str] | None = None,
    dictionary: Any = None,
    log: Callable[[str], None] | None = None,
    progress: bool = False,
) -> tuple[list[dict[str, Any]], list[str]]:
    """Evaluate every reference subject in every prediction folder.

    A subject that cannot be evaluated (missing or unreadable prediction, another grid than
    the reference, ...) is a failure; the others are still evaluated.

    Args:
        pred_dirs: output folders of ``mrf-monai reconstruct`` (one per method).
        ref: the reference dataset folder (or subject folders) with ``ref/`` maps.
        methods: one name per prediction folder (default: from ``timing.json`` or the
            folder name).
        dictionary: passed to :func:`evaluate_subject` (TSMI metrics).
        log: called once with each failure's line, as it happens.
        progress: show a tqdm progress bar (on ``stderr``) over the (method, subject) pairs.

    Returns:
        ``rows`` (``{"method", "subject", metric: value, ...}``) and ``failures``
        (``"<method>: sub-<label>: <reason>"``; a missing prediction is a failure).

    Raises:
        ValueError: a prediction folder does not exist, the method names do not match the
            folders, or no reference subject is found.
    """
    import sys

    from tqdm.auto import tqdm

    from ..io.subjects import find_subjects, subject_label

    pred_paths = [Path(p) for p in pred_dirs]
    if methods is not None and len(methods) != len(pred_paths):
        raise ValueError(
            f"give one method name per --pred folder: {len(methods)} names for {len(pred_paths)} folders"
        )
    for p in pred_paths:
        if not p.is_dir():
            raise ValueError(f"prediction folder {p} does not exist")
    names = _method_names(pred_paths, methods)
    refs = [ref] if isinstance(ref, str | os.PathLike) else list(ref)
    try:
        subjects = find_subjects(refs)
    except FileNotFoundError as err:
        raise ValueError(str(err)) from err
    if not subjects:
        raise ValueError(f"no subjects found in {', '.join(str(r) for r in refs)}")
    rows: list[dict[str, Any]] = []
    failures: list[str] = []
    pairs = [(name, pred, Path(subject)) for name, pred in zip(names, pred_paths) for subject in subjects]
    bar = tqdm(pairs, desc="evaluate", unit="subject", disable=not progress, file=sys.stderr)
    for name, pred, subject in bar:
        label = subject_label(subject)
        bar.set_postfix_str(f"{name}: sub-{label}")
        pred_subject = pred / f"sub-{label}"
        try:
            if not pred_subject.is_dir():
                raise FileNotFoundError(f"no prediction ({pred_subject} is missing)")
            metrics = evaluate_subject(pred_subject, subject, dictionary=dictionary)
        except KeyboardInterrupt:
            raise
        except Exception as err:  # report and go on with the other subjects
            failures.append(f"{name}: sub-{label}: {_reason(err)}")
            if log is not None:
                with tqdm.external_write_mode(file=sys.stderr):
                    log(failures[-1])
            continue
        rows.append({"method": name, "subject": f"sub-{label}", **metrics})
    bar.close()
    return rows, failures


def _write_csv(rows: Sequence[dict[str, Any]], path: Path) -> None:
    columns = ["method", "subject"]
    for row in rows:
        columns += [k for k in row if k not in columns]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, restval="")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})


def write_metrics_csv(rows: Sequence[dict[str, Any]], path: str | os.PathLike) -> Path:
    """One CSV row per (method, subject); columns are the union of the rows' keys.

    Written to a temporary name and renamed: ``path`` is never half-written.
    """
    from ..io.atomic import atomic_write_path

    path = Path(path)
    with atomic_write_path(path) as tmp:
        _write_csv(rows, tmp)
    return path


def _mean_std(values: list[float]) -> str:
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=np.float64)
    if v.size == 0:
        return "-"
    digits = 3 if np.abs(v).max() < 10 else 2
    if v.size == 1:
        return f"{v[0]:.{digits}f}"
    return f"{v.mean():.{digits}f} ± {v.std(ddof=1):.{digits}f}"


def summary_table(rows: Sequence[dict[str, Any]]) -> str:
    """Markdown table: one row per method, mean ± std over its subjects."""
    methods = list(dict.fromkeys(r["method"] for r in rows))
    cols = [k for k in SUMMARY_COLUMNS if any(k in r for r in rows)]
    lines = [
        "| method | subjects | " + " | ".join(SUMMARY_COLUMNS[c] for c in cols) + " |",
        "| --- | --- | " + " | ".join("---" for _ in cols) + " |",
    ]
    for m in methods:
        mine = [r for r in rows if r["method"] == m]
        cells = [_mean_std([r.get(c) for r in mine if c in r]) for c in cols]
        lines.append(f"| {m} | {len(mine)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def summary_markdown(rows: Sequence[dict[str, Any]], failures: Sequence[str] = ()) -> str:
    """The text of ``summary.md``: the summary table and the subjects not evaluated."""
    text = [
        "# Evaluation summary",
        "",
        "Mean ± standard deviation over subjects; metrics inside the reference mask "
        "(definitions: `mrf_monai.evaluation.metrics`).",
        "",
        summary_table(rows) if rows else "No subject could be evaluated.\n",
    ]
    if failures:
        text += ["## Not evaluated", ""] + [f"- {f}" for f in failures] + [""]
    return "\n".join(text)


def write_report(
    rows: Sequence[dict[str, Any]], out_dir: str | os.PathLike, failures: Sequence[str] = ()
) -> tuple[Path, Path]:
    """Write ``metrics.csv`` and ``summary.md`` into ``out_dir``; returns their paths.

    Both are written to temporary names first and renamed only when both are complete, so
    a failure (full disk, a folder in the way) leaves the previous report, if any, and no
    partial or temporary file.
    """
    from ..io.atomic import atomic_write_path

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    csv_path, md_path = out / "metrics.csv", out / "summary.md"
    with atomic_write_path(csv_path) as csv_tmp, atomic_write_path(md_path) as md_tmp:
        _write_csv(rows, csv_tmp)
        md_tmp.write_text(summary_markdown(rows, failures))
    return csv_path, md_path


def _file_name(method: str) -> str:
    """``method`` as a file-name part: letters, digits, ``.``, ``_`` and ``-`` only."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", method).strip("_") or "method"


def write_calibration_figures(
    rows: Sequence[dict[str, Any]],
    pred_dirs: Sequence[str | os.PathLike],
    ref: str | os.PathLike | Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    methods: Sequence[str] | None = None,
    n_bins: int = 10,
) -> list[Path]:
    """One calibration figure per method with std maps: ``out_dir/calibration_<method>.png``.

    The curve pools the mask voxels of the method's evaluated subjects (those in ``rows``,
    from :func:`collect_metrics` with the same ``pred_dirs``, ``ref`` and ``methods``); each
    subject is also drawn alone. See :func:`mrf_monai.evaluation.figures.calibration_figure`.

    Returns:
        The figures written (none when no method has std maps).

    Raises:
        OSError: a figure cannot be written (the others already written are kept).
        ValueError: a prediction or reference file can no longer be read (naming it).
    """
    from ..io.subjects import find_subjects, read_reference, subject_label
    from .figures import calibration_figure
    from .metrics import read_prediction
    from .uncertainty import UNCERTAINTY_KEYS, uncertainty_calibration

    pred_paths = [Path(p) for p in pred_dirs]
    names = _method_names(pred_paths, methods)
    refs = [ref] if isinstance(ref, str | os.PathLike) else list(ref)
    subjects = {f"sub-{subject_label(s)}": Path(s) for s in find_subjects(refs)}
    written: list[Path] = []
    for name, pred in zip(names, pred_paths):
        evaluated = [r["subject"] for r in rows if r["method"] == name and r["subject"] in subjects]
        if not any(any(f"{q}_spearman" in r for q in UNCERTAINTY_KEYS) for r in rows if r["method"] == name):
            continue
        # per quantity: the (prediction, std, reference) mask voxels of each subject, seconds
        voxels: dict[str, list[tuple[np.ndarray, ...]]] = {q: [] for q in UNCERTAINTY_KEYS}
        per_subject: dict[str, dict[str, dict[str, Any]]] = {}
        for subject in evaluated:
            p = read_prediction(pred / subject)
            r = read_reference(subjects[subject])
            mask = np.asarray(r["mask"]).astype(bool)
            for q, (key, std_key) in UNCERTAINTY_KEYS.items():
                if std_key in p:
                    voxels[q].append(
                        tuple(np.asarray(a, np.float64)[mask] for a in (p[key], p[std_key], r[key]))
                    )
                    per_subject.setdefault(subject, {})[q] = uncertainty_calibration(
                        *voxels[q][-1], n_bins=n_bins
                    )
        pooled = {
            q: uncertainty_calibration(*(np.concatenate(a) for a in zip(*v)), n_bins=n_bins)
            for q, v in voxels.items()
            if v
        }
        if not pooled:
            continue
        n = len(per_subject)
        written.append(
            calibration_figure(
                Path(out_dir) / f"calibration_{_file_name(name)}.png",
                pooled,
                per_subject,
                title=f"{name}: std maps against errors ({n} subject(s), {n_bins} equal-count std bins)",
            )
        )
    return written
