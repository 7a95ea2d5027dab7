"""``mrf-monai reconstruct``: raw data -> quantitative maps with a registered method."""

from __future__ import annotations

import argparse
import sys

__all__ = ["register", "run"]


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``reconstruct`` sub-command to ``subparsers``."""
    from ..pipeline import available_methods

    p = subparsers.add_parser(
        "reconstruct",
        help="reconstruct T1/T2/PD maps from ISMRMRD raw data",
        description="Reconstruct every subject of the given dataset or subject folders with one "
        "method, match against the dictionary and write NIfTI maps (optionally DICOM), the "
        "compressed TSMI and timing.json into OUTPUT/sub-<label>/. A failing subject is reported "
        "and skipped; the exit status is non-zero if any subject failed.",
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="dataset folder(s) or sub-<label> folder(s)")
    p.add_argument("--method", required=True, choices=available_methods(), help="reconstruction method")
    p.add_argument("--output", required=True, metavar="DIR", help="output folder")
    p.add_argument(
        "--dictionary",
        metavar="FILE",
        help="HDF5 dictionary file (default: build or reuse the cached one for each raw file's sequence)",
    )
    p.add_argument("--units", choices=("s", "ms"), default="s", help="units of the T1/T2 maps (default s)")
    p.add_argument("--dicom", action="store_true", help="also write DICOM series")
    p.add_argument("--device", default=None, help="torch device, e.g. cpu or cuda (default: cpu)")
    p.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="method option (repeatable), e.g. --option n_samples=10",
    )
    p.add_argument(
        "--brute-force",
        action="store_true",
        help="compare every voxel with every atom instead of the (exact, faster) clustered search",
    )
    p.add_argument("--coarse-to-fine", action="store_true", help=argparse.SUPPRESS)  # the default now
    p.add_argument(
        "--mask-threshold", type=float, default=0.15, help="background threshold (fraction of max |PD|)"
    )
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Run the reconstruction; returns the exit status."""
    from ..pipeline import get_method, parse_options, reconstruct_dataset

    try:
        options = parse_options(args.option)
        if args.device is not None:
            options.setdefault("device", args.device)
        method = get_method(args.method)(**options)
        dictionary = None
        if args.dictionary:
            from ..io.dictionary import load_dictionary

            dictionary = load_dictionary(args.dictionary)
    except (ValueError, TypeError, OSError) as err:
        print(f"mrf-monai reconstruct: error: {err}", file=sys.stderr)
        return 2
    return reconstruct_dataset(
        args.inputs,
        args.output,
        method,
        dictionary=dictionary,
        write_dicom=args.dicom,
        units=args.units,
        method_name=args.method,
        device=args.device,
        match_options={"mask_threshold": args.mask_threshold, "coarse_to_fine": not args.brute_force},
        progress=not args.no_progress,
    )
