"""The one-command demo: held-out simulated subjects, every method, maps, metrics and a figure.

``make demo`` runs ``python -m mrf_monai.demo --out demo_output``. It

1. simulates held-out test subjects (test split of the phantoms, the paper's protocol:
   FISP, 200 frames, one 920-sample spiral interleaf per frame, 230 x 230),
2. reconstructs them with SVD-MRF, LRTV, the U-Net baseline and MRF-IDDPM (shipped weights
   in ``bundles/*/models/``), writing the NIfTI maps of the data contract,
3. evaluates every method against the simulated reference (``metrics.csv``, ``summary.md``),
4. draws a figure (reference, each method, absolute errors, MRF-IDDPM standard deviation),

and prints where everything is. MRF-IDDPM samples with the shipped CPU setting
(``bundles/mrf_iddpm/configs/inference_fast.json``: 4 samples, 10 DDIM steps on log-SNR spacing,
fused attention; about a minute per slice on 2 cores), which ``docs/results.md`` ("Sampling speed")
measured as accurate as 8 samples of 20 evenly spaced steps at a seventh of the cost; the inference
bundle keeps the paper's 10 samples and 50 steps. The settings are printed and stored in each
method's ``timing.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

__all__ = ["main", "run_demo"]

#: Method name -> (display name, options of its config). MRF-IDDPM options are the demo's light
#: settings; the shipped weights come from the installed bundles (``mrf_monai.resources``).
DEFAULT_METHODS: dict[str, tuple[str, dict]] = {
    "svdmrf": ("SVD-MRF", {}),
    "lrtv": ("LRTV", {}),
    "unet": ("U-Net", {}),
    "iddpm": (
        "MRF-IDDPM",
        {
            "n_samples": 4,
            "n_steps": 10,
            "spacing": "logsnr",
            "fused_attention": True,
            "mode": "whole",
            "dc_steps": 5,
            "dc_lambda": 0.1,
        },
    ),
}


def _simulate(data_dir: Path, n_subjects: int, seed: int, log) -> list[Path]:
    from mrf_monai.simulation.subjects import simulate_subject

    subjects = []
    for i in range(n_subjects):
        label = f"demo{i + 1:02d}"
        folder = data_dir / f"sub-{label}"
        if (folder / "raw.h5").is_file() and (folder / "ref").is_dir():
            log(f"  sub-{label}: already simulated, reused")
        else:
            t0 = time.perf_counter()
            simulate_subject(data_dir, label, seed=seed + i, split="test")
            log(f"  sub-{label}: simulated in {time.perf_counter() - t0:.1f} s")
        subjects.append(folder)
    return subjects


def _figure(out: Path, data_dir: Path, maps_dirs: dict[str, Path], label: str) -> tuple[Path, Path | None]:
    from mrf_monai.evaluation.figures import map_comparison_figure, uncertainty_scatter_figure
    from mrf_monai.evaluation.metrics import read_prediction
    from mrf_monai.io.subjects import read_reference

    ref = read_reference(data_dir / f"sub-{label}")
    mask = np.asarray(ref["mask"])[..., 0] > 0
    reference = {"T1": np.asarray(ref["t1_s"])[..., 0], "T2": np.asarray(ref["t2_s"])[..., 0]}
    methods, std = {}, None
    for name, folder in maps_dirs.items():
        pred = read_prediction(folder / f"sub-{label}", label)
        methods[name] = {"T1": pred["t1_s"][..., 0], "T2": pred["t2_s"][..., 0]}
        std_files = {q: folder / f"sub-{label}" / f"sub-{label}_desc-std_{q}map.nii.gz" for q in ("T1", "T2")}
        if all(f.is_file() for f in std_files.values()):  # probabilistic method: std over samples
            import nibabel as nib

            std = {}
            for q, f in std_files.items():
                unit = json.loads(f.with_name(f.name.replace(".nii.gz", ".json")).read_text()).get(
                    "Units", "s"
                )
                std[q] = np.asarray(nib.load(f).dataobj, dtype=np.float32)[..., 0] / (
                    1000.0 if unit == "ms" else 1.0
                )
            std_method = name
    fig = map_comparison_figure(
        out / "figure.png",
        reference,
        methods,
        mask,
        std=std,
        std_method=std_method if std else "",
        title=f"sub-{label}: FISP-MRF, 200 frames, one spiral interleaf per frame",
    )
    scatter = None
    if std is not None:
        err = {q: np.abs(methods[std_method][q] - reference[q])[mask] for q in ("T1", "T2")}
        scatter, _ = uncertainty_scatter_figure(
            out / "uncertainty.png", err, {q: std[q][mask] for q in ("T1", "T2")}
        )
    return fig, scatter


def run_demo(
    out: str | Path = "demo_output",
    n_subjects: int = 1,
    methods: list[str] | None = None,
    seed: int = 9000,
    log=print,
    reuse: bool = False,
    iddpm_options: dict | None = None,
) -> int:
    """Run the demo into ``out``; returns 0 when every method ran on every subject."""
    from mrf_monai.evaluation.report import collect_metrics, write_report
    from mrf_monai.pipeline import reconstruct_dataset

    t_start = time.perf_counter()
    out = Path(out)
    data_dir, maps_root = out / "data", out / "maps"
    log(f"[1/4] simulating {n_subjects} held-out test subject(s) in {data_dir}")
    subjects = _simulate(data_dir, n_subjects, seed, log)

    log("[2/4] reconstructing")
    status, maps_dirs = 0, {}
    for key in methods or list(DEFAULT_METHODS):
        display, options = DEFAULT_METHODS[key]
        if key == "iddpm" and iddpm_options:
            options = {**options, **iddpm_options}
        done = [maps_root / key / subject.name for subject in subjects]
        if reuse and all((folder / "timing.json").is_file() for folder in done):
            log(f"  {display}: maps of an earlier run reused ({maps_root / key})")
            maps_dirs[display] = maps_root / key
            continue
        t0 = time.perf_counter()
        try:
            rc = reconstruct_dataset(
                subjects,
                maps_root / key,
                key,
                options={"method_name": display, **options},
                progress=False,
                log=log,
            )
        except (ValueError, OSError) as err:  # a broken method must not stop the others
            log(f"  {display}: could not be set up: {err}")
            status = 1
            continue
        status |= int(rc != 0)
        maps_dirs[display] = maps_root / key
        log(f"  {display}: {time.perf_counter() - t0:.1f} s {json.dumps(options) if options else ''}")

    log("[3/4] evaluating against the simulated references")
    names = list(maps_dirs)
    rows, failures = collect_metrics([maps_dirs[n] for n in names], data_dir, methods=names)
    csv_path, md_path = write_report(rows, out / "report", failures)
    log("")
    log(md_path.read_text())

    log("[4/4] drawing the figure")
    fig, scatter = _figure(out, data_dir, maps_dirs, subjects[0].name.removeprefix("sub-"))

    log("")
    log(f"Done in {time.perf_counter() - t_start:.0f} s. Outputs:")
    log(f"  simulated subjects (raw.h5 + ref/): {data_dir}")
    for name, folder in maps_dirs.items():
        log(f"  {name} maps (NIfTI + JSON sidecars): {folder}")
    log(f"  metrics: {csv_path} and {md_path}")
    log(f"  figure: {fig}" + (f" and {scatter}" if scatter else ""))
    return status


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the demo's options to ``parser`` (shared by ``python -m mrf_monai.demo`` and
    ``mrf-monai demo``)."""
    parser.add_argument("--out", default="demo_output", help="output folder")
    parser.add_argument("--subjects", type=int, default=1, help="held-out test subjects to simulate")
    parser.add_argument(
        "--methods",
        default=",".join(DEFAULT_METHODS),
        help=f"comma-separated subset of {','.join(DEFAULT_METHODS)}",
    )
    parser.add_argument("--seed", type=int, default=9000, help="seed of the simulated subjects")
    parser.add_argument(
        "--reuse", action="store_true", help="keep the maps of methods an earlier run already wrote"
    )
    parser.add_argument(
        "--iddpm-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override an MRF-IDDPM setting, e.g. --iddpm-option n_samples=10",
    )
    return parser


def run_from_args(args: argparse.Namespace, parser: argparse.ArgumentParser | None = None) -> int:
    """Run the demo from parsed :func:`add_arguments` options; returns the exit status."""
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = sorted(set(methods) - set(DEFAULT_METHODS))
    if unknown:
        msg = f"unknown method(s) {unknown}; choose from {list(DEFAULT_METHODS)}"
        if parser is not None:
            parser.error(msg)
        print(f"mrf-monai demo: error: {msg}", file=sys.stderr)
        return 2
    from mrf_monai.pipeline import parse_options

    iddpm_options = parse_options(args.iddpm_option)
    return run_demo(
        args.out, args.subjects, methods, args.seed, reuse=args.reuse, iddpm_options=iddpm_options
    )


def main(argv: list[str] | None = None) -> int:
    parser = add_arguments(argparse.ArgumentParser(description=__doc__.split("\n\n")[0]))
    return run_from_args(parser.parse_args(argv), parser)


if __name__ == "__main__":
    sys.exit(main())
