"""``mrf-monai reconstruct``: raw data -> quantitative maps with a registered method.

The method's MONAI config (``mrf_monai/pipeline/configs/<method>.json`` for SVD-MRF and LRTV, the
bundle's ``configs/inference.json`` for the U-Net and MRF-IDDPM) is parsed with this command's
flags and ``--option KEY=VALUE`` pairs as overrides, and its runner is run: the same components as
``python -m monai.bundle run inference``. Every setting is checked before the first subject.
"""

from __future__ import annotations

import argparse
import sys

__all__ = ["register", "run", "options_epilog"]

_EPILOG_TAIL = """
The dictionary of each raw file's sequence is built once and cached (see docs/interfaces.md,
"Dictionary cache"); --dictionary FILE uses a file instead. A subject's B1+ map
(sub-<label>/b1/sub-<label>_TB1map.nii.gz, or --b1) restricts matching to its B1
(docs/scanner-data.md). Exit status: 0 all subjects written, 1 a subject failed (the others
are written), 2 a wrong setting (checked before the first subject; a --b1 map that does not
fit its subject), 130 after Ctrl-C, 143 after SIGTERM.
"""


def _format_default(value: object) -> str:
    import json

    if isinstance(value, str) and value.startswith(("$", "@", "%")):
        return "(computed)"
    return json.dumps(value)


def options_epilog(methods: list[str]) -> str:
    """The help text's list of each method's ``--option`` keys with their defaults (from the configs)."""
    import textwrap

    from ..pipeline.methods import method_options

    lines = [
        "options per method and their defaults (set with --option KEY=VALUE; computed: derived from",
        "other settings; --list-options METHOD prints one per line):",
    ]
    for name in methods:
        try:
            options = method_options(name)
        except (ValueError, OSError) as err:  # a missing bundle must not break --help
            lines.append(f"  {name}: (cannot read its config: {err})")
            continue
        text = " ".join(f"{key}={_format_default(value)}" for key, value in options.items())
        lines += textwrap.wrap(
            f"{name}: {text}",
            width=96,
            initial_indent="  ",
            subsequent_indent="      ",
            break_long_words=False,
        )
    return "\n".join(lines) + "\n" + _EPILOG_TAIL


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``reconstruct`` sub-command to ``subparsers``."""
    from ..pipeline.methods import available_methods

    p = subparsers.add_parser(
        "reconstruct",
        help="reconstruct T1/T2/PD maps from ISMRMRD raw data",
        description="Reconstruct every subject of the given dataset or subject folders with one "
        "method, match against the dictionary and write NIfTI maps (optionally DICOM), the "
        "compressed TSMI and timing.json into OUTPUT/sub-<label>/. A failing subject is reported "
        "and skipped; the exit status is 1 if any subject failed, 2 for a wrong setting.",
        epilog=options_epilog(available_methods()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("inputs", nargs="*", metavar="INPUT", help="dataset folder(s) or sub-<label> folder(s)")
    p.add_argument("--method", choices=available_methods(), help="reconstruction method (required)")
    p.add_argument("--output", metavar="DIR", help="output folder (required)")
    p.add_argument(
        "--dictionary",
        metavar="FILE",
        help="HDF5 dictionary file (default: build or reuse the cached one for each raw file's sequence)",
    )
    p.add_argument(
        "--trajectory",
        metavar="FILE",
        help="trajectory file for raw files without trajectories (.npy, .npz, .h5)",
    )
    p.add_argument(
        "--b1",
        metavar="FILE|DIR",
        help="B1+ map (relative, NIfTI on the maps' grid) for one subject, or a folder of "
        "sub-<label>_TB1map.nii.gz maps for several (default: each subject's b1/sub-<label>_TB1map.nii.gz "
        "when present; see --option b1_policy and use_b1_map)",
    )
    p.add_argument("--units", choices=("s", "ms"), default="s", help="units of the T1/T2 maps (default: s)")
    p.add_argument("--dicom", action="store_true", help="also write DICOM series")
    p.add_argument(
        "--device",
        default=None,
        help="torch device: cpu, cuda, cuda:1 or auto (default: the method's: cpu for svdmrf/lrtv, "
        "auto for unet/iddpm)",
    )
    p.add_argument("--bundle", metavar="DIR", help="a bundle folder with other weights/configs (unet, iddpm)")
    p.add_argument(
        "--config",
        action="append",
        default=[],
        metavar="FILE",
        help="config file merged over the method's (repeatable), "
        "e.g. bundles/mrf_iddpm/configs/inference_fast.json",
    )
    p.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="method option (repeatable), e.g. --option n_samples=8; see below",
    )
    p.add_argument(
        "--list-options", metavar="METHOD", help="print METHOD's options and their defaults, then exit"
    )
    p.add_argument(
        "--brute-force",
        action="store_true",
        help="compare every voxel with every atom instead of the exact, faster clustered search",
    )
    p.add_argument("--coarse-to-fine", action="store_true", help=argparse.SUPPRESS)  # the default now
    p.add_argument(
        "--mask-threshold",
        type=float,
        metavar="FRACTION",
        default=0.15,
        help="background threshold, a fraction of the largest |PD| in [0, 1) (default: 0.15)",
    )
    p.add_argument(
        "--cache-dir",
        metavar="DIR",
        help="dictionary cache folder (default: $MRF_MONAI_CACHE, else ~/.cache/mrf_monai)",
    )
    p.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    p.set_defaults(func=run, parser=p)
    return p


def _error(message: str) -> int:
    print(f"mrf-monai reconstruct: error: {message}", file=sys.stderr)
    return 2


def run(args: argparse.Namespace) -> int:
    """Run the reconstruction; returns the exit status (0 all written, 1 a subject failed, 2 a setting)."""
    import json

    from ..pipeline.dataset import reconstruct_dataset
    from ..pipeline.methods import method_options, parse_options

    if args.list_options:
        try:
            options = method_options(args.list_options, args.bundle)
        except (ValueError, OSError) as err:
            return _error(str(err))
        for key, value in options.items():
            print(f"{key} = {json.dumps(value)}")
        return 0
    missing = [flag for flag, value in (("--method", args.method), ("--output", args.output)) if not value]
    if missing or not args.inputs:
        what = ", ".join(missing + ([] if args.inputs else ["INPUT"]))
        return _error(f"{what} required (see mrf-monai reconstruct --help)")
    try:
        status = reconstruct_dataset(
            args.inputs,
            args.output,
            args.method,
            options=parse_options(args.option),
            dictionary_path=args.dictionary,
            write_dicom=args.dicom,
            units=args.units,
            device=args.device,
            coarse_to_fine=not args.brute_force,
            mask_threshold=args.mask_threshold,
            cache_dir=args.cache_dir,
            trajectory=args.trajectory,
            b1_path=args.b1,
            bundle=args.bundle,
            extra_configs=args.config,
            progress=not args.no_progress,
        )
    except (ValueError, TypeError, OSError, KeyError) as err:
        from ..pipeline.methods import config_error_message

        return _error(config_error_message(err) if not isinstance(err, ValueError) else str(err))
    return status  # (the runner printed the summary line, or the progress bar showed it)
