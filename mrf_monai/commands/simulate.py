"""``mrf-monai simulate``: write a dataset of simulated MRF subjects (raw.h5 + ref/)."""

from __future__ import annotations

import argparse
import json
import sys
import time

__all__ = ["register", "run"]


def _positive(text: str) -> int:
    try:
        v = int(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from err
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {v}")
    return v


def _non_negative_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}") from err
    if not v >= 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {v}")
    return v


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``simulate`` sub-command to ``subparsers``."""
    from ..simulation.subjects import DEFAULT_NOISE

    p = subparsers.add_parser(
        "simulate",
        help="simulate MRF subjects (ISMRMRD raw data and ground-truth maps)",
        description="Simulate brain-phantom subjects scanned with FISP-MRF and write them as "
        "subject folders sub-XXX/ (raw.h5, ref/, sim.json) of a dataset folder, plus a dataset "
        "card dataset.json. See docs/simulation.md.",
    )
    p.add_argument("--out", required=True, help="dataset folder to write (created if needed)")
    p.add_argument("--subjects", type=_positive, required=True, help="number of subjects")
    p.add_argument("--slices", type=_positive, default=1, help="axial slices per subject (default 1)")
    p.add_argument("--frames", type=_positive, default=200, help="time frames (default 200 = acceleration 5)")
    p.add_argument("--coils", type=_positive, default=1, help="receive coils (default 1)")
    p.add_argument(
        "--noise",
        type=_non_negative_float,
        default=DEFAULT_NOISE,
        help=f"noise sigma as a fraction of the mean |k-space centre| (default {DEFAULT_NOISE})",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the first subject (default 0)")
    p.add_argument("--split", choices=("train", "val", "test"), default="test", help="phantom split")
    p.add_argument("--matrix", type=_positive, default=230, help="image matrix (FOV 230 mm; default 230)")
    p.add_argument(
        "--samples", type=_positive, default=920, help="samples per spiral interleaf (default 920)"
    )
    p.add_argument("--device", default="cpu", help="torch device for EPG and NUFFT (default cpu)")
    p.add_argument("--no-augment", action="store_true", help="use the template geometry as is")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Simulate the subjects; returns the exit status."""
    from pathlib import Path

    from tqdm import tqdm

    from .. import __version__
    from ..io.atomic import atomic_write_path
    from ..simulation.subjects import simulate_subject

    if args.seed < 0:
        print("mrf-monai simulate: error: --seed must be >= 0", file=sys.stderr)
        return 2
    out = Path(args.out)
    width = max(3, len(str(args.subjects - 1)))
    labels = [f"{i:0{width}d}" for i in range(args.subjects)]
    start = time.perf_counter()
    try:
        out.mkdir(parents=True, exist_ok=True)
        for i, label in enumerate(tqdm(labels, desc="simulate", unit="subject")):
            simulate_subject(
                out,
                label,
                args.seed + i,
                n_slices=args.slices,
                n_frames=args.frames,
                n_coils=args.coils,
                noise=args.noise,
                split=args.split,
                matrix=args.matrix,
                n_samples=args.samples,
                augment=not args.no_augment,
                device=args.device,
            )
        card = {
            "software": f"mrf_monai {__version__}",
            "generator": "mrf-monai simulate",
            "subjects": [f"sub-{label}" for label in labels],
            "seeds": [args.seed + i for i in range(args.subjects)],
            "split": args.split,
            "slices_per_subject": args.slices,
            "n_frames": args.frames,
            "n_coils": args.coils,
            "noise": args.noise,
            "matrix": args.matrix,
            "n_samples": args.samples,
            "augment": not args.no_augment,
            "description": "Simulated FISP-MRF brain subjects (MNI152 anatomy, 3 T tissue values); "
            "each subject's sim.json says how it was made. See docs/simulation.md.",
        }
        with atomic_write_path(out / "dataset.json") as tmp:
            tmp.write_text(json.dumps(card, indent=2))
    except (ValueError, OSError) as err:
        print(f"mrf-monai simulate: error: {err}", file=sys.stderr)
        return 1
    print(f"wrote {len(labels)} subject(s) to {out} in {time.perf_counter() - start:.1f} s")
    return 0
