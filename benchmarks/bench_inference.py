# Copyright (c) mrf_monai developers.
# Licensed under the Apache License, Version 2.0.
"""Seconds and forward-equivalents per slice of MRF-IDDPM sampling with the shipped weights.

One simulated 230 x 230 test slice (seed 9000) is gridded as the pipeline does (its
``SliceProblem`` feeds the k-space data consistency), then sampled with
:class:`~mrf_monai.diffusion.inferer.DiffusionSamplingInferer` at two settings read from the
bundle: the paper setting (``configs/inference.json``: K = 10 samples, 50 DDIM steps) and the
shipped CPU setting (``inference.json`` overlaid with ``configs/inference_fast.json``).

Forward-equivalents per slice = seconds per slice / seconds of one batch-1 forward of the network
as stored (float32, the padded 240 x 240 slice, no fused attention), measured in the same run, so
a shared or slower machine changes both alike. CPU time (user + sys of this process) is printed
beside wall time: on a machine shared with other work it is the steadier figure.

The paper setting is extrapolated from runs with 1 and ``--check-steps`` DDIM steps (a DDIM step
costs the same at every step; the difference removes the one-off cost of the data-consistency
set-up) unless ``--full``; the shipped setting always runs in full. The config key
``fused_attention`` builds the network with ``use_flash_attention=True`` (the same weights; MONAI's
attention then calls ``scaled_dot_product_attention``, which does not store the 3600 x 3600
attention matrix of the lowest level: the same result, half the time on a CPU).

    OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_inference.py [--threads 2] [--check-steps 3] [--full]

(``OMP_WAIT_POLICY=PASSIVE`` on cores shared with other work, ``docs/interfaces.md``, "Threads".)
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from mrf_monai.acquisition.gridding import SubspaceGridder
from mrf_monai.diffusion.consistency import KSpaceDataConsistency
from mrf_monai.diffusion.inferer import DiffusionSamplingInferer
from mrf_monai.diffusion.model import build_model, load_model, predict_eps_and_var, scheduler_from_checkpoint
from mrf_monai.io.ismrmrd import read_raw
from mrf_monai.simulation.subjects import simulate_subject
from mrf_monai.transforms.complex import complex_to_channels
from mrf_monai.transforms.intensity import condition_scale

ROOT = Path(__file__).resolve().parents[1]
BUNDLE = ROOT / "bundles" / "mrf_iddpm"
#: inference.json keys the benchmark honours, with their defaults
KEYS = {
    "n_samples": 10,
    "n_steps": 50,
    "sampling_method": "ddim",
    "eta": 0.0,
    "spacing": "linspace",
    "mode": "whole",
    "dc_steps": 5,
    "dc_lambda": 0.1,
    "amp": False,
    "fused_attention": False,
    "sample_batch_size": None,
}


def settings(overlay: str | None) -> dict[str, Any]:
    """The sampling keys of ``inference.json`` (overlaid with ``overlay``)."""
    cfg = json.loads((BUNDLE / "configs" / "inference.json").read_text())
    if overlay:
        cfg.update(json.loads((BUNDLE / "configs" / overlay).read_text()))
    return {k: cfg.get(k, v) for k, v in KEYS.items()}


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def one_slice(device: torch.device, hp: dict[str, Any]) -> tuple[torch.Tensor, Any, float]:
    """``(condition (2R, Nx, Ny), SliceProblem, scale)`` of a freshly simulated test slice."""
    with tempfile.TemporaryDirectory() as tmp:
        simulate_subject(tmp, "bench", 9000, split="test")
        raw = read_raw(Path(tmp) / "sub-bench" / "raw.h5")
    basis = torch.as_tensor(hp["data"]["basis"]).to(torch.complex64)
    problem = SubspaceGridder(device=device).slice_problem(raw, 0, basis)
    scale = float(condition_scale(problem.grid))
    w = torch.as_tensor(hp["data"]["channel_scale"], dtype=torch.float32, device=device)
    cond = complex_to_channels(problem.grid.to(torch.complex64) / scale) * w[:, None, None]
    return cond.float(), problem, scale


@torch.no_grad()
def forward_seconds(
    net: torch.nn.Module, shape: tuple[int, ...], device: torch.device, repeats: int
) -> tuple[float, float]:
    """Median wall and CPU seconds of one network call on a batch of ``shape``."""
    x = torch.randn(shape, device=device)
    predict_eps_and_var(net, x, 500, x)  # warm-up
    runs = []
    for _ in range(repeats):
        sync(device)
        t0, c0 = time.perf_counter(), cpu_seconds()
        predict_eps_and_var(net, x, 500, x)
        sync(device)
        runs.append((time.perf_counter() - t0, cpu_seconds() - c0))
    return sorted(runs)[len(runs) // 2]


def inferer_for(s: dict[str, Any], hp: dict[str, Any], n_steps: int) -> DiffusionSamplingInferer:
    dc = None
    if s["dc_steps"] > 0:

        def dc(
            problem: Any, scale: torch.Tensor, channel_scale: torch.Tensor | None
        ) -> KSpaceDataConsistency:
            return KSpaceDataConsistency(
                problem, float(scale), channel_scale, n_steps=s["dc_steps"], lam=s["dc_lambda"]
            )

    return DiffusionSamplingInferer(
        n_samples=s["n_samples"],
        n_steps=n_steps,
        method=s["sampling_method"],
        eta=s["eta"],
        spacing=s["spacing"],
        mode=s["mode"],
        sample_batch_size=s["sample_batch_size"],
        scheduler=scheduler_from_checkpoint(hp),
        data_consistency=dc,
        channel_scale=hp["data"].get("channel_scale"),
        amp=s["amp"],
    )


def run_slice(
    inferer: DiffusionSamplingInferer,
    model: torch.nn.Module,
    cond: torch.Tensor,
    problem: Any,
    scale: float,
    s: dict[str, Any],
    device: torch.device,
) -> tuple[float, float]:
    """Wall and CPU seconds of one slice."""
    sync(device)
    t0, c0 = time.perf_counter(), cpu_seconds()
    inferer(cond, model, slice_index=0, problem=problem if s["dc_steps"] else None, scale=scale)
    sync(device)
    return time.perf_counter() - t0, cpu_seconds() - c0


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--threads", type=int, default=2, help="torch threads (0: leave unchanged)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--model", default=str(BUNDLE / "models" / "model.pt"))
    parser.add_argument("--repeats", type=int, default=3, help="repeats of the batch-1 forward")
    parser.add_argument("--check-steps", type=int, default=3, help="DDIM steps the paper setting is timed on")
    parser.add_argument("--full", action="store_true", help="run the paper setting in full")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    net, hp = load_model(args.model, map_location=device)
    fused = build_model(**{**hp["model"], "use_flash_attention": True})
    fused.load_state_dict(net.state_dict())
    fused = fused.to(device).eval()
    cond, problem, scale = one_slice(device, hp)
    padded = tuple(-(-n // 16) * 16 for n in cond.shape[-2:])
    t_fwd, c_fwd = forward_seconds(net, (1, cond.shape[0], *padded), device, args.repeats)
    t_fused, _ = forward_seconds(fused, (1, cond.shape[0], *padded), device, args.repeats)
    print(
        f"device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}; network "
        f"{sum(p.numel() for p in net.parameters()) / 1e6:.2f} M parameters ({args.model}); slice "
        f"{tuple(cond.shape[-2:])} padded to {padded}\n"
        f"batch-1 forward (the unit): {t_fwd:.3f} s wall, {c_fwd:.3f} s CPU; with fused attention "
        f"{t_fused:.3f} s wall\n"
    )
    cols = [
        "setting",
        "K",
        "steps",
        "method",
        "spacing",
        "DC it.",
        "bf16",
        "fused attn.",
        "s / slice",
        "CPU s / slice",
        "forward-eq. / slice (wall, CPU)",
    ]
    print("| " + " | ".join(cols) + " |")
    print("|" + "|".join(" --- " for _ in cols) + "|")
    for name, overlay in (
        ("paper (inference.json)", None),
        ("shipped CPU (inference_fast.json)", "inference_fast.json"),
    ):
        s = settings(overlay)
        model = fused if s["fused_attention"] else net
        extrapolate = not (args.full or overlay) and s["sampling_method"] in ("ddim", "ddpm")
        steps = min(max(args.check_steps, 2), s["n_steps"]) if extrapolate else s["n_steps"]
        wall, cpu = run_slice(inferer_for(s, hp, steps), model, cond, problem, scale, s, device)
        note = ""
        if extrapolate and steps < s["n_steps"]:
            # the cost of a DDIM step is the same at every step: (run with 1 + c steps) - (run with 1 step)
            w1, c1 = run_slice(inferer_for(s, hp, 1), model, cond, problem, scale, s, device)
            per_step = ((wall - w1) / (steps - 1), (cpu - c1) / (steps - 1))
            wall, cpu = w1 + (s["n_steps"] - 1) * per_step[0], c1 + (s["n_steps"] - 1) * per_step[1]
            note = f" (from {steps} steps)"
        row = [
            name,
            s["n_samples"],
            s["n_steps"],
            s["sampling_method"],
            s["spacing"],
            s["dc_steps"],
            s["amp"],
            s["fused_attention"],
            f"{wall:.1f}{note}",
            f"{cpu:.1f}",
            f"{wall / t_fwd:.0f}, {cpu / c_fwd:.0f}",
        ]
        print("| " + " | ".join(str(v) for v in row) + " |", flush=True)
    print(
        "\nforward-eq. = s / slice divided by the batch-1 forward above (same run), from wall and from CPU "
        "time; CPU s = user + sys of this process. Target (issue 17): the shipped CPU setting in at most 40 "
        "forward-equivalents."
    )


if __name__ == "__main__":
    main()
