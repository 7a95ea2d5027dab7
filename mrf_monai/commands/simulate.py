"""``mrf-monai simulate``: write a dataset of simulated MRF subjects (raw.h5 + ref/)."""

from __future__ import annotations

import argparse
import json
import sys
import time

__all__ = ["register", "run", "build_protocol"]

_DEFAULT_FRAMES = 200
_DEFAULT_MATRIX = 230
_DEFAULT_SAMPLES = 920


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


def _positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from err
    if not v > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {v}")
    return v


def _b1_field(text: str) -> float | str:
    if text == "random":
        return text
    try:
        v = float(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(
            f"expected an amplitude in [0, 1) (e.g. 0.15 for B1 = 1 +- 0.15) or 'random', got {text!r}"
        ) from err
    if not 0 <= v < 1:
        raise argparse.ArgumentTypeError(f"the B1 amplitude must lie in [0, 1), got {v}")
    return v


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``simulate`` sub-command to ``subparsers``."""
    from ..io.trajectory_file import TRAJECTORY_UNITS
    from ..simulation.subjects import DEFAULT_NOISE

    p = subparsers.add_parser(
        "simulate",
        help="simulate MRF subjects (ISMRMRD raw data and ground-truth maps)",
        description="Simulate brain-phantom subjects scanned with FISP-MRF and write them as "
        "subject folders sub-XXX/ (raw.h5, ref/, sim.json) of a dataset folder, plus a dataset "
        "card dataset.json. By default the built-in protocol (FISP-MRF, one golden-angle spiral "
        "interleaf per frame); --protocol RAW.h5 copies a scan's protocol exactly (sequence, "
        "trajectory with any number of readouts per frame, matrix, FOV, coils). See "
        "docs/simulation.md and docs/protocols.md.",
    )
    p.add_argument("--out", required=True, help="dataset folder to write (created if needed)")
    p.add_argument("--subjects", type=_positive, required=True, help="number of subjects")
    p.add_argument("--slices", type=_positive, default=1, help="axial slices per subject (default 1)")
    p.add_argument(
        "--protocol",
        metavar="RAW.h5",
        help="ISMRMRD raw file whose protocol to simulate: its sequence, trajectory, matrix, FOV and "
        "coils (--coils overrides the coils; --frames, --matrix, --samples, --radial, --sequence "
        "must then be left out)",
    )
    p.add_argument(
        "--trajectory",
        metavar="FILE",
        help="trajectory file (.npy, .npz, HDF5 'traj', or an ISMRMRD file; shape (frames, readouts, "
        "samples, 2) in cycles per pixel, docs/data-contract.md section 5): the trajectory of "
        "--protocol when its acquisitions carry none, or the trajectory to simulate without --protocol",
    )
    p.add_argument(
        "--trajectory-units",
        choices=tuple(TRAJECTORY_UNITS),
        default="cycles_per_pixel",
        help="units of the trajectory (default cycles_per_pixel; +-0.5 is the k-space edge)",
    )
    p.add_argument(
        "--frames",
        type=_positive,
        default=None,
        help=f"time frames (default {_DEFAULT_FRAMES} = acceleration 5, or those of --sequence or of the "
        "trajectory file)",
    )
    p.add_argument(
        "--coils", type=_positive, default=None, help="receive coils (default 1, or the protocol's)"
    )
    p.add_argument(
        "--noise",
        type=_non_negative_float,
        default=DEFAULT_NOISE,
        help=f"noise sigma as a fraction of the mean |k-space centre| (default {DEFAULT_NOISE})",
    )
    p.add_argument(
        "--coil-layout",
        choices=("ring", "two-rings"),
        default="ring",
        help="receive-array layout of the simulated coils (default ring; two-rings: a two-row head "
        "array seen from one slice)",
    )
    p.add_argument(
        "--noise-covariance",
        default="white",
        metavar="white|realistic|FILE.npy",
        help="channel noise covariance (default white; realistic: neighbour correlation 0.3, variances "
        "0.7-1.3, per subject; or a (C, C) complex .npy matrix)",
    )
    p.add_argument(
        "--noise-scan",
        type=int,
        default=0,
        metavar="SAMPLES",
        help="write a noise scan (ISMRMRD noise acquisitions) of SAMPLES samples per channel into raw.h5 "
        "(default 0: none); the subject then has one noise level for all slices",
    )
    p.add_argument(
        "--dwell-us",
        type=_positive_float,
        default=None,
        help="imaging dwell time written to raw.h5 (default none, 2.5 us with --noise-scan)",
    )
    p.add_argument(
        "--noise-dwell-us",
        type=_positive_float,
        default=None,
        help="dwell time of the noise scan (default --dwell-us); its noise power scales with the ratio",
    )
    p.add_argument(
        "--b1-field",
        type=_b1_field,
        default=None,
        metavar="AMPLITUDE|random",
        help="a smooth centre-bright B1+ field 1 +- AMPLITUDE over the brain (or 'random': 0.10-0.25 per "
        "subject); written to ref/sub-<label>_TB1map.nii.gz (default: nominal flip angles)",
    )
    p.add_argument(
        "--write-b1-map",
        action="store_true",
        help="also write the B1+ field to b1/sub-<label>_TB1map.nii.gz (the map reconstructions read)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the first subject (default 0)")
    p.add_argument("--split", choices=("train", "val", "test"), default="test", help="phantom split")
    p.add_argument(
        "--matrix", type=_positive, default=None, help=f"image matrix (FOV 230 mm; default {_DEFAULT_MATRIX})"
    )
    p.add_argument(
        "--samples",
        dest="samples_per_readout",
        type=_positive,
        default=None,
        help=f"samples per readout (default {_DEFAULT_SAMPLES} per spiral interleaf; 2 x matrix per "
        "radial spoke)",
    )
    p.add_argument(
        "--radial",
        type=_positive,
        default=None,
        metavar="SPOKES",
        help="golden-angle radial with SPOKES spokes per frame instead of the spiral",
    )
    p.add_argument(
        "--sequence",
        metavar="JSON",
        help="the MRF sequence as JSON (sequence_type, flip_angle_deg, tr_ms, te_ms, ti_ms: the "
        "'sequence' of sim.json or of a dictionary file); default the built-in FISP-MRF schedule",
    )
    p.add_argument("--device", default="cpu", help="torch device for EPG and NUFFT (default cpu)")
    p.add_argument("--no-augment", action="store_true", help="use the template geometry as is")
    p.set_defaults(func=run)
    return p


def _read_sequence(path: str):
    from pathlib import Path

    from ..physics.sequence import MRFSequence

    try:
        d = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: cannot read the sequence JSON: {err}") from err
    if isinstance(d, dict) and isinstance(d.get("sequence"), dict):
        d = d["sequence"]
    if not isinstance(d, dict):
        raise ValueError(f"{path}: the sequence JSON must be an object (sequence_type, flip_angle_deg, ...)")
    try:
        return MRFSequence.from_dict(d)
    except (ValueError, TypeError) as err:
        raise ValueError(f"{path}: invalid sequence: {err}") from err


def build_protocol(args: argparse.Namespace):
    """The :class:`~mrf_monai.acquisition.protocol.Protocol` that ``args`` ask for.

    Raises:
        ValueError: contradicting options, unreadable files (``RawDataError`` names the file).
    """
    from ..acquisition.protocol import Protocol
    from ..acquisition.trajectory import golden_angle_radial
    from ..phantoms import FOV_MM
    from ..physics.sequence import fisp_mrf_jiang2015
    from ..simulation.subjects import SLICE_THICKNESS_MM, subject_protocol

    if args.protocol:
        from ..io.ismrmrd import read_raw

        options = {
            "frames": "frames",
            "matrix": "matrix",
            "samples": "samples_per_readout",
            "radial": "radial",
            "sequence": "sequence",
        }
        given = [f"--{flag}" for flag, dest in options.items() if getattr(args, dest) is not None]
        if given:
            raise ValueError(
                f"{' and '.join(given)} cannot be combined with --protocol, which fixes the sequence, "
                "trajectory and matrix (only --coils may override it)"
            )
        raw = read_raw(args.protocol, args.trajectory, args.trajectory_units)
        return Protocol.from_raw(raw, n_coils=args.coils)
    if args.trajectory and args.radial:
        raise ValueError("--trajectory and --radial both give the trajectory; use one")
    sequence = _read_sequence(args.sequence) if args.sequence else None
    if args.trajectory is None and args.radial is None:
        return subject_protocol(args.frames, args.matrix, args.samples_per_readout, args.coils, sequence)
    matrix = _DEFAULT_MATRIX if args.matrix is None else args.matrix
    fov = (FOV_MM, FOV_MM, SLICE_THICKNESS_MM)
    if args.trajectory:
        from ..io.trajectory_file import check_k_space_edge, read_trajectory_file

        tdata = read_trajectory_file(args.trajectory, args.trajectory_units, (matrix, matrix), fov)
        check_k_space_edge(tdata.traj[None], f"{args.trajectory}: ", (matrix, matrix), ("", "frame"))
        n_t, n_r, n_s = tdata.shape
        if args.frames is not None and args.frames != n_t:
            raise ValueError(
                f"--frames {args.frames} but the trajectory file {args.trajectory} has {n_t} frames"
            )
        if args.samples_per_readout is not None and args.samples_per_readout != n_s:
            raise ValueError(
                f"--samples {args.samples_per_readout} but the trajectory file has {n_s} samples per readout"
            )
        traj, interleaf, kind = tdata.traj, tdata.interleaf, "other"
    else:
        n_t = args.frames or (sequence.n_frames if sequence is not None else _DEFAULT_FRAMES)
        n_r = args.radial
        n_s = 2 * matrix if args.samples_per_readout is None else args.samples_per_readout
        traj, interleaf = golden_angle_radial(n_t, n_r, n_s)
        kind = "radial"
    seq = sequence if sequence is not None else fisp_mrf_jiang2015(1000)
    if seq.n_frames < n_t:
        raise ValueError(f"the sequence has {seq.n_frames} frames but the trajectory needs {n_t}")
    return Protocol(
        seq.truncate(n_t) if seq.n_frames != n_t else seq,
        traj.reshape(n_t, n_r * n_s, 2),
        n_r,
        (matrix, matrix),
        fov,
        1 if args.coils is None else args.coils,
        kind,
        interleaf,
    )


def run(args: argparse.Namespace) -> int:
    """Simulate the subjects; returns the exit status."""
    from pathlib import Path

    from tqdm import tqdm

    from .. import __version__
    from ..io.atomic import atomic_write_path
    from ..io.folders import recover_interrupted
    from ..simulation.subjects import simulate_subject

    if args.seed < 0:
        print("mrf-monai simulate: error: --seed must be >= 0", file=sys.stderr)
        return 2
    try:
        protocol = build_protocol(args)
        covariance = _noise_covariance(args.noise_covariance)
        if args.noise_scan < 0:
            raise ValueError(f"--noise-scan must be >= 0 samples, got {args.noise_scan}")
        if args.write_b1_map and args.b1_field is None:
            raise ValueError("--write-b1-map needs a field: give --b1-field AMPLITUDE or --b1-field random")
    except (ValueError, OSError) as err:
        print(f"mrf-monai simulate: error: {err}", file=sys.stderr)
        return 2
    out = Path(args.out)
    width = max(3, len(str(args.subjects - 1)))
    labels = [f"{i:0{width}d}" for i in range(args.subjects)]
    start = time.perf_counter()
    try:
        out.mkdir(parents=True, exist_ok=True)
        for line in recover_interrupted(out, [f"sub-{label}" for label in labels]):
            print(f"mrf-monai simulate: {line}", file=sys.stderr)
        for i, label in enumerate(tqdm(labels, desc="simulate", unit="subject")):
            simulate_subject(
                out,
                label,
                args.seed + i,
                n_slices=args.slices,
                noise=args.noise,
                split=args.split,
                augment=not args.no_augment,
                device=args.device,
                protocol=protocol,
                coil_layout=args.coil_layout,
                noise_covariance=covariance,
                noise_scan_samples=args.noise_scan,
                dwell_us=args.dwell_us,
                noise_dwell_us=args.noise_dwell_us,
                b1=args.b1_field,
                write_b1_map=args.write_b1_map,
            )
        card = {
            "software": f"mrf_monai {__version__}",
            "generator": "mrf-monai simulate",
            "subjects": [f"sub-{label}" for label in labels],
            "seeds": [args.seed + i for i in range(args.subjects)],
            "split": args.split,
            "slices_per_subject": args.slices,
            "n_frames": protocol.n_frames,
            "n_coils": protocol.n_coils,
            "noise": args.noise,
            "matrix": protocol.matrix[0]
            if protocol.matrix[0] == protocol.matrix[1]
            else list(protocol.matrix),
            "samples_per_readout": protocol.samples_per_readout,
            "readouts_per_frame": protocol.readouts_per_frame,
            "protocol": protocol.to_dict(include_trajectory=False),
            "protocol_source": args.protocol,
            "trajectory_file": args.trajectory,
            "augment": not args.no_augment,
            **_scanner_entries(args),
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


def _noise_covariance(spec: str):
    """``--noise-covariance``: a name, or a ``(C, C)`` matrix read from a ``.npy`` file."""
    if spec in ("white", "realistic"):
        return spec
    import numpy as np

    try:
        return np.load(spec)
    except (OSError, ValueError) as err:
        raise ValueError(
            f"--noise-covariance {spec}: neither 'white', 'realistic' nor a readable .npy matrix ({err})"
        ) from err


def _scanner_entries(args: argparse.Namespace) -> dict:
    """The dataset card's entries of the scanner options that were used (none by default)."""
    out: dict = {}
    if args.coil_layout != "ring":
        out["coil_layout"] = args.coil_layout
    if args.noise_covariance != "white":
        out["noise_covariance"] = args.noise_covariance
    if args.noise_scan:
        out["noise_scan_samples"] = args.noise_scan
    if args.dwell_us is not None or args.noise_dwell_us is not None:
        out["dwell_us"], out["noise_dwell_us"] = args.dwell_us, args.noise_dwell_us
    if args.b1_field is not None:
        out["b1_field"] = args.b1_field
        out["b1_map_written"] = bool(args.write_b1_map)
    return out
