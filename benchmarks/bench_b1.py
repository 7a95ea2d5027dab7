"""Benchmark: B1+ in the dictionary: grid step against T1/T2 accuracy, size and matching time.

A test-split brain slice (230 x 230, the phantom's continuous T1, T2 and complex PD) under a
smooth centre-bright transmit field (``B1 = 1 + a (1 - 2 r^2)``, ``r`` the radius relative to
the brain's extent, clamped at 1 outside it, ``a = --amplitude = 0.15``: 1.15 in the centre,
0.85 at the edge of the brain) is simulated exactly by EPG at each voxel's own B1
(``--frames`` frames of the FISP protocol), compressed with each dictionary's basis, and given
Gaussian noise in the subspace (``--noise`` x the mean magnitude of component 0 in the brain).
Each dictionary is the default T1/T2 grid (3 % steps, 24,122 pairs) times a B1 axis over
``--b1-range`` with the steps ``--b1-steps``; it is matched with the default search (exact
clustered search with background skip; per-B1 clusters with a map, clusters mixing B1 values
without one; the clustering column is that of the row's clusters)

* ignoring B1 (the nominal dictionary, B1 = 1), the case to beat;
* with the true B1 map (each voxel restricted to the grid B1 nearest to its own);
* with a B1 map that has errors (Gaussian, ``--map-error`` standard deviation);
* with B1 free (every atom searched; the matched B1 is returned and its error reported).

Printed per case: atoms, build and clustering seconds, matching seconds per slice (best of
``--repeats``), T1 and T2
MAPE and the median signed T2 error inside the brain mask, and the B1 MAE of free matching.

Run: ``.venv/bin/python benchmarks/bench_b1.py [--threads 2] [--frames 200] [--b1-steps 0.1 0.05 0.025]``
"""

from __future__ import annotations

import argparse
import time
from functools import partial

import torch

from mrf_monai.matching import build_atom_clusters, match_dictionary
from mrf_monai.phantoms.augment import split_slices
from mrf_monai.phantoms.tissues import sample_subject_maps
from mrf_monai.physics import fisp_mrf_jiang2015, simulate_fisp
from mrf_monai.physics.dictionary import b1_grid, build_dictionary, t1t2_grid

MATRIX = 230


def timed(fn, repeats: int = 1):
    """Best wall time over ``repeats`` calls, its process CPU time, and the result."""
    best, cpu, out = float("inf"), 0.0, None
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        wall = time.perf_counter() - t0
        if wall < best:
            best, cpu = wall, time.process_time() - c0
    return best, cpu, out


def phantom(amplitude: float):
    """Brain slice maps, the head mask, the brain mask and the B1 field."""
    sl = int(split_slices("test")[len(split_slices("test")) // 2])
    m = sample_subject_maps(0, sl, MATRIX, "test")
    head = torch.from_numpy(m["t1_s"] > 0)
    brain = torch.from_numpy(m["mask"])
    i, j = torch.nonzero(brain, as_tuple=True)  # the field spans +-amplitude over the brain
    ci, cj = i.float().mean(), j.float().mean()
    ri, rj = (i.float() - ci).abs().max(), (j.float() - cj).abs().max()
    ii, jj = torch.meshgrid(torch.arange(MATRIX).float(), torch.arange(MATRIX).float(), indexing="ij")
    r2 = ((ii - ci) / ri) ** 2 + ((jj - cj) / rj) ** 2
    b1 = (1.0 + amplitude * (1.0 - 2.0 * r2.clamp(max=1.0))) * head
    return {
        "t1": torch.from_numpy(m["t1_s"]),
        "t2": torch.from_numpy(m["t2_s"]),
        "pd": torch.from_numpy(m["pd"]),
        "head": head,
        "brain": brain,
        "b1": b1.to(torch.float32),
    }


def signals(ph: dict, sequence) -> torch.Tensor:
    """Exact EPG fingerprints ``(V_head, T)`` of the head voxels at their own B1, times PD."""
    h = ph["head"]
    t1, t2 = ph["t1"][h], ph["t2"][h]
    return simulate_fisp(t1, torch.minimum(t2, t1), sequence, b1=ph["b1"][h]) * ph["pd"][h][:, None]


def tsmi(f: torch.Tensor, ph: dict, basis: torch.Tensor, noise: float, seed: int = 0) -> torch.Tensor:
    """Compressed TSMI ``(R, 230, 230)`` with Gaussian noise in the subspace."""
    c = torch.zeros(basis.shape[1], MATRIX * MATRIX, dtype=torch.complex64)
    c[:, ph["head"].reshape(-1)] = (f @ basis.conj()).T
    c = c.reshape(-1, MATRIX, MATRIX)
    sigma = noise * float(c[0][ph["brain"]].abs().mean())
    g = torch.Generator().manual_seed(seed)
    return c + sigma * torch.randn(c.shape, dtype=c.dtype, generator=g)


def scores(out: dict, ph: dict) -> dict:
    m = ph["brain"] & out["mask"]
    e1 = (out["t1_s"][m] - ph["t1"][m]) / ph["t1"][m]
    e2 = (out["t2_s"][m] - ph["t2"][m]) / ph["t2"][m]
    res = {
        "t1_mape": 100 * float(e1.abs().mean()),
        "t2_mape": 100 * float(e2.abs().mean()),
        "t2_bias": 100 * float(e2.median()),
        "coverage": float(m.sum()) / float(ph["brain"].sum()),
    }
    if "b1" in out:
        res["b1_mae"] = float((out["b1"][m] - ph["b1"][m]).abs().mean())
    return res


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--frames", type=int, default=200)
    p.add_argument("--b1-steps", type=float, nargs="+", default=[0.1, 0.05, 0.025])
    p.add_argument("--b1-range", type=float, nargs=2, default=[0.7, 1.3])
    p.add_argument("--amplitude", type=float, default=0.15)
    p.add_argument("--noise", type=float, default=0.01)
    p.add_argument("--map-error", type=float, default=0.03)
    p.add_argument("--t1t2-step", type=float, default=0.03)
    p.add_argument("--repeats", type=int, default=2, help="matching runs per case (best time)")
    p.add_argument("--per-b1-free", action="store_true", help="also time free B1 with per-B1 clusters")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    seq = fisp_mrf_jiang2015(args.frames)
    ph = phantom(args.amplitude)
    wall, _, f = timed(lambda: signals(ph, seq))
    t1, t2 = t1t2_grid(step=args.t1t2_step)
    brain_b1 = ph["b1"][ph["brain"]]
    print(
        f"230 x 230 brain slice, {args.frames} frames, "
        f"B1 {float(brain_b1.min()):.2f}..{float(brain_b1.max()):.2f} in the brain, noise {args.noise} "
        f"x mean |c0|; T1/T2 grid {t1.numel()} pairs (step {args.t1t2_step}); threads={args.threads}; "
        f"wall s (process CPU s); voxel EPG {wall:.1f} s"
    )
    print(
        "| dictionary | atoms | build | clustering | B1 handling | matching | T1 MAPE | T2 MAPE "
        "| T2 median error | B1 MAE |"
    )
    print("| --- " * 10 + "|")
    g = torch.Generator().manual_seed(1)
    noisy_map = ph["b1"] + args.map_error * torch.randn(ph["b1"].shape, generator=g) * ph["head"]

    def row(name, d, build, cl_time, handling, run):
        w, c, out = timed(run, args.repeats)
        s = scores(out, ph)
        b1 = f"{s['b1_mae']:.3f}" if "b1_mae" in s and handling.startswith("free") else ""
        print(
            f"| {name} | {d.n_atoms} | {build[0]:.1f} ({build[1]:.1f}) | {cl_time:.1f} | {handling} "
            f"| {w:.2f} ({c:.2f}) | {s['t1_mape']:.2f}% | {s['t2_mape']:.2f}% | {s['t2_bias']:+.2f}% | {b1} |"
        )

    bw, bc, nominal = timed(lambda: build_dictionary(seq, t1, t2, rank=5))
    cw, _, clusters = timed(lambda: build_atom_clusters(nominal))
    x = tsmi(f, ph, nominal.basis, args.noise)
    row(
        "nominal (B1 = 1)",
        nominal,
        (bw, bc),
        cw,
        "ignored",
        partial(match_dictionary, x, nominal, coarse_to_fine=clusters),
    )
    for step in args.b1_steps:
        values = b1_grid(tuple(args.b1_range), step)
        bw, bc, d = timed(partial(build_dictionary, seq, t1, t2, rank=5, b1_values=values))
        cw, _, per_b1 = timed(partial(build_atom_clusters, d, by_b1=True))
        x = tsmi(f, ph, d.basis, args.noise)
        name = f"B1 step {step} ({values.numel()} values)"
        match = partial(match_dictionary, x, d, coarse_to_fine=per_b1)
        row(name, d, (bw, bc), cw, "true map", partial(match, b1_map=ph["b1"]))
        row(name, d, (bw, bc), cw, f"map +-{args.map_error}", partial(match, b1_map=noisy_map))
        cw, _, joint = timed(partial(build_atom_clusters, d))
        row(name, d, (bw, bc), cw, "free", partial(match_dictionary, x, d, coarse_to_fine=joint))
        if args.per_b1_free:
            row(name, d, (bw, bc), 0.0, "free, per-B1 clusters", match)
        del d, per_b1, joint


if __name__ == "__main__":
    main()
