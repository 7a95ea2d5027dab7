"""``mrf-monai evaluate``: compare reconstructed maps with reference maps."""

from __future__ import annotations

import argparse
import sys

__all__ = ["register", "run"]


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``evaluate`` sub-command to ``subparsers``."""
    p = subparsers.add_parser(
        "evaluate",
        help="metrics of reconstructed maps against reference maps",
        description="Evaluate the output folder(s) of `mrf-monai reconstruct` (one per method) "
        "against a dataset with reference maps; writes OUT/metrics.csv (one row per method and "
        "subject) and OUT/summary.md (mean ± std per method). Exit status 1 if any subject "
        "could not be evaluated.",
    )
    p.add_argument(
        "--pred", nargs="+", required=True, metavar="DIR", help="prediction folder(s), one per method"
    )
    p.add_argument("--ref", required=True, metavar="DATASET", help="dataset with sub-<label>/ref/ maps")
    p.add_argument("--methods", nargs="+", metavar="NAME", help="one name per --pred folder")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for metrics.csv and summary.md")
    p.add_argument("--dictionary", metavar="FILE", help="dictionary for the TSMI metrics (default: cached)")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Evaluate and write the report; returns the exit status."""
    from ..evaluation.report import collect_metrics, write_report

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    try:
        dictionary = None
        if args.dictionary:
            from ..io.dictionary import load_dictionary

            dictionary = load_dictionary(args.dictionary)
        rows, failures = collect_metrics(args.pred, args.ref, args.methods, dictionary=dictionary, log=log)
    except (ValueError, OSError) as err:
        print(f"mrf-monai evaluate: error: {err}", file=sys.stderr)
        return 2
    csv_path, md_path = write_report(rows, args.out, failures)
    print(md_path.read_text())
    print(f"wrote {csv_path} and {md_path}")
    if failures:
        log(f"{len(failures)} subject evaluation(s) failed")
        return 1
    return 0
