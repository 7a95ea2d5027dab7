"""Sliding window against whole slice, with and without k-space data consistency, at equal cost.

Runs ``mrf-monai reconstruct --method iddpm`` (the shipped weights, the bundle's components) on
validation sets written by :func:`mrf_monai.simulation.validation_sets.write_validation_set` and
prints, per sampler setting, the network pixels per step relative to the whole-slice mode (the
cost: one network call per window and step), the seconds per slice and the T1/T2 MAPE per set.

    python benchmarks/bench_sampling_modes.py --sets /work/runs/valsets/id /work/runs/valsets/ood \\
        --out /work/runs/modes --samples 2 --steps 10

Equal cost: with 32 x 32 training patches a 230 x 230 slice is 64 windows at overlap 1/16
(stride 30), 1.14x the pixels of the padded whole slice (240 x 240); the paper's overlap 0.5 is
196 windows, 3.5x.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import time
from pathlib import Path

SETTINGS = {
    "whole+dc": {"mode": "whole", "dc_steps": 5},
    "whole": {"mode": "whole", "dc_steps": 0},
    "patch+dc (equal cost)": {"mode": "patch", "dc_steps": 5, "overlap": 0.0625},
    "patch (equal cost)": {"mode": "patch", "dc_steps": 0, "overlap": 0.0625},
    "patch (paper overlap 0.5)": {"mode": "patch", "dc_steps": 0, "overlap": 0.5},
}


def relative_pixels(setting: dict, size: int = 230, roi: int = 32, pad_multiple: int = 16) -> float:
    """Network pixels per step relative to the padded whole slice."""
    whole = (math.ceil(size / pad_multiple) * pad_multiple) ** 2
    if setting["mode"] == "whole":
        return 1.0
    stride = max(int(roi * (1 - setting["overlap"])), 1)
    per_side = math.ceil((size - roi) / stride) + 1
    return per_side**2 * roi * roi / whole


def main() -> None:
    from mrf_monai.evaluation.report import collect_metrics
    from mrf_monai.pipeline import reconstruct_dataset

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sets", nargs="+", required=True, help="validation set folders")
    ap.add_argument("--out", required=True, help="scratch folder for the maps")
    ap.add_argument("--samples", type=int, default=2)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--only", nargs="*", default=None, help="a subset of the settings")
    args = ap.parse_args()
    rows = []
    for name, setting in SETTINGS.items():
        if args.only and name not in args.only:
            continue
        for dataset in args.sets:
            dataset = Path(dataset)
            out = Path(args.out) / name.replace(" ", "_").replace("+", "-") / dataset.name
            options = {"n_samples": args.samples, "n_steps": args.steps, "num_threads": args.threads}
            options.update(setting)
            t0 = time.process_time()
            status = reconstruct_dataset(dataset, out, "iddpm", options=options, device="cpu", progress=False)
            cpu = time.process_time() - t0
            metrics, failures = collect_metrics([out], dataset, methods=[name])
            if status or failures:
                print(f"{name} on {dataset.name}: failed ({failures})", flush=True)
                continue
            n_slices = sum(json.loads((d / "timing.json").read_text())["n_slices"] for d in out.glob("sub-*"))
            t1 = sum(float(r["T1_MAPE"]) for r in metrics) / len(metrics)
            t2 = sum(float(r["T2_MAPE"]) for r in metrics) / len(metrics)
            row = {
                "setting": name,
                "set": dataset.name,
                "relative_pixels": round(relative_pixels(setting), 2),
                "cpu_s_per_slice": round(cpu / n_slices, 1),
                "t1_mape": round(t1, 2),
                "t2_mape": round(t2, 2),
                "subjects": len(metrics),
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    if rows:
        path = Path(args.out) / "modes.csv"
        with path.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        print("| setting | set | pixels vs whole | CPU s / slice | T1 MAPE % | T2 MAPE % |")
        print("| --- | --- | --- | --- | --- | --- |")
        for r in rows:
            print(
                f"| {r['setting']} | {r['set']} | {r['relative_pixels']} | {r['cpu_s_per_slice']} | "
                f"{r['t1_mape']} | {r['t2_mape']} |"
            )


if __name__ == "__main__":
    main()
