# Copyright (c) mrf_monai developers.
# Licensed under the Apache License, Version 2.0.
"""Time MRF-IDDPM sampling of one 230 x 230 slice (untrained default-size network).

The cost of sampling is (network calls) x (time per call): for each setting the script measures
the network on a batch of 64 x 64 windows (or on the padded whole slice), predicts the time per
sample and per slice (K samples) from the number of windows and steps, and checks the
prediction against a real, short run of the sampler (same code path, few steps) whose measured
time is reported next to it. ``--full`` runs the full settings instead of extrapolating (hours
on a small CPU).

    python benchmarks/bench_inference.py [--threads 2] [--device cpu] [--check-steps 2] [--full]
"""

from __future__ import annotations

import argparse
import time

import torch

from mrf_monai.diffusion.inferer import SlidingWindowDiffusionSampler
from mrf_monai.diffusion.model import build_model, predict_eps_and_var

SLICE = (230, 230)
SETTINGS = [
    # name, sampler kwargs, K
    ("paper default: patch 64, overlap 0.5, DDIM 50, K=10", {"overlap": 0.5, "n_steps": 50}, 10),
    ("patch 64, overlap 0.25, DDIM 50, K=10", {"overlap": 0.25, "n_steps": 50}, 10),
    ("patch 64, overlap 0.25, DDIM 20, K=10", {"overlap": 0.25, "n_steps": 20}, 10),
    ("whole slice (240^2), DDIM 50, K=10", {"mode": "whole", "n_steps": 50}, 10),
    ("whole slice (240^2), DDIM 20, K=4", {"mode": "whole", "n_steps": 20}, 4),
]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def time_call(
    model: torch.nn.Module, batch: int, size: tuple[int, int], device: torch.device, repeats: int
) -> float:
    """Median seconds of one network call on ``batch`` images of ``size``."""
    x = torch.randn(batch, 10, *size, device=device)
    predict_eps_and_var(model, x, 500, x)  # warm-up
    times = []
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        predict_eps_and_var(model, x, 500, x)
        _sync(device)
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


@torch.no_grad()
def compare_cpu(model: torch.nn.Module, device: torch.device) -> None:
    """Samples of a 96 x 96 slice on ``device`` and on the CPU with the same seeds (CPU-drawn noise)."""
    cond = torch.randn(1, 10, 96, 96, generator=torch.Generator().manual_seed(0))
    for kwargs in ({}, {"method": "ddpm"}, {"mode": "whole"}):
        sampler = SlidingWindowDiffusionSampler(n_steps=3, sw_batch_size=16, **kwargs)
        out_dev = sampler.sample_slice(model, cond, n_samples=2, seed=5).cpu()
        out_cpu = sampler.sample_slice(model.cpu(), cond, n_samples=2, seed=5)
        model.to(device)
        rel = float((out_dev - out_cpu).norm() / out_cpu.norm())
        spread = float((out_cpu[0] - out_cpu[1]).norm() / out_cpu.norm())
        print(
            f"{device} vs cpu {kwargs or 'ddim patch'}: relative difference {rel:.2e} "
            f"(between samples {spread:.2e})"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: unchanged)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--sw-batch-size", type=int, default=None, help="windows per call (default 8 CPU, 64 CUDA)"
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--check-steps", type=int, default=2, help="steps of the real run that checks the estimate"
    )
    parser.add_argument(
        "--full", action="store_true", help="run every setting in full instead of extrapolating"
    )
    parser.add_argument("--amp", action="store_true", help="autocast the network (bfloat16)")
    parser.add_argument(
        "--compare-cpu", action="store_true", help="check --device against the CPU (same seeds)"
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    sw = args.sw_batch_size or (64 if device.type == "cuda" else 8)
    torch.manual_seed(0)
    model = build_model(rank=5).to(device).eval()
    n_par = sum(p.numel() for p in model.parameters())
    if args.compare_cpu and device.type != "cpu":
        compare_cpu(model, device)
    if args.amp:
        torch.autocast(device.type, dtype=torch.bfloat16).__enter__()
    print(
        f"device {device}, amp {args.amp}, torch threads {torch.get_num_threads()}, "
        f"network {n_par / 1e6:.1f} M parameters "
        f"(build_model defaults, rank 5), slice {SLICE[0]}x{SLICE[1]}, sw_batch_size {sw}"
    )

    t_win = time_call(model, sw, (64, 64), device, args.repeats) / sw
    t_whole = time_call(model, 1, (240, 240), device, args.repeats)
    print(
        f"network: {t_win * 1e3:.1f} ms per 64x64 window (batch {sw}), "
        f"{t_whole * 1e3:.1f} ms per 240x240 slice\n"
    )

    cond = torch.randn(1, 10, *SLICE, device=device)
    cols = ["setting", "net calls/sample", "s/slice (est)", "s/slice (real)", "vs default (real)"]
    print("| " + " | ".join(cols) + " |")
    print("|" + "|".join(" --- " for _ in cols) + "|")
    base = None
    for name, kwargs, k in SETTINGS:
        sampler = SlidingWindowDiffusionSampler(sw_batch_size=sw, **kwargs)
        n_win = sampler.n_windows(SLICE)
        if sampler.mode == "patch":
            # windows of all K samples share batches of sw_batch_size
            per_step = -(-n_win * k // sw) * sw * t_win / k
        else:
            per_step = t_whole
        est_slice = per_step * sampler.n_steps * k
        steps = sampler.n_steps if args.full else args.check_steps
        check = SlidingWindowDiffusionSampler(sw_batch_size=sw, **{**kwargs, "n_steps": steps})
        n_check = k if args.full else 1
        _sync(device)
        t0 = time.perf_counter()
        check.sample_slice(model, cond, n_samples=n_check, seed=0)
        _sync(device)
        real_slice = (time.perf_counter() - t0) / (steps * n_check) * sampler.n_steps * k
        base = base or real_slice
        row = [
            name,
            str(n_win * sampler.n_steps),
            f"{est_slice:.1f}",
            f"{real_slice:.1f}" + ("" if args.full else " (extrapolated)"),
            f"{base / real_slice:.1f}x",
        ]
        print("| " + " | ".join(row) + " |", flush=True)
    print(
        f"\n'est' = network time per call x calls (batched windows); 'real' = the sampler run with "
        f"{'all' if args.full else args.check_steps} steps and {'K' if args.full else 1} sample(s) "
        "(includes blending and noise; one sample fills fewer window batches than K)."
    )


if __name__ == "__main__":
    main()
