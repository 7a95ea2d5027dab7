#!/usr/bin/env bash
# Copyright (c) mrf_monai developers.
# Licensed under the Apache License, Version 2.0.
#
# GPU check of issue 17 (run it whenever a CUDA GPU is available; under 8 minutes, installs
# nothing beyond the project). From the repository root:
#
#     bash benchmarks/device_check.sh [python]        # default python: .venv/bin/python or python3
#
# Prints, for the shipped network (bundles/mrf_iddpm/models/model.pt) and the paper-size network
# (build_model defaults, random weights): seconds per 230 x 230 slice for K = 10 samples / 50 DDIM
# steps and K = 8 / 20 steps (whole slice, 5 CG iterations of k-space data consistency per step,
# the whole loop on the GPU), the fast setting of configs/inference_fast.json, training steps per
# second (hybrid loss, Adam, batch 8 of 32 x 32 / 64 x 64 patches) and peak GPU memory of each.
# Target (issue 17): K = 10 / 50 steps in at most 3 s per slice on an H200.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${1:-}"
if [ -z "$PY" ]; then
    if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
timeout 480 "$PY" - <<'EOF'
import json, tempfile, time
from pathlib import Path

import torch

if not torch.cuda.is_available():
    raise SystemExit("device_check.sh: no CUDA device is visible to torch; run it on a GPU machine")
dev = torch.device("cuda")
torch.backends.cuda.matmul.allow_tf32 = True
torch.backends.cudnn.allow_tf32 = True
print(f"torch {torch.__version__}, {torch.cuda.get_device_name(dev)}")

from mrf_monai.acquisition.gridding import SubspaceGridder
from mrf_monai.diffusion.consistency import KSpaceDataConsistency
from mrf_monai.diffusion.inferer import DiffusionSamplingInferer
from mrf_monai.diffusion.losses import DiffusionLoss
from mrf_monai.diffusion.model import build_model, build_scheduler, load_model, predict_eps_and_var
from mrf_monai.io.ismrmrd import read_raw
from mrf_monai.simulation.subjects import simulate_subject
from mrf_monai.transforms.complex import complex_to_channels
from mrf_monai.transforms.intensity import condition_scale

shipped, hp = load_model("bundles/mrf_iddpm/models/model.pt", map_location=dev)
fast = json.loads(Path("bundles/mrf_iddpm/configs/inference_fast.json").read_text())
with tempfile.TemporaryDirectory() as tmp:
    simulate_subject(tmp, "dev", 9000, split="test")
    raw = read_raw(Path(tmp) / "sub-dev" / "raw.h5")
problem = SubspaceGridder().slice_problem(raw, 0, torch.as_tensor(hp["data"]["basis"]).to(torch.complex64))
scale = float(condition_scale(problem.grid))
w = torch.as_tensor(hp["data"]["channel_scale"], dtype=torch.float32)
cond = (complex_to_channels(problem.grid.to(torch.complex64) / scale) * w[:, None, None]).float().to(dev)
problem = problem.to(dev)


def dc(problem, scale, channel_scale):
    return KSpaceDataConsistency(problem, float(scale), channel_scale, n_steps=5, lam=0.1)


paper_kw = {k: v for k, v in hp["model"].items() if k in ("rank", "learn_sigma", "prediction_type")}
networks = {"shipped": shipped, "paper-size": build_model(**paper_kw, init_seed=0).to(dev).eval()}
settings = [
    ("K 10 / 50 DDIM steps", dict(n_samples=10, n_steps=50)),
    ("K 8 / 20 DDIM steps", dict(n_samples=8, n_steps=20)),
    (
        "inference_fast.json",
        dict(
            n_samples=fast.get("n_samples", 8),
            n_steps=fast.get("n_steps", 20),
            method=fast.get("sampling_method", "ddim"),
            spacing=fast.get("spacing", "linspace"),
        ),
    ),
]
for name, net in networks.items():
    n_par = sum(p.numel() for p in net.parameters()) / 1e6
    x = torch.randn(1, cond.shape[0], 240, 240, device=dev)
    with torch.no_grad():
        for _ in range(3):
            predict_eps_and_var(net, x, 500, x)
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(10):
            predict_eps_and_var(net, x, 500, x)
        torch.cuda.synchronize()
    print(f"\n{name} network ({n_par:.2f} M parameters): batch-1 forward {1e3 * (time.perf_counter() - t0) / 10:.1f} ms")
    for sname, kw in settings:
        for amp in (False, True):
            inferer = DiffusionSamplingInferer(mode="whole", data_consistency=dc, channel_scale=w, amp=amp, **kw)
            inferer(cond, net, slice_index=0, problem=problem, scale=scale)  # warm-up (cuFFT plans, kernels)
            torch.cuda.reset_peak_memory_stats()
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            inferer(cond, net, slice_index=1, problem=problem, scale=scale)
            torch.cuda.synchronize()
            peak = torch.cuda.max_memory_allocated() / 2**30
            print(f"  {sname} ({kw}), amp {amp}: {time.perf_counter() - t0:.2f} s / slice, peak {peak:.2f} GiB")
    patch = 32 if name == "shipped" else 64
    train_net = build_model(**hp["model"]) if name == "shipped" else build_model(**paper_kw)
    train_net = train_net.to(dev).train()
    sched = build_scheduler()
    loss_fn = DiffusionLoss(sched, "hybrid", prediction_type=hp["model"]["prediction_type"])
    opt = torch.optim.Adam(train_net.parameters(), lr=2e-4)
    abar = sched.alphas_cumprod.to(dev)
    c = cond.shape[0]

    def train_step():
        x0 = torch.randn(8, c, patch, patch, device=dev)
        cnd = torch.randn_like(x0)
        t = torch.randint(0, 1000, (8,), device=dev)
        noise = torch.randn_like(x0)
        a = abar[t].view(-1, 1, 1, 1).float()
        x_t = a.sqrt() * x0 + (1 - a).sqrt() * noise
        eps, v = predict_eps_and_var(train_net, x_t, t, cnd, abar)
        out = loss_fn(eps, noise, t, x0, x_t, v)
        opt.zero_grad(set_to_none=True)
        out["loss"].backward()
        opt.step()

    for _ in range(5):
        train_step()
    torch.cuda.reset_peak_memory_stats()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(50):
        train_step()
    torch.cuda.synchronize()
    rate = 50 / (time.perf_counter() - t0)
    peak = torch.cuda.max_memory_allocated() / 2**30
    print(f"  training: {rate:.1f} steps/s (batch 8, {patch} x {patch}), peak {peak:.2f} GiB")
EOF
