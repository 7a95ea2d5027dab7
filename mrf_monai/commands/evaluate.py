"""``mrf-monai evaluate``: compare reconstructed maps with reference maps."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

__all__ = ["register", "run", "check_output_folder"]

PROG = "mrf-monai evaluate"


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``evaluate`` sub-command to ``subparsers``."""
    p = subparsers.add_parser(
        "evaluate",
        help="metrics of reconstructed maps against reference maps",
        description="Evaluate the output folder(s) of `mrf-monai reconstruct` (one per method) "
        "against a dataset with reference maps; writes OUT/metrics.csv (one row per method and "
        "subject) and OUT/summary.md (mean ± std per method), prints the summary table and where "
        "the report went. A subject that cannot be evaluated is reported (once, on stderr, and in "
        "summary.md) and the others are still evaluated. A method whose folder has std maps "
        "(desc-std_T1map/T2map, e.g. MRF-IDDPM) also gets the std calibration columns (Spearman of "
        "|error| and std, RMSE/std, ECE) and OUT/calibration_<method>.png. Exit status: 0 all "
        "evaluated, 1 some subject(s) not evaluated, 2 bad arguments (e.g. OUT is a file).",
    )
    p.add_argument(
        "--pred", nargs="+", required=True, metavar="DIR", help="prediction folder(s), one per method"
    )
    p.add_argument("--ref", required=True, metavar="DATASET", help="dataset with sub-<label>/ref/ maps")
    p.add_argument(
        "--methods",
        nargs="+",
        metavar="NAME",
        help="one name per --pred folder (default: the method in each folder's timing.json, else the "
        "folder's name)",
    )
    p.add_argument("--out", required=True, metavar="DIR", help="folder for metrics.csv and summary.md")
    p.add_argument(
        "--dictionary",
        metavar="FILE",
        help="dictionary file for the TSMI metrics (default: the cached dictionary of the sequence "
        "recorded with each prediction's TSMI)",
    )
    p.add_argument(
        "--no-progress", action="store_true", help="no progress bar (default: a progress bar on stderr)"
    )
    p.set_defaults(func=run)
    return p


def check_output_folder(out: str | os.PathLike) -> Path:
    """``out`` as a folder the report can be written into, checked without creating it.

    Raises:
        ValueError: ``out`` (or a parent) is a file, or the folder (or the nearest existing
            parent, where it would be created) is not writable.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file; give a folder for metrics.csv and summary.md")
    existing = out
    while not existing.exists():
        if existing.parent == existing:
            break
        existing = existing.parent
    if not existing.is_dir():
        raise ValueError(f"--out {out}: {existing} is a file, so the folder cannot be created")
    if not os.access(existing, os.W_OK | os.X_OK):
        where = "folder" if existing == out else f"parent folder {existing}"
        raise ValueError(f"--out {out}: the {where} is not writable")
    return out


def run(args: argparse.Namespace) -> int:
    """Evaluate and write the report; returns the exit status."""
    from ..evaluation.report import collect_metrics, summary_table, write_calibration_figures, write_report

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    try:
        out = check_output_folder(args.out)
        dictionary = None
        if args.dictionary:
            from ..io.dictionary import load_dictionary

            try:
                dictionary = load_dictionary(args.dictionary)
            except (ValueError, OSError):
                raise
            except Exception as err:  # h5py and the reader raise several types for a bad file
                raise ValueError(f"--dictionary {args.dictionary} cannot be read ({err})") from err
        rows, failures = collect_metrics(
            args.pred,
            args.ref,
            args.methods,
            dictionary=dictionary,
            log=log,
            progress=not getattr(args, "no_progress", False),
        )
    except (ValueError, OSError) as err:
        log(f"{PROG}: error: {err}")
        return 2
    try:
        csv_path, md_path = write_report(rows, out, failures)
    except OSError as err:
        log(f"{PROG}: error: cannot write the report into {out}: {err}")
        return 2
    try:
        figures = write_calibration_figures(rows, args.pred, args.ref, out, args.methods)
    except (ValueError, OSError) as err:
        log(f"{PROG}: error: cannot write the calibration figure into {out}: {err}")
        return 2
    wrote = f"{csv_path} and {md_path}"
    if figures:
        wrote = f"{csv_path}, {md_path} and {', '.join(str(f) for f in figures)}"
    if rows:
        print(summary_table(rows), end="")
    if failures:
        log(
            f"{PROG}: {len(failures)} of {len(rows) + len(failures)} subject evaluation(s) failed "
            f"(listed above and in {md_path}); wrote {wrote}"
        )
        return 1
    n_methods = len({r["method"] for r in rows})
    print(f"evaluated {len(rows)} subject(s) of {n_methods} method(s): wrote {wrote}")
    return 0
