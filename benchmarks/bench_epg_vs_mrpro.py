"""Cross-check and speed comparison of our FISP EPG against mrpro's EPG (NeuroMRF model).

mrpro is never installed into the project's environment: this script uses (and if needed
creates) a separate virtual environment, by default /tmp/mrpro-venv, with
``pip install torch==2.13.0`` then ``pip install mrpro`` (time-boxed to 15 minutes), and
runs mrpro there in a subprocess. Both simulate the same inversion-prepared FISP sequence
(Jiang-2015 schedule, TR/TE/TI 10/1.908/18 ms) for the same atoms of the default grid.

Reports: the largest |difference| of the signals (M0 = 1) with both simulators untruncated
(float64), the truncation error of each simulator's fast setting, and the speed ratio at
equal state count (float32). If mrpro cannot be installed or run, it says why and exits 0.

    python benchmarks/bench_epg_vs_mrpro.py [--venv /tmp/mrpro-venv] [--threads 2]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from mrf_monai.physics import fisp_mrf_jiang2015, simulate_fisp, t1t2_grid

INSTALL_TIMEOUT_S = 15 * 60

WORKER = r"""
import sys, time, numpy as np, torch
import mrpro
from mrpro.operators.models import NeuroMRF
torch.set_num_threads(int(sys.argv[3]))
z = np.load(sys.argv[1])
out = {"torch": np.array(torch.__version__), "mrpro": np.array(mrpro.__version__)}
for tag, dtype, n_states, sel in (("exact", torch.float64, int(z["fa"].size), z["acc_idx"]),
                                  ("fast", torch.float32, int(z["k_fast"]), z["speed_idx"])):
    model = NeuroMRF(torch.as_tensor(z["fa"], dtype=dtype), echo_time=float(z["te"]),
                     repetition_time=float(z["tr"]), inversion_time=float(z["ti"]), n_states=n_states)
    t1 = torch.as_tensor(z["t1"][sel], dtype=dtype); t2 = torch.as_tensor(z["t2"][sel], dtype=dtype)
    m0 = torch.ones_like(t1)
    t0 = time.perf_counter()
    (sig,) = model(m0, t1, t2)
    out[tag + "_s"] = np.array(time.perf_counter() - t0)
    out[tag] = sig.T.detach().cpu().numpy().astype(np.complex128)
np.savez(sys.argv[2], **out)
"""


def ensure_mrpro(venv: Path) -> tuple[Path | None, str]:
    """Python of a venv where ``import mrpro`` works, or None and the reason."""
    py = venv / "bin" / "python"
    ok = py.exists() and subprocess.run([str(py), "-c", "import mrpro"], capture_output=True).returncode == 0
    if ok:
        return py, "existing venv"
    start = time.monotonic()
    steps = (
        ["python3", "-m", "venv", str(venv)],
        [str(py), "-m", "pip", "install", "-q", "torch==2.13.0"],
        [str(py), "-m", "pip", "install", "-q", "mrpro"],
    )
    for cmd in steps:
        left = INSTALL_TIMEOUT_S - (time.monotonic() - start)
        if left <= 0:
            return None, "installing mrpro took longer than 15 minutes"
        try:
            res = subprocess.run(cmd, capture_output=True, text=True, timeout=left)
        except subprocess.TimeoutExpired:
            return None, f"'{' '.join(cmd)}' did not finish within the 15-minute budget"
        if res.returncode != 0:
            return None, f"'{' '.join(cmd)}' failed: {res.stderr.strip().splitlines()[-1:]}"
    return py, f"created in {time.monotonic() - start:.0f} s"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--venv", type=Path, default=Path("/tmp/mrpro-venv"))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--frames", type=int, default=1000)
    p.add_argument("--n-accuracy", type=int, default=100, help="atoms for the untruncated float64 comparison")
    p.add_argument("--n-speed", type=int, default=2000, help="atoms for the float32 timing")
    p.add_argument("--states", type=int, default=64, help="state count of the timed runs (mrpro's default)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    py, how = ensure_mrpro(args.venv)
    if py is None:
        print(f"mrpro comparison not run: {how}")
        return 0
    print(f"mrpro venv: {args.venv} ({how})")

    seq = fisp_mrf_jiang2015(args.frames)
    t1, t2 = t1t2_grid(dtype=torch.float64)
    rng = np.random.default_rng(0)
    acc_idx = rng.choice(t1.numel(), args.n_accuracy, replace=False)
    speed_idx = rng.choice(t1.numel(), args.n_speed, replace=False)
    with tempfile.TemporaryDirectory() as tmp:
        inp, res = Path(tmp) / "in.npz", Path(tmp) / "out.npz"
        np.savez(
            inp,
            t1=t1.numpy(),
            t2=t2.numpy(),
            fa=np.deg2rad(seq.flip_angle_deg),
            te=seq.te_ms / 1000,
            tr=float(seq.tr_ms[0]) / 1000,
            ti=seq.ti_ms / 1000,
            acc_idx=acc_idx,
            speed_idx=speed_idx,
            k_fast=args.states,
        )
        run = subprocess.run(
            [str(py), "-c", WORKER, str(inp), str(res), str(args.threads)],
            capture_output=True,
            text=True,
            timeout=INSTALL_TIMEOUT_S,
        )
        if run.returncode != 0:
            print(f"mrpro comparison not run: mrpro failed: {run.stderr.strip()[-800:]}")
            return 0
        theirs = dict(np.load(res))
    print(
        f"mrpro {theirs['mrpro']} on torch {theirs['torch']}; ours on torch {torch.__version__}; "
        f"{args.threads} threads, {args.frames} frames"
    )

    ia, isp = torch.as_tensor(acc_idx), torch.as_tensor(speed_idx)
    ours_exact = simulate_fisp(t1[ia], t2[ia], seq, n_states=seq.n_frames).numpy()
    ours_auto = simulate_fisp(t1[ia], t2[ia], seq).numpy()
    print(
        f"untruncated float64, {args.n_accuracy} atoms: max |ours - mrpro| = "
        f"{np.abs(ours_exact - theirs['exact']).max():.2e} (M0 = 1); "
        f"ours {np.abs(ours_exact).max():.3f} max |signal|"
    )
    t0 = time.perf_counter()
    ours_fast = simulate_fisp(t1[isp].float(), t2[isp].float(), seq, n_states=args.states)
    ours_fast_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    simulate_fisp(t1[isp].float(), t2[isp].float(), seq)
    ours_auto_s = time.perf_counter() - t0
    fast_diff = np.abs(ours_fast.numpy().astype(np.complex128) - theirs["fast"]).max()
    print(f"float32, {args.n_speed} atoms, {args.states} states each: max |ours - mrpro| = {fast_diff:.2e}")
    print(
        f"  mrpro {float(theirs['fast_s']):.2f} s, ours {ours_fast_s:.2f} s -> ours is "
        f"{float(theirs['fast_s']) / ours_fast_s:.1f}x faster; ours with automatic per-T2 state count "
        f"{ours_auto_s:.2f} s"
    )
    print(
        f"truncation error vs untruncated ({args.n_accuracy} atoms, float64): ours automatic "
        f"{np.abs(ours_auto - ours_exact).max():.2e}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
