"""``mrf-monai dictionary``: simulate an MRF dictionary and write it as an HDF5 file."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

__all__ = ["register", "run", "build_with_progress"]

PRESETS = ("fisp-jiang2015",)
PROG = "mrf-monai dictionary"
#: Progress steps while simulating on the CPU (GPU blocks are as large as the EPG's own chunks).
_CPU_BLOCKS = 50
_MIN_BLOCK = 256
_GPU_BLOCK = 65536


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
        "and write it as an HDF5 dictionary file (data contract section 4). Shows a progress bar "
        "on stderr while simulating and prints one line saying what was written.",
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


def build_with_progress(
    sequence,
    t1_s,
    t2_s,
    rank: int = 5,
    keep_fingerprints: bool = False,
    device: str = "cpu",
    progress: bool = True,
):
    """:func:`mrf_monai.physics.dictionary.build_dictionary` of (T1, T2) atoms, simulated in
    blocks with a tqdm progress bar (stderr) counting the atoms.

    The same dictionary as ``build_dictionary(sequence, t1_s, t2_s, rank, keep_fingerprints=...,
    device=device)``: the fingerprints are simulated by EPG, normalised, and compressed with
    :func:`~mrf_monai.physics.dictionary.temporal_basis` (data contract section 4); only the
    EPG runs block by block so that the bar moves.

    Returns:
        The ``MRFDictionary`` (on ``device``).
    """
    import torch
    from tqdm.auto import tqdm

    from ..physics.dictionary import MRFDictionary, temporal_basis
    from ..physics.epg import simulate

    t1_s = torch.as_tensor(t1_s).to(device=device, dtype=torch.float32).reshape(-1)
    t2_s = torch.as_tensor(t2_s).to(device=device, dtype=torch.float32).reshape(-1)
    if t1_s.shape != t2_s.shape:
        raise ValueError(f"t1_s has {t1_s.numel()} values and t2_s {t2_s.numel()}; give one pair per atom")
    if not 1 <= rank <= sequence.n_frames:
        raise ValueError(f"rank must lie in [1, {sequence.n_frames}] (the number of frames), got {rank}")
    n = t1_s.numel()
    block = _GPU_BLOCK if t1_s.device.type != "cpu" else max(_MIN_BLOCK, -(-n // _CPU_BLOCKS))
    fingerprints = torch.empty(n, sequence.n_frames, dtype=torch.complex64, device=t1_s.device)
    bar = tqdm(total=n, desc="simulating", unit="atom", disable=not progress, file=sys.stderr)
    try:
        for start in range(0, n, block):
            stop = min(start + block, n)
            fingerprints[start:stop] = simulate(t1_s[start:stop], t2_s[start:stop], sequence)
            bar.update(stop - start)
        bar.set_description("compressing")
        norms = torch.linalg.vector_norm(fingerprints, dim=1)
        inv = 1.0 / norms.clamp_min(torch.finfo(norms.dtype).tiny)[:, None]
        unit = fingerprints * inv if keep_fingerprints else fingerprints.mul_(inv)
        basis, energy = temporal_basis(unit, rank)
        compressed = unit @ basis.conj()
    finally:
        bar.close()
    return MRFDictionary(
        t1_s=t1_s,
        t2_s=t2_s,
        b1=None,
        basis=basis,
        compressed=compressed,
        norms=norms,
        fingerprints=fingerprints if keep_fingerprints else None,
        sequence=sequence,
        energy=energy,
    )


def run(args: argparse.Namespace) -> int:
    """Build and write the dictionary; returns the exit status."""
    from ..io.dictionary import save_dictionary
    from ..physics.dictionary import t1t2_grid
    from ..physics.sequence import fisp_mrf_jiang2015

    def error(msg: str) -> int:
        print(f"{PROG}: error: {msg}", file=sys.stderr, flush=True)
        return 1

    out = Path(args.out)
    if out.is_dir():
        return error(f"--out {out} is a folder; give the name of the HDF5 file to write")
    if not out.parent.is_dir() and out.parent.exists():
        return error(f"--out {out}: {out.parent} is not a folder")
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
        d = build_with_progress(
            sequence,
            t1_s,
            t2_s,
            rank=args.rank,
            keep_fingerprints=args.keep_fingerprints,
            device=args.device,
            progress=not getattr(args, "no_progress", False),
        )
        path = save_dictionary(d.to("cpu"), out)
    except (ValueError, RuntimeError, OSError) as err:
        return error(str(err))
    print(
        f"wrote {path}: {d.n_atoms} atoms, {d.n_frames} frames, rank {d.rank}, "
        f"energy kept {d.energy:.6f}, {time.perf_counter() - start:.1f} s"
    )
    return 0
