"""Benchmark: coil maps (Walsh vs Inati), noise prewhitening and coil compression on one slice.

A simulated brain slice (230 x 230, the MRF protocol's rank-5 subspace, ``--frames`` spiral
frames x 920 samples) is acquired with 8 and 16 Biot-Savart coils (``simulate_coil_maps``) and
correlated receiver noise (neighbouring channels correlated by ~0.3, variances +-30 %, the
simulator's noise level ``sigma = 4e-4 x mean |k-space centre|``), with a noise scan. For each
coil count it prints

* the cost per slice of the noise covariance + whitening matrix, of prewhitening the slice's
  k-space, of the PCA compression (Gram matrix of all samples + compress) and of the gridding
  of the per-coil subspace images (all channels, and the 8 virtual coils), measured in the
  same run;
* for Walsh and Inati (kernel 7): the time to estimate the maps from the gridded subspace coil
  images ``(C, 5, 230, 230)``, the error of the coil-combined TSMI against the combination with
  the true (whitened, normalised) maps, up to the per-pixel phase that matching ignores
  (``min_phi ||c_est - e^{i phi} c_true|| / ||c_true||`` over the head), and the map accuracy
  ``1 - |<S_est, S_true>|`` (mean over the head);
* the combined TSMI after compression to 8 virtual coils against the uncompressed whitened one
  (same estimator), and the relative noise of the combined TSMI (against the same gridding of
  noise-free k-space, same maps) with and without prewhitening.

Run: ``.venv/bin/python benchmarks/bench_coils.py [--threads 2] [--frames 200] [--coils 8 16]``
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from mrf_monai.acquisition import SubspaceNufftOperator, mrf_spiral_trajectory, pipe_menon_dcf
from mrf_monai.acquisition.coil_compression import coil_compression, compress
from mrf_monai.acquisition.coils import (
    combine_coils,
    estimate_coil_maps_inati,
    estimate_coil_maps_walsh,
    realistic_noise_covariance,
    simulate_coil_maps,
)
from mrf_monai.acquisition.gridding import SubspaceGridder
from mrf_monai.acquisition.prewhitening import (
    NoiseScan,
    estimate_noise_covariance,
    prewhiten,
    whitening_matrix,
)
from mrf_monai.io.dictionary import cached_dictionary
from mrf_monai.phantoms.augment import split_slices
from mrf_monai.phantoms.tissues import sample_subject_maps
from mrf_monai.physics import fisp_mrf_jiang2015, simulate_fisp

MATRIX, N_SAMPLES = 230, 920


class Seconds(float):
    """A wall time that also carries the process CPU time of the same call."""

    cpu: float = 0.0

    def __format__(self, spec: str) -> str:
        return f"{float(self):{spec}} ({self.cpu:{spec}})"


def timed(fn, repeats: int = 1):
    """Best wall time over ``repeats`` calls (with its process CPU time) and the last result."""
    best, cpu, out = float("inf"), 0.0, None
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        wall = time.perf_counter() - t0
        if wall < best:
            best, cpu = wall, time.process_time() - c0
    result = Seconds(best)
    result.cpu = cpu
    return result, out


def phantom_tsmi(basis: torch.Tensor, sequence) -> tuple[torch.Tensor, torch.Tensor]:
    """Compressed TSMI ``(R, 230, 230)`` of a test-split brain slice and its head mask."""
    sl = int(split_slices("test")[len(split_slices("test")) // 2])
    m = sample_subject_maps(0, sl, MATRIX, "test")
    head = torch.from_numpy(m["t1_s"] > 0)
    t1 = torch.from_numpy(m["t1_s"])[head]
    t2 = torch.from_numpy(m["t2_s"])[head]
    f = simulate_fisp(t1, torch.minimum(t2, t1), sequence) * torch.from_numpy(m["pd"])[head][:, None]
    c = torch.zeros(basis.shape[1], MATRIX * MATRIX, dtype=torch.complex64)
    c[:, head.reshape(-1)] = (f @ basis.conj()).T
    return c.reshape(-1, MATRIX, MATRIX), head


def aligned_error(est: torch.Tensor, ref: torch.Tensor, mask: torch.Tensor) -> float:
    """``min_phi ||est - e^{i phi} ref|| / ||ref||`` with one phase per pixel, over ``mask``."""
    e, r = est[:, mask], ref[:, mask]
    inner = (r.conj() * e).sum(0)
    phase = inner / inner.abs().clamp_min(1e-30)
    return float((e - phase * r).norm() / r.norm())


def map_error(est: torch.Tensor, true: torch.Tensor, mask: torch.Tensor) -> float:
    """Mean ``1 - |<S_est, S_true>|`` over ``mask`` (both unit norm per pixel)."""
    return float(1 - (est.conj() * true).sum(0).abs()[mask].mean())


def normalise(maps: torch.Tensor) -> torch.Tensor:
    return maps / torch.linalg.vector_norm(maps, dim=0, keepdim=True).clamp_min(1e-30)


def run(n_coils: int, c_true, head, traj, basis, dcf, repeats: int) -> dict:
    g = torch.Generator().manual_seed(n_coils)
    shape = (MATRIX, MATRIX)
    maps = simulate_coil_maps(n_coils, shape, phase_offset_rad=0.3)
    op = SubspaceNufftOperator(traj, basis, shape, maps, dcf)
    k0 = op.forward(c_true)
    k = k0
    dc = torch.einsum("cxy,rxy,tr->ct", maps, c_true, basis).abs()
    sigma = 4e-4 * float(dc.mean())
    cov = realistic_noise_covariance(n_coils)
    chol = torch.linalg.cholesky(cov).to(torch.complex64)
    white = torch.randn(k.shape, dtype=torch.complex64, generator=g)
    k = k + sigma * (chol @ white.reshape(n_coils, -1)).reshape(k.shape)
    noise_scan = sigma * chol @ torch.randn(n_coils, 2048, dtype=torch.complex64, generator=g)
    out: dict = {"coils": n_coils}
    whitening_matrix(estimate_noise_covariance(noise_scan))  # warm-up (first LAPACK calls)

    out["t_cov"], w = timed(lambda: whitening_matrix(estimate_noise_covariance(noise_scan)), repeats)
    out["t_white"], kw = timed(lambda: prewhiten(k, w), repeats)
    n_virtual = min(8, n_coils)
    out["t_cc"], cc = timed(lambda: coil_compression(kw, n_virtual=n_virtual), repeats)
    out["t_compress"], kc = timed(lambda: compress(kw, cc), repeats)
    out["kept"] = cc.kept_energy
    grid = SubspaceNufftOperator(traj, basis, shape, None, dcf)
    out["t_grid"], imgs = timed(lambda: grid.grid_coils(kw), 1)
    out["t_grid_cc"], imgs_c = timed(lambda: grid.grid_coils(kc), 1)
    imgs_raw = grid.grid_coils(k)  # not whitened
    clean_w, clean_raw = grid.grid_coils(prewhiten(k0, w)), grid.grid_coils(k0)  # noise-free

    def noise_level(noisy: torch.Tensor, clean: torch.Tensor, est: torch.Tensor) -> float:
        """Relative noise of the combined TSMI over the head (maps from the noisy data)."""
        ref = combine_coils(clean, est)[:, head]
        return float((combine_coils(noisy, est)[:, head] - ref).norm() / ref.norm())

    true_w = normalise(prewhiten(maps, w))  # the true maps of the whitened channels
    ref = combine_coils(imgs, true_w)
    for name, fn in (("walsh", estimate_coil_maps_walsh), ("inati", estimate_coil_maps_inati)):
        t, est = timed(lambda fn=fn: fn(imgs), repeats)
        comb = combine_coils(imgs, est)
        out[name] = {
            "t": t,
            "err": aligned_error(comb, ref, head),
            "map": map_error(est, true_w, head),
        }
        comb_c = combine_coils(imgs_c, fn(imgs_c))
        out[name]["cc_vs_full"] = aligned_error(comb_c, comb, head)
        out[name]["noise_white"] = noise_level(imgs, clean_w, est)
        out[name]["noise_raw"] = noise_level(imgs_raw, clean_raw, fn(imgs_raw))
    # true-map combination against the noise- and alias-free TSMI (the floor of both estimators)
    scale = torch.linalg.vector_norm(prewhiten(maps, w), dim=0)
    out["floor"] = aligned_error(ref, scale * c_true, head)
    out["gridder"] = gridder_costs(k, noise_scan, traj, basis, repeats)
    out["head"] = head
    return out


def gridder_costs(k, noise_scan, traj, basis, repeats: int) -> dict:
    """The front end inside ``SubspaceGridder`` (Inati maps): the cost of one slice's
    ``prepare_kspace`` and ``grid`` (front end + gridding + maps + combination) per setting, the
    whitening matrix computed once per raw file (a warm gridder, as for every slice after the first)."""
    scan = NoiseScan(noise_scan)
    settings = {
        "no prewhitening, all coils": dict(prewhiten=False, n_virtual_coils=None),
        "prewhitened, all coils": dict(prewhiten=True, n_virtual_coils=None),
        "prewhitened, 8 virtual": dict(prewhiten=True, n_virtual_coils=8),
        "defaults (auto)": dict(),
    }
    rows = {}
    for name, options in settings.items():
        g = SubspaceGridder(coil_maps="inati", **options)
        g.grid(k, traj, basis, (MATRIX, MATRIX), noise=scan)  # warm: density, operator, W
        t_front, _ = timed(lambda g=g: g.prepare_kspace(k, noise=scan), repeats)
        t_grid, img = timed(lambda g=g: g.grid(k, traj, basis, (MATRIX, MATRIX), noise=scan), repeats)
        rows[name] = {"front": t_front, "grid": t_grid, "img": img, "info": g.last_info}
    cold = SubspaceGridder(prewhiten=True, n_virtual_coils=None)
    rows["whitening matrix (once per file)"] = {"front": timed(lambda: cold._whitening(k.shape[0], scan))[0]}
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--frames", type=int, default=200)
    p.add_argument("--coils", type=int, nargs="+", default=[8, 16])
    p.add_argument("--repeats", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    seq = fisp_mrf_jiang2015(args.frames)
    basis = cached_dictionary(seq).basis
    c_true, head = phantom_tsmi(basis, seq)
    traj_np, _ = mrf_spiral_trajectory(args.frames, MATRIX, N_SAMPLES)
    traj = torch.from_numpy(np.ascontiguousarray(traj_np))
    t0 = time.perf_counter()
    dcf = pipe_menon_dcf(traj, (MATRIX, MATRIX))
    t_dcf = time.perf_counter() - t0
    print(
        f"230 x 230 slice, {args.frames} frames x {N_SAMPLES} samples, rank {basis.shape[1]}, "
        f"threads={args.threads}; wall seconds (process CPU seconds), best of {args.repeats}; "
        f"density compensation once: {t_dcf:.2f} s"
    )
    print(
        "| coils | noise cov + W | prewhiten | PCA (all samples) | compress | grid coils | "
        "grid 8 virtual | kept energy (8) |"
    )
    print("| --- " * 8 + "|")
    rows = [run(c, c_true, head, traj, basis, dcf, args.repeats) for c in args.coils]
    for r in rows:
        print(
            f"| {r['coils']} | {r['t_cov']:.4f} | {r['t_white']:.3f} | {r['t_cc']:.3f} "
            f"| {r['t_compress']:.3f} "
            f"| {r['t_grid']:.2f} | {r['t_grid_cc']:.2f} | {100 * r['kept']:.2f}% |"
        )
    print()
    print(
        "| coils | method | maps (s) | combined TSMI error vs true maps | 1 - overlap with true maps "
        "| 8 virtual vs all (same method) | noise in combined TSMI: whitened | not whitened |"
    )
    print("| --- " * 8 + "|")
    for r in rows:
        for name in ("walsh", "inati"):
            m = r[name]
            print(
                f"| {r['coils']} | {name} | {m['t']:.2f} | {100 * m['err']:.2f}% | {m['map']:.2e} "
                f"| {100 * m['cc_vs_full']:.2f}% | {100 * m['noise_white']:.2f}% "
                f"| {100 * m['noise_raw']:.2f}% |"
            )
    print()
    for r in rows:
        print(
            f"{r['coils']} coils: true-map combination vs the alias- and noise-free TSMI "
            f"(aliasing + noise floor): {100 * r['floor']:.1f}%"
        )
    print()
    print("SubspaceGridder per slice (Inati maps; wall s (CPU s)): front end = prewhitening + compression")
    print(
        "| coils | setting | front end | grid (front end, gridding, maps) | virtual coils | vs prewhitened |"
    )
    print("| --- " * 6 + "|")
    for r in rows:
        g = r["gridder"]
        ref = g["prewhitened, all coils"]["img"]
        for name, row in g.items():
            if "grid" not in row:
                print(f"| {r['coils']} | {name} | {row['front']:.4f} | | | |")
                continue
            cc = row["info"]["CoilCompression"]
            # (without prewhitening the combination weights differ: no comparison)
            whitened = row["info"]["NoisePrewhitening"]["Applied"]
            diff = f"{100 * aligned_error(row['img'], ref, r['head']):.3f}%" if whitened else "n/a"
            print(
                f"| {r['coils']} | {name} | {row['front']:.3f} | {row['grid']:.2f} "
                f"| {cc.get('VirtualCoils', cc['Channels'])} | {diff} |"
            )


if __name__ == "__main__":
    main()
