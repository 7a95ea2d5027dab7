"""Dictionary build speed: default (T1, T2) grid, Jiang-2015 FISP, 1000 and 200 frames.

Prints atoms per second of the EPG simulation and of the whole build (simulation, SVD
basis, compression), wall-clock and process CPU time, on the threads given (default 2).

    python benchmarks/bench_dictionary.py [--threads 2] [--frames 1000 200] [--device cpu]
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from mrf_monai.physics import build_dictionary, fisp_mrf_jiang2015, simulate_fisp, t1t2_grid


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--frames", type=int, nargs="+", default=[1000, 200])
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    t1_s, t2_s = t1t2_grid()
    t1_s, t2_s = t1_s.to(args.device), t2_s.to(args.device)
    n = t1_s.numel()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"default grid: {n} atoms; device {args.device}, {args.threads} threads, load average {load:.1f}")
    for frames in args.frames:
        seq = fisp_mrf_jiang2015(frames)
        c0, w0 = time.process_time(), time.perf_counter()
        simulate_fisp(t1_s, t2_s, seq)
        if args.device != "cpu":
            torch.cuda.synchronize()
        w1, c1 = time.perf_counter(), time.process_time()
        d = build_dictionary(seq, t1_s, t2_s, rank=5, device=args.device)
        w2, c2 = time.perf_counter(), time.process_time()
        epg = f"EPG {w1 - w0:6.1f} s wall ({c1 - c0:6.1f} s CPU), {n / (w1 - w0):7.0f} atoms/s"
        build = f"full build {w2 - w1:6.1f} s wall ({c2 - c1:6.1f} s CPU), {n / (w2 - w1):7.0f} atoms/s"
        print(f"{frames:5d} frames: {epg}; {build}; rank-5 energy {d.energy:.6f}")


if __name__ == "__main__":
    main()
