"""Benchmark: subspace gridding of one MRF slice (230 x 230, 1000 frames x 920 samples).

Compares the one-call NUFFT gridding of :class:`SubspaceNufftOperator` (type-1 with
``n_trans = R * C`` over all ``T * S`` points) with (a) a per-frame loop of NUFFT calls and
(b) torchkbnufft on the same points, for 1 and 8 coils. Every case runs in a fresh
subprocess so its peak resident memory (``ru_maxrss``) is its own; the table shows the
increase over the process's memory after setup (imports, data, operator).

Usage::

    python benchmarks/bench_gridding.py [--frames 1000] [--loop-frames 100] [--coils 1 8]

CPU time is reported next to wall time because the machine may be shared. The per-frame
loop runs ``--loop-frames`` frames, and torchkbnufft with several coils
``--tkb-frames`` frames (memory); both are extrapolated linearly to all frames (noted).
On a GPU machine ``--cases grid_cuda grid_normal_cuda`` times gridding on CUDA (cufinufft or
torchkbnufft) and the Toeplitz ``grid_normal`` applied on the GPU. Numbers from one run are
recorded in the module's report (benchmarks are not part of CI).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

MATRIX, N_SAMPLES, RANK = 230, 920, 5


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _setup(n_frames: int, n_coils: int):
    import numpy as np
    import torch

    from mrf_monai.acquisition import mrf_spiral_trajectory, simulate_coil_maps

    g = torch.Generator().manual_seed(0)
    traj, _ = mrf_spiral_trajectory(n_frames, MATRIX, N_SAMPLES)
    basis, _ = torch.linalg.qr(torch.randn(n_frames, RANK, dtype=torch.complex64, generator=g))
    maps = simulate_coil_maps(n_coils, (MATRIX, MATRIX)) if n_coils > 1 else None
    kspace = torch.randn(n_coils, n_frames, N_SAMPLES, dtype=torch.complex64, generator=g)
    dcf = torch.from_numpy(np.ones((n_frames, N_SAMPLES), np.float32))
    return traj, basis, maps, kspace, dcf


def run_case(case: str, n_frames: int, n_coils: int, loop_frames: int, tkb_frames: int = 250) -> dict:
    import numpy as np
    import torch

    from mrf_monai.acquisition import Nufft2D, SubspaceNufftOperator, pipe_menon_dcf

    traj, basis, maps, kspace, dcf = _setup(n_frames, n_coils)
    shape = (MATRIX, MATRIX)
    result = {"case": case, "coils": n_coils, "frames": n_frames}
    if case == "dcf":
        base = _rss_mb()
        t0, c0 = time.perf_counter(), time.process_time()
        pipe_menon_dcf(traj, shape)
        result["seconds"], result["cpu_seconds"] = time.perf_counter() - t0, time.process_time() - c0
    elif case in ("grid_cuda", "grid_normal_cuda"):
        dev = torch.device("cuda")
        result["device"] = torch.cuda.get_device_name(dev)
        base = _rss_mb()
        if case == "grid_cuda":
            op = SubspaceNufftOperator(
                torch.from_numpy(traj).to(dev),
                basis.to(dev),
                shape,
                None if maps is None else maps.to(dev),
                dcf.to(dev),
            )
            kspace = kspace.to(dev)
            op.grid(kspace)
            torch.cuda.synchronize()
            t0, c0 = time.perf_counter(), time.process_time()
            out = op.grid(kspace)
            torch.cuda.synchronize()
            result["note"] = f"backend {op.nufft.backend}"
        else:
            tn = SubspaceNufftOperator(traj, basis, shape, maps, dcf).toeplitz(True).to(dev)
            c = torch.randn(RANK, *shape, dtype=torch.complex64, device=dev)
            tn(c)
            torch.cuda.synchronize()
            t0, c0 = time.perf_counter(), time.process_time()
            out = tn(c)
            torch.cuda.synchronize()
            result["note"] = "Toeplitz apply, kernels from CPU"
        result["seconds"], result["cpu_seconds"] = time.perf_counter() - t0, time.process_time() - c0
        assert out.shape == (RANK, *shape)
    elif case in ("grid", "grid_normal"):
        op = SubspaceNufftOperator(traj, basis, shape, maps, dcf)
        if case == "grid":
            op.nufft._plan(1, n_coils * RANK, torch.complex64)  # plan once (reused for every slice)
            base = _rss_mb()
            t0, c0 = time.perf_counter(), time.process_time()
            out = op.grid(kspace)
            result["seconds"], result["cpu_seconds"] = time.perf_counter() - t0, time.process_time() - c0
        else:
            base = _rss_mb()
            t0 = time.perf_counter()
            tn = op.toeplitz(True)
            result["kernel_seconds"] = time.perf_counter() - t0
            c = torch.randn(RANK, *shape, dtype=torch.complex64)
            tn(c)
            t0, c0 = time.perf_counter(), time.process_time()
            out = tn(c)
            result["seconds"], result["cpu_seconds"] = time.perf_counter() - t0, time.process_time() - c0
        assert out.shape == (RANK, *shape)
    elif case == "loop":
        base = _rss_mb()
        n_loop = min(loop_frames, n_frames)
        acc = torch.zeros(n_coils, RANK, *shape, dtype=torch.complex64)
        t0, c0 = time.perf_counter(), time.process_time()
        for t in range(n_loop):
            nu = Nufft2D(torch.from_numpy(traj[t]), shape)
            img = nu.adjoint(kspace[:, t] * dcf[t])  # (C, Nx, Ny)
            acc += basis[t].conj()[None, :, None, None] * img[:, None]
        out = acc[0] if maps is None else (maps.conj()[:, None] * acc).sum(0)
        result["seconds"] = (time.perf_counter() - t0) * n_frames / n_loop
        result["cpu_seconds"] = (time.process_time() - c0) * n_frames / n_loop
        result["extrapolated_from"] = n_loop
    elif case == "torchkbnufft":
        import torchkbnufft as tkb

        # torchkbnufft needs ~0.6 GB per 5 transforms of 920k points: limit the frames for many
        # coils and extrapolate linearly (spreading dominates; slightly pessimistic)
        n_sub = n_frames if n_coils == 1 else min(tkb_frames, n_frames)
        traj, basis, kspace, dcf = traj[:n_sub], basis[:n_sub], kspace[:, :n_sub], dcf[:n_sub]
        omega = torch.from_numpy(2 * np.pi * traj.reshape(-1, 2).T.copy())
        adj = tkb.KbNufftAdjoint(im_size=shape, grid_size=(2 * MATRIX, 2 * MATRIX))
        base = _rss_mb()
        t0, c0 = time.perf_counter(), time.process_time()
        z = torch.einsum("tr,cts->crts", basis.conj(), kspace * dcf).reshape(1, n_coils * RANK, -1)
        img = adj(z, omega).reshape(n_coils, RANK, *shape)
        out = img[0] if maps is None else (maps.conj()[:, None] * img).sum(0)
        result["seconds"] = (time.perf_counter() - t0) * n_frames / n_sub
        result["cpu_seconds"] = (time.process_time() - c0) * n_frames / n_sub
        if n_sub < n_frames:
            result["extrapolated_from"] = n_sub
    else:
        raise ValueError(f"unknown case {case!r}")
    result["peak_extra_mb"] = _rss_mb() - base
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", type=int, default=1000)
    p.add_argument("--loop-frames", type=int, default=100)
    p.add_argument("--tkb-frames", type=int, default=250, help="frames for torchkbnufft with several coils")
    p.add_argument("--coils", type=int, nargs="+", default=[1, 8])
    p.add_argument("--cases", nargs="+", default=["grid", "loop", "torchkbnufft", "grid_normal", "dcf"])
    p.add_argument("--case", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.case:
        print(json.dumps(run_case(args.case, args.frames, args.coils[0], args.loop_frames, args.tkb_frames)))
        return
    import torch

    print(
        f"slice {MATRIX}x{MATRIX}, {args.frames} frames x {N_SAMPLES} samples, rank {RANK}, "
        f"torch threads {torch.get_num_threads()}"
    )
    rows = []
    for n_coils in args.coils:
        for case in args.cases:
            if case == "dcf" and n_coils != args.coils[0]:
                continue
            cmd = [
                sys.executable,
                __file__,
                "--case",
                case,
                "--frames",
                str(args.frames),
                "--coils",
                str(n_coils),
                "--loop-frames",
                str(args.loop_frames),
                "--tkb-frames",
                str(args.tkb_frames),
            ]
            out = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if out.returncode != 0:
                print(f"case {case} ({n_coils} coils) failed:\n{out.stderr[-2000:]}", file=sys.stderr)
                continue
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    ref_cpu = {r["coils"]: r["cpu_seconds"] for r in rows if r["case"] == "grid"}
    print(f"{'case':<14}{'coils':>6}{'wall s':>9}{'cpu s':>8}{'x grid':>8}{'peak +MB':>10}  note")
    for r in rows:
        cpu = r.get("cpu_seconds", float("nan"))
        ratio = cpu / ref_cpu[r["coils"]] if r["coils"] in ref_cpu and "device" not in r else float("nan")
        note = ""
        if "extrapolated_from" in r:
            note = f"* extrapolated from {r['extrapolated_from']} frames"
        if "kernel_seconds" in r:
            note = f"apply only; kernels {r['kernel_seconds']:.2f} s"
        if "note" in r:
            note = f"{r['device']}: {r['note']}"
        print(
            f"{r['case']:<14}{r['coils']:>6}{r['seconds']:>9.2f}{cpu:>8.2f}{ratio:>8.1f}"
            f"{r['peak_extra_mb']:>10.0f}  {note}"
        )
    print(
        "cpu s = process CPU time over all threads (wall time depends on the machine's load);"
        " x grid = cpu s / cpu s of 'grid'."
    )


if __name__ == "__main__":
    main()
