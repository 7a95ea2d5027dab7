"""Benchmark: the k-space data-consistency step of MRF-IDDPM against the gridding of the same slice.

One 230 x 230 slice (``--frames`` x 920 samples, rank 5; 200 frames is the shipped setting):
the gridding front end (:class:`mrf_monai.acquisition.gridding.SubspaceGridder`) grids it cold
(density compensation and NUFFT plans included) and warm (cached, the per-slice cost of a
series of slices sharing a trajectory) and sets up its ``SliceProblem`` (Toeplitz kernels);
then :class:`mrf_monai.diffusion.consistency.KSpaceDataConsistency` (``--steps`` CG iterations)
is timed per call for batches of ``--batch`` samples. The ratio column divides by the warm
gridding time measured in the same run.

Usage::

    python benchmarks/bench_consistency.py [--frames 200] [--coils 1 8] [--batch 1 8] [--devices cpu cuda]

CPU time (all threads) is printed next to wall time because the machine may be shared.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

MATRIX, N_SAMPLES, RANK = 230, 920, 5


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn, device: torch.device, repeats: int = 1):
    """``(result, median wall s, median cpu s)`` of ``repeats`` calls of ``fn``."""
    walls, cpus, out = [], [], None
    for _ in range(repeats):
        _sync(device)
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        _sync(device)
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    return out, statistics.median(walls), statistics.median(cpus)


def run(n_frames: int, n_coils: int, batches: list[int], n_steps: int, repeats: int, device: torch.device):
    from mrf_monai.acquisition import mrf_spiral_trajectory, simulate_coil_maps
    from mrf_monai.acquisition.gridding import SubspaceGridder
    from mrf_monai.acquisition.operators import SubspaceNufftOperator
    from mrf_monai.diffusion.consistency import KSpaceDataConsistency
    from mrf_monai.transforms.intensity import condition_scale

    g = torch.Generator().manual_seed(0)
    traj, _ = mrf_spiral_trajectory(n_frames, MATRIX, N_SAMPLES)
    basis, _ = torch.linalg.qr(torch.randn(n_frames, RANK, dtype=torch.complex64, generator=g))
    shape = (MATRIX, MATRIX)
    maps = simulate_coil_maps(n_coils, shape) if n_coils > 1 else None
    c = torch.randn(RANK, *shape, dtype=torch.complex64, generator=g)
    kspace = SubspaceNufftOperator(traj, basis, shape, maps).forward(c)
    gridder = SubspaceGridder(device=device)
    rows = []
    _, wall, cpu = _timed(lambda: gridder.grid(kspace, traj, basis, shape), device)
    rows.append(("grid cold (dcf, plans)", 0, wall, cpu))
    _, grid_wall, grid_cpu = _timed(lambda: gridder.grid(kspace, traj, basis, shape), device, repeats)
    rows.append(("grid warm", 0, grid_wall, grid_cpu))
    _, wall, cpu = _timed(lambda: gridder.problem(kspace, traj, basis, shape), device)
    rows.append(("problem cold (kernels)", 0, wall, cpu))
    problem, wall, cpu = _timed(lambda: gridder.problem(kspace, traj, basis, shape), device, repeats)
    rows.append(("problem warm", 0, wall, cpu))
    scale = float(condition_scale(problem.grid.cpu()))
    for batch in batches:
        dc = KSpaceDataConsistency(problem, scale, n_steps=n_steps)
        x0 = torch.randn(batch, 2 * RANK, *shape, generator=g).to(device)
        _, wall, cpu = _timed(lambda dc=dc, x0=x0: dc(x0, 0), device)  # + power iteration (once)
        rows.append(("dc first (+ ||N||)", batch, wall, cpu))
        _, wall, cpu = _timed(lambda dc=dc, x0=x0: dc(x0, 1), device, repeats)
        rows.append((f"dc per call ({n_steps} CG)", batch, wall, cpu))
    return rows, grid_wall


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", type=int, default=200)
    p.add_argument("--coils", type=int, nargs="+", default=[1, 8])
    p.add_argument("--batch", type=int, nargs="+", default=[1, 8], help="samples per data-consistency call")
    p.add_argument("--steps", type=int, default=5, help="CG iterations per call (dc_steps)")
    p.add_argument("--repeats", type=int, default=5, help="timed repeats of the warm cases (median)")
    p.add_argument("--devices", nargs="+", default=["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
    args = p.parse_args()
    print(
        f"slice {MATRIX}x{MATRIX}, {args.frames} frames x {N_SAMPLES} samples, rank {RANK}, "
        f"torch threads {torch.get_num_threads()}"
    )
    print(f"{'device':<8}{'coils':>6}  {'case':<24}{'batch':>6}{'wall s':>9}{'cpu s':>8}{'x grid':>8}")
    for name in args.devices:
        device = torch.device(name)
        for n_coils in args.coils:
            rows, grid_wall = run(args.frames, n_coils, args.batch, args.steps, args.repeats, device)
            for case, batch, wall, cpu in rows:
                b = str(batch) if batch else ""
                print(
                    f"{name:<8}{n_coils:>6}  {case:<24}{b:>6}{wall:>9.3f}{cpu:>8.3f}{wall / grid_wall:>8.2f}"
                )
    print(
        "x grid = wall s / wall s of 'grid warm' (same device and coils); warm = the gridder's caches reused."
    )


if __name__ == "__main__":
    main()
