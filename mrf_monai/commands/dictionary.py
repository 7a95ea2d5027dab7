"""``mrf-monai dictionary``: simulate an MRF dictionary and write it as an HDF5 file."""

from __future__ import annotations

import argparse
import sys
import time

__all__ = ["register", "run"]

PRESETS = ("fisp-jiang2015",)


def _range(text: str) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in text.replace(":", ",").split(","))
    except ValueError as err:
        raise argparse.ArgumentTypeError(
            f"expected LOW,HIGH in seconds (e.g. 0.05,5.0), got {text!r}"
        ) from err
    if not 0 < lo <= hi:
        raise argparse.ArgumentTypeError(f"range {text!r} must satisfy 0 < LOW <= HIGH")
    return lo, hi


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``dictionary`` sub-command to ``subparsers``."""
    p = subparsers.add_parser(
        "dictionary",
        help="simulate an MRF dictionary (EPG) and its SVD subspace",
        description="Simulate a (T1, T2) dictionary with EPG, compress it to a rank-R SVD subspace "
        "and write it as an HDF5 dictionary file (data contract section 4).",
    )
    p.add_argument("--out", required=True, help="output HDF5 file")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--preset", choices=PRESETS, default="fisp-jiang2015", help="built-in sequence")
    src.add_argument(
        "--from-raw", metavar="RAW_H5", help="take the sequence from an ISMRMRD raw file's header"
    )
    p.add_argument("--frames", type=int, default=None, help="keep only the first N frames (default: all)")
    p.add_argument("--rank", type=int, default=5, help="subspace rank R (default 5)")
    p.add_argument("--t1-range", type=_range, default=(0.05, 5.0), metavar="LOW,HIGH", help="T1 range, s")
    p.add_argument("--t2-range", type=_range, default=(0.005, 3.0), metavar="LOW,HIGH", help="T2 range, s")
    p.add_argument("--step", type=float, default=0.03, help="relative grid step (default 0.03)")
    p.add_argument("--keep-fingerprints", action="store_true", help="also store the raw fingerprints")
    p.add_argument("--device", default="cpu", help="torch device for the simulation (default cpu)")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Build and write the dictionary; returns the exit status."""
    from ..io.dictionary import save_dictionary
    from ..physics.dictionary import build_dictionary, t1t2_grid
    from ..physics.sequence import fisp_mrf_jiang2015

    try:
        if args.from_raw:
            from ..io.ismrmrd import read_raw

            sequence = read_raw(args.from_raw).sequence
        else:
            sequence = fisp_mrf_jiang2015()
        if args.frames is not None:
            sequence = sequence.truncate(args.frames)
        t1_s, t2_s = t1t2_grid(args.t1_range, args.t2_range, args.step)
        start = time.perf_counter()
        d = build_dictionary(
            sequence, t1_s, t2_s, rank=args.rank, keep_fingerprints=args.keep_fingerprints, device=args.device
        )
        path = save_dictionary(d.to("cpu"), args.out)
    except (ValueError, FileNotFoundError, OSError) as err:
        print(f"mrf-monai dictionary: error: {err}", file=sys.stderr)
        return 1
    print(
        f"wrote {path}: {d.n_atoms} atoms, {d.n_frames} frames, rank {d.rank}, "
        f"energy kept {d.energy:.6f}, {time.perf_counter() - start:.1f} s"
    )
    return 0
