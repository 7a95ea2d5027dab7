"""Throughput of the on-the-fly training pairs (``SimulatedPairDataset``).

Protocol size: 230 x 230 matrix, 200 frames (FISP-MRF Jiang 2015, acceleration 5), 920
samples per spiral interleaf, rank 5. Prints the one-off set-up cost (dictionary basis,
signal table, density compensation, Toeplitz kernels), the time per pair split into its
stages (phantom, reference, Toeplitz condition, noise gridding) and pairs per second,
together with a reference measured in the same run: one exact-EPG time series of the same
slice (what the table replaces). Usage::

    python benchmarks/bench_pairs.py [--pairs 20] [--device cpu] [--threads 2]
"""

from __future__ import annotations

import argparse
import builtins
import functools
import os
import time

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=20)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--matrix", type=int, default=230)
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--samples", type=int, default=920, help="samples per readout (spiral interleaf)")
    parser.add_argument("--rank", type=int, default=5)
    parser.add_argument("--table-step", type=float, default=0.01)
    parser.add_argument("--cache-dir", default=None)
    args = parser.parse_args()
    print = functools.partial(builtins.print, flush=True)  # noqa: A001
    torch.set_num_threads(args.threads)

    from mrf_monai.phantoms import load_mni_templates, sample_subject_maps
    from mrf_monai.physics.dictionary import build_dictionary, t1t2_grid
    from mrf_monai.physics.sequence import fisp_mrf_jiang2015
    from mrf_monai.simulation import SimulatedPairDataset
    from mrf_monai.simulation.subjects import simulate_time_series

    dev = torch.device(args.device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    seq = fisp_mrf_jiang2015(1000).truncate(args.frames)
    t0 = time.perf_counter()
    load_mni_templates()
    t_tpl = time.perf_counter() - t0
    t0 = time.perf_counter()
    t1, t2 = t1t2_grid(step=0.05)
    d = build_dictionary(seq, t1, t2, rank=args.rank, device=dev)
    t_dict = time.perf_counter() - t0
    t0 = time.perf_counter()
    ds = SimulatedPairDataset(
        d,
        matrix=args.matrix,
        samples_per_readout=args.samples,
        split="train",
        length=10**6,
        device=dev,
        table_step=args.table_step,
        cache_dir=args.cache_dir,
    )
    sync()
    t_init = time.perf_counter() - t0
    print(
        f"device {dev}, {torch.get_num_threads()} threads; {args.matrix}x{args.matrix}, "
        f"{args.frames} frames, "
        f"{args.samples} samples, rank {args.rank}"
    )
    print(
        f"set-up: templates {t_tpl:.1f} s, basis (coarse dictionary, {t1.numel()} atoms) {t_dict:.1f} s, "
        f"dataset (table {ds.table.n1}x{ds.table.n2} at step {args.table_step}, dcf, kernels) {t_init:.1f} s"
    )

    ds[0]  # warm-up
    stages = {"phantom": 0.0, "reference": 0.0, "toeplitz": 0.0, "noise": 0.0}
    t_all = time.perf_counter()
    for i in range(1, args.pairs + 1):
        seed, z = ds.item_phantom(i)
        a = time.perf_counter()
        maps = sample_subject_maps(seed, z, ds.matrix, ds.split)
        b = time.perf_counter()
        c = ds.reference(maps)
        sync()
        cc = time.perf_counter()
        cond = ds.toeplitz(c)
        sync()
        e = time.perf_counter()
        n = torch.randn(ds.n_coils, ds.n_frames, ds.traj.shape[1], dtype=torch.complex64, device=dev)
        cond = cond + ds.noise_operator.grid(n * ds.noise_sigma(c))
        sync()
        f = time.perf_counter()
        stages["phantom"] += b - a
        stages["reference"] += cc - b
        stages["toeplitz"] += e - cc
        stages["noise"] += f - e
    t_stages = time.perf_counter() - t_all
    t0, c0 = time.perf_counter(), time.process_time()
    for i in range(1, args.pairs + 1):
        ds[i]
    sync()
    t_items, cpu_items = time.perf_counter() - t0, time.process_time() - c0
    per = {k: 1000 * v / args.pairs for k, v in stages.items()}
    print(
        "per pair (ms): "
        + ", ".join(f"{k} {v:.0f}" for k, v in per.items())
        + f"; sum {1000 * t_stages / args.pairs:.0f}"
    )
    print(
        f"pairs per second (__getitem__): {args.pairs / t_items:.2f} wall; "
        f"CPU time per pair {cpu_items / args.pairs:.3f} s (all threads; {os.cpu_count()} cores, "
        f"load average {os.getloadavg()[0]:.1f}: wall times on a shared machine are pessimistic)"
    )

    # reference measured in the same run: exact EPG of the same slice (what the table replaces)
    seed, z = ds.item_phantom(1)
    maps = sample_subject_maps(seed, z, ds.matrix, ds.split)
    t0 = time.perf_counter()
    simulate_time_series(maps["t1_s"], maps["t2_s"], maps["pd"], seq, dev)
    sync()
    t_epg = time.perf_counter() - t0
    print(
        f"reference: exact EPG time series of one slice {t_epg:.2f} s "
        f"(table lookup is {t_epg / max(per['reference'] / 1000, 1e-9):.0f}x faster)"
    )


if __name__ == "__main__":
    main()
