# Copyright (c) mrf_monai developers.
# Licensed under the Apache License, Version 2.0.
"""Training throughput and inference cost of the MRF-IDDPM network on the CPU.

1. Training: optimiser steps per second and peak resident memory of the shared training engine
   (:mod:`mrf_monai.engines`) driving :class:`DiffusionTrainer` for the shipped network
   (``bundles/mrf_iddpm/configs/train.json``: 32 x 32 patches, batch 8), the paper-sized
   default of ``build_model`` (64 x 64 patches, batch 32 and 8) and the tiny test network, and
   :class:`UNetTrainer` for the shipped U-Net (``bundles/unet_baseline``: 64 x 64, batch 8), on
   random in-memory pairs (data generation is not timed). Each configuration runs in a fresh
   subprocess so that its peak memory is its own.
2. Inference: forward time per 64 x 64 patch (batch 16, ``no_grad``) of candidate network sizes,
   and the implied time of one 50-step DDIM sample of a 230 x 230 slice over 49 windows
   (window overlap 0.5; the inference target is < 3 min per slice and sample).

Usage: ``python benchmarks/bench_training.py [--threads 2] [--steps 3] [--skip-train]``.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

TRAIN_CONFIGS = {
    "shipped": {
        "model": {
            "rank": 5,
            "channels": [32, 64, 64],
            "attention_levels": [False, False, True],
            "num_res_blocks": 1,
            "num_head_channels": 32,
            "norm_num_groups": 16,
            "prediction_type": "v",
        },
        "patch": 32,
        "batch": 8,
    },
    "unet-shipped": {
        "method": "unet",
        "model": {"rank": 5, "channels": [32, 64, 128, 256], "strides": [2, 2, 2], "num_res_units": 1},
        "patch": 64,
        "batch": 8,
    },
    "default": {
        "model": {
            "rank": 5,
            "channels": [64, 128, 128],
            "attention_levels": [False, False, True],
            "num_res_blocks": 2,
            "num_head_channels": 32,
        },
        "patch": 64,
        "batch": 32,
    },
    "default-b8": {
        "model": {
            "rank": 5,
            "channels": [64, 128, 128],
            "attention_levels": [False, False, True],
            "num_res_blocks": 2,
            "num_head_channels": 32,
        },
        "patch": 64,
        "batch": 8,
    },
    "tiny": {
        "model": {
            "rank": 2,
            "channels": [16, 16],
            "attention_levels": [False, True],
            "num_res_blocks": 1,
            "num_head_channels": 8,
            "norm_num_groups": 8,
        },
        "patch": 16,
        "batch": 2,
    },
}

INFER_CANDIDATES = {
    "small (32,64,64) attn@3 1 res": {
        "channels": [32, 64, 64],
        "attention_levels": [False, False, True],
        "num_res_blocks": 1,
        "num_head_channels": 32,
    },
    "medium (32,64,128) attn@3 2 res": {
        "channels": [32, 64, 128],
        "attention_levels": [False, False, True],
        "num_res_blocks": 2,
        "num_head_channels": 32,
    },
    "default (64,128,128) attn@3 2 res": {
        "channels": [64, 128, 128],
        "attention_levels": [False, False, True],
        "num_res_blocks": 2,
        "num_head_channels": 32,
    },
    "DiPh-like (128,256,384,512) attn@3,4 2 res": {
        "channels": [128, 256, 384, 512],
        "attention_levels": [False, False, True, True],
        "num_res_blocks": 2,
        "num_head_channels": 32,
    },
}


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def train_worker(name: str, steps: int, threads: int, device: str = "cpu", amp: bool = False) -> dict:
    """Time ``steps`` training steps (after one warm-up step) of configuration ``name``."""
    import tempfile

    import torch

    from mrf_monai.baselines.unet import UNetTrainer, build_unet
    from mrf_monai.diffusion.losses import DiffusionLoss
    from mrf_monai.diffusion.model import build_model, build_scheduler
    from mrf_monai.diffusion.training import DiffusionTrainer

    torch.set_num_threads(threads)
    cfg = TRAIN_CONFIGS[name]
    rank, p, b = cfg["model"]["rank"], cfg["patch"], cfg["batch"]
    g = torch.Generator().manual_seed(0)
    batch = {
        "image": torch.randn(b, 2 * rank, p, p, generator=g),
        "cond": torch.randn(b, 2 * rank, p, p, generator=g),
    }
    rss0 = _peak_rss_mb()
    with tempfile.TemporaryDirectory() as tmp:
        common = dict(
            train_dataset=[],
            output_dir=tmp,
            max_steps=steps + 1,
            batch_size=b,
            channel_scale=None,
            progress=False,
            tensorboard=False,
            resume=None,
            device=device,
            amp=amp,
            amp_dtype="bfloat16",
        )
        if cfg.get("method") == "unet":
            net = build_unet(**cfg["model"], init_seed=0)
            opt = torch.optim.Adam(net.parameters(), lr=2e-4)
            tr = UNetTrainer(net, opt, torch.nn.L1Loss(), **common)
        else:
            net = build_model(**cfg["model"], init_seed=0)
            opt = torch.optim.Adam(net.parameters(), lr=2e-4)
            loss = DiffusionLoss(
                build_scheduler(), prediction_type=cfg["model"].get("prediction_type", "epsilon")
            )
            tr = DiffusionTrainer(net, opt, loss, **common)
        cuda = tr.device.type == "cuda"
        tr.train_step(batch)  # warm-up
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        t0, c0 = time.perf_counter(), time.process_time()
        for _ in range(steps):
            tr.train_step(batch)  # returns python floats: synchronises every step
        dt = (time.perf_counter() - t0) / steps
        cpu = (time.process_time() - c0) / steps
    n_params = sum(q.numel() for q in tr.network.parameters())
    return {
        "config": name,
        "params_M": n_params / 1e6,
        "batch": b,
        "patch": p,
        "s_per_step": dt,
        "steps_per_s": 1.0 / dt,
        "cpu_s_per_step": cpu,
        "peak_rss_MB": _peak_rss_mb(),
        "rss_before_MB": rss0,
        "device": str(tr.device) + (" amp-bf16" if tr.amp else ""),
        "peak_gpu_MB": torch.cuda.max_memory_allocated() / 2**20 if cuda else 0.0,
    }


def infer_bench(threads: int, repeats: int = 1, batch: int = 16, device: str = "cpu") -> list[dict]:
    """Forward cost per 64 x 64 patch: FLOPs (load-independent), wall and process CPU time."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from mrf_monai.diffusion.model import build_model, predict_eps_and_var

    torch.set_num_threads(threads)
    rows = []
    for name, kw in INFER_CANDIDATES.items():
        torch.manual_seed(0)
        net = build_model(rank=5, **kw).eval().to(device)
        x = torch.randn(batch, 10, 64, 64, device=device)
        c = torch.randn(batch, 10, 64, 64, device=device)
        t = torch.full((batch,), 500, device=device)
        with torch.no_grad():
            with FlopCounterMode(display=False) as fc:
                predict_eps_and_var(net, x, t, c)  # also the warm-up
            if device != "cpu":
                torch.cuda.synchronize()
            w0, c0 = time.perf_counter(), time.process_time()
            for _ in range(repeats):
                predict_eps_and_var(net, x, t, c)
            if device != "cpu":
                torch.cuda.synchronize()
            wall = (time.perf_counter() - w0) / repeats
            cpu = (time.process_time() - c0) / repeats
        ms = 1000.0 * wall / batch
        rows.append(
            {
                "network": name,
                "params_M": sum(q.numel() for q in net.parameters()) / 1e6,
                "gflop_per_patch": fc.get_total_flops() / batch / 1e9,
                "ms_per_patch": ms,
                "cpu_ms_per_patch": 1000.0 * cpu / batch,
                "s_per_slice_sample_49x50": ms * 49 * 50 / 1000.0,
            }
        )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--configs", nargs="*", default=list(TRAIN_CONFIGS))
    ap.add_argument("--skip-train", action="store_true")
    ap.add_argument("--skip-infer", action="store_true")
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--amp", action="store_true", help="bfloat16 autocast in training (CUDA)")
    ap.add_argument("--infer-repeats", type=int, default=1)
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(train_worker(args.worker, args.steps, args.threads, args.device, args.amp)))
        return

    if not args.skip_train:
        print(f"training ({args.threads} threads, {args.steps} timed steps after 1 warm-up, random data)")
        print(
            f"{'config':<12} {'params M':>8} {'batch':>5} {'patch':>5} {'s/step':>8} {'steps/s':>8} "
            f"{'CPU s/step':>10} {'peak RSS MB':>11} {'peak GPU MB':>11} device"
        )
        for name in args.configs:
            out = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--worker",
                    name,
                    "--steps",
                    str(args.steps),
                    "--threads",
                    str(args.threads),
                    "--device",
                    args.device,
                ]
                + (["--amp"] if args.amp else []),
                capture_output=True,
                text=True,
                check=True,
            )
            r = json.loads(out.stdout.strip().splitlines()[-1])
            print(
                f"{r['config']:<12} {r['params_M']:>8.2f} {r['batch']:>5} {r['patch']:>5} "
                f"{r['s_per_step']:>8.3f} "
                f"{r['steps_per_s']:>8.3f} {r['cpu_s_per_step']:>10.3f} {r['peak_rss_MB']:>11.0f} "
                f"{r['peak_gpu_MB']:>11.0f} {r['device']}"
            )
    if not args.skip_infer:
        print(
            f"\ninference forward, batch 16 of 64x64 patches, rank 5 ({args.device}, {args.threads} threads)"
        )
        print(
            f"{'network':<44} {'params M':>8} {'GFLOP/patch':>11} {'ms/patch':>9} {'CPU ms/patch':>12} "
            f"{'s/slice/sample (49 win x 50 steps)':>35}"
        )
        for r in infer_bench(args.threads, args.infer_repeats, device=args.device):
            print(
                f"{r['network']:<44} {r['params_M']:>8.2f} {r['gflop_per_patch']:>11.2f} "
                f"{r['ms_per_patch']:>9.1f} "
                f"{r['cpu_ms_per_patch']:>12.1f} {r['s_per_slice_sample_49x50']:>35.0f}"
            )


if __name__ == "__main__":
    main()
