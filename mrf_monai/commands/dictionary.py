"""``mrf-monai dictionary``: simulate an MRF dictionary and write it as an HDF5 file."""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

__all__ = ["register", "run"]

PRESETS = ("fisp-jiang2015",)
PROG = "mrf-monai dictionary"
#: Relative B1 range of ``--b1-step`` when ``--b1-range`` is not given.
DEFAULT_B1_RANGE = (0.6, 1.4)


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
        description="Simulate a (T1, T2) dictionary with EPG (with --b1-step: a (T1, T2, B1) "
        "dictionary, B1-major), compress it to a rank-R SVD subspace and write it as an HDF5 "
        "dictionary file (data contract section 4; the same build as the pipeline's dictionary "
        "cache). Shows a progress bar on stderr while simulating and prints one line saying what "
        "was written.",
    )
    p.add_argument("--out", required=True, metavar="FILE", help="output HDF5 file")
    src = p.add_mutually_exclusive_group()
    src.add_argument(
        "--preset",
        choices=PRESETS,
        default="fisp-jiang2015",
        help="built-in sequence (default: %(default)s, the 1000-frame FISP-MRF of Jiang et al. 2015)",
    )
    src.add_argument(
        "--from-raw",
        metavar="RAW_H5",
        help="take the sequence from an ISMRMRD raw file's header (default: use --preset)",
    )
    p.add_argument(
        "--frames", type=int, default=None, metavar="N", help="keep only the first N frames (default: all)"
    )
    p.add_argument("--rank", type=int, default=5, help="subspace rank R (default: %(default)s)")
    p.add_argument(
        "--t1-range",
        type=_range,
        default=(0.05, 5.0),
        metavar="LOW,HIGH",
        help="T1 range, seconds (default: 0.05,5.0)",
    )
    p.add_argument(
        "--t2-range",
        type=_range,
        default=(0.005, 3.0),
        metavar="LOW,HIGH",
        help="T2 range, seconds; atoms with T2 > T1 are left out (default: 0.005,3.0)",
    )
    p.add_argument(
        "--step",
        type=float,
        default=0.03,
        help="relative step of the geometric T1 and T2 grids (default: %(default)s, i.e. 3 %%)",
    )
    p.add_argument(
        "--b1-step",
        type=float,
        default=None,
        metavar="STEP",
        help="also a B1 axis: relative transmit fields from LOW to HIGH of --b1-range in steps of STEP "
        "(e.g. 0.05, docs/scanner-data.md), the (T1, T2) atoms repeated for each B1 value (B1-major) "
        "and the dataset 'b1' written (default: no B1 axis, B1 = 1)",
    )
    p.add_argument(
        "--b1-range",
        type=float,
        nargs=2,
        default=None,
        metavar=("LOW", "HIGH"),
        help="relative B1 range of the --b1-step axis (LOW included, HIGH when on the grid) "
        f"(default: {DEFAULT_B1_RANGE[0]} {DEFAULT_B1_RANGE[1]})",
    )
    p.add_argument(
        "--keep-fingerprints",
        action="store_true",
        help="also store the raw fingerprints (default: only the compressed atoms)",
    )
    p.add_argument("--device", default="cpu", help="torch device for the simulation (default: %(default)s)")
    p.add_argument(
        "--no-progress", action="store_true", help="no progress bar (default: a progress bar on stderr)"
    )
    p.set_defaults(func=run)
    return p


def _b1_values(args: argparse.Namespace):
    """The B1 axis asked for by ``--b1-step``/``--b1-range`` (a tensor), or None without one.

    Raises:
        ValueError: a step or range that is not a positive relative transmit field, or
            ``--b1-range`` without ``--b1-step`` (the message names the option).
    """
    from ..physics.dictionary import b1_grid

    step, b1_range = args.b1_step, args.b1_range
    if step is None:
        if b1_range is not None:
            raise ValueError("--b1-range needs --b1-step (e.g. --b1-step 0.05)")
        return None
    if not (step > 0 and math.isfinite(step)):
        raise ValueError(f"--b1-step {step:g}: give a positive step of relative B1, e.g. 0.05")
    lo, hi = DEFAULT_B1_RANGE if b1_range is None else b1_range
    if not (0 < lo <= hi and math.isfinite(hi)):
        raise ValueError(
            f"--b1-range {lo:g} {hi:g}: must satisfy 0 < LOW <= HIGH (relative transmit field, e.g. 0.6 1.4)"
        )
    return b1_grid((lo, hi), step)


def run(args: argparse.Namespace) -> int:
    """Build and write the dictionary; returns the exit status (0, or 2 after a one-line error)."""
    from ..io.dictionary import save_dictionary
    from ..physics.dictionary import build_dictionary, t1t2_grid
    from ..physics.sequence import fisp_mrf_jiang2015

    def error(msg: str) -> int:
        print(f"{PROG}: error: {msg}", file=sys.stderr, flush=True)
        return 2

    out = Path(args.out)
    if out.is_dir():
        return error(f"--out {out} is a folder; give the name of the HDF5 file to write")
    if not out.parent.is_dir() and out.parent.exists():
        return error(f"--out {out}: {out.parent} is not a folder")
    bar = None
    try:
        b1_values = _b1_values(args)
        if args.from_raw:
            from ..io.ismrmrd import read_raw

            sequence = read_raw(args.from_raw).sequence
        else:
            sequence = fisp_mrf_jiang2015()
        if args.frames is not None:
            sequence = sequence.truncate(args.frames)
        t1_s, t2_s = t1t2_grid(args.t1_range, args.t2_range, args.step)
        start = time.perf_counter()
        progress = None
        if not getattr(args, "no_progress", False):
            from tqdm.auto import tqdm

            n_atoms = t1_s.numel() * (1 if b1_values is None else b1_values.numel())
            bar = tqdm(total=n_atoms, desc="simulating", unit="atom", file=sys.stderr)

            def progress(done: int, total: int) -> None:
                bar.update(done - bar.n)
                if done == total:
                    bar.set_description("compressing")

        d = build_dictionary(
            sequence,
            t1_s,
            t2_s,
            rank=args.rank,
            keep_fingerprints=args.keep_fingerprints,
            device=args.device,
            b1_values=b1_values,
            progress=progress,
        )
        if bar is not None:
            bar.close()
        path = save_dictionary(d.to("cpu"), out)
    except (ValueError, RuntimeError, OSError) as err:
        if bar is not None:
            bar.close()  # before the error line
        return error(str(err))
    finally:
        if bar is not None:
            bar.close()  # also on Ctrl-C / SIGTERM (closing again is harmless)
    b1_text = ""
    if b1_values is not None:
        b1_text = f" ({b1_values.numel()} B1 values {float(b1_values[0]):g} to {float(b1_values[-1]):g})"
    print(
        f"wrote {path}: {d.n_atoms} atoms{b1_text}, {d.n_frames} frames, rank {d.rank}, "
        f"energy kept {d.energy:.6f}, {time.perf_counter() - start:.1f} s"
    )
    return 0
