"""Dictionary matching of compressed time-series magnetisation images (TSMIs).

Each voxel's compressed fingerprint ``x (R,)`` is compared with the dictionary's compressed
atoms ``v_n = basis^H f_n / ||f_n||``. The atoms are renormalised to unit norm *inside the
subspace*, ``d_n = v_n / ||v_n||``, so that the best atom is the exact maximiser of the
normalised correlation ``|<x, d_n>| = |d_n^H x|`` (Cauchy-Schwarz): for ``x = c * v_m`` the
best atom is ``m``, whatever energy the basis drops. The complex proton density is then

    PD = <x, d_n> / (||f_n|| * ||v_n||),

which returns ``c / ||f_m||`` scaled back to an ``M0 = 1`` fingerprint: a voxel whose time
series is ``rho * f_m`` (compressed: ``rho * ||f_m|| * v_m``) gets ``PD = rho`` exactly.
When the basis keeps all of the energy (``||v_n|| = 1``) this is the textbook
``PD = <x, d> / ||d_raw||``.

The search is a chunked brute force over voxels (bounded memory, one real matrix product
per chunk on the dictionary's device), or optionally an *exact* coarse-to-fine
branch-and-bound over clusters of atoms (:func:`build_atom_clusters`). The Fubini-Study
distance ``arccos |<u, v>|`` is a metric on unit vectors up to phase, so no atom of a
cluster with centre ``c`` and angular radius ``theta`` correlates with a unit ``x_hat``
better than ``cos(max(0, arccos |<x_hat, c>| - theta))``; only clusters whose bound reaches
the best correlation found in the nearest cluster are searched. It returns the brute-force
atom (up to float32 near-ties: atoms whose correlations agree to about 1e-7 are
indistinguishable in single precision, and either search may return either) and does a
few percent of the brute-force work on MRF dictionaries.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy import ndimage

from .b1 import FREE, b1_blocks, nearest_b1_block

__all__ = ["AtomClusters", "build_atom_clusters", "make_background_mask", "match_dictionary", "stack_matches"]

#: Voxel x atom products per chunk when ``chunk_size`` is not given (about 200 MB of
#: float32 correlations and powers for brute force).
_CHUNK_ELEMENTS = 2**24

#: Brightest voxels matched first to bound the largest |PD| before skipping background.
_N_PROBE = 64


def _atoms(dictionary: Any, rank: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit-norm (in the subspace) compressed atoms ``(N, R)`` and PD scales ``(N,)``."""
    compressed = torch.as_tensor(dictionary.compressed)
    if compressed.ndim != 2:
        raise ValueError(f"dictionary.compressed must be (N, R); got shape {tuple(compressed.shape)}")
    if compressed.shape[1] != rank:
        raise ValueError(
            f"the TSMI has {rank} subspace components but the dictionary has rank "
            f"{compressed.shape[1]}; use dictionary.truncate_rank({rank}) or a TSMI compressed with "
            "the same basis"
        )
    compressed = compressed.to(device)
    if not compressed.is_complex():
        compressed = compressed.to(torch.complex64)
    sub_norm = torch.linalg.vector_norm(compressed, dim=1)
    if torch.any(sub_norm <= 0):
        raise ValueError("the dictionary holds atoms that are zero inside the subspace; rebuild it")
    norms = torch.as_tensor(dictionary.norms).to(device=device, dtype=sub_norm.dtype)
    return compressed / sub_norm[:, None], norms * sub_norm


def _real_weights(atoms: torch.Tensor) -> torch.Tensor:
    """Real ``(2R, 2N)`` matrix ``W`` such that ``[Re x, Im x] @ W = [Re d^H x, Im d^H x]``."""
    dr, di = atoms.real.T, atoms.imag.T  # (R, N)
    return torch.cat([torch.cat([dr, -di], dim=1), torch.cat([di, dr], dim=1)], dim=0).contiguous()


def _mm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b``; large CPU products go through NumPy's BLAS, which was measured 2-3 times
    faster than torch's for these skinny ``(V, 2R) @ (2R, 2N)`` products (inner dimension
    2R = 10); small ones (the clustered search) stay in torch, which starts no threads."""
    big = a.shape[0] * b.shape[1] >= 2**22
    if big and a.device.type == "cpu" and not a.requires_grad and not b.requires_grad:
        return torch.from_numpy(np.ascontiguousarray(a.numpy()) @ b.numpy())
    return a @ b


def _best(xr: torch.Tensor, weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Largest ``|<x, d_n>|^2`` and its atom for each row of ``xr (V, 2R)``."""
    n = weights.shape[1] // 2
    y = _mm(xr, weights)
    power = y[:, :n].square()
    power.addcmul_(y[:, n:], y[:, n:])
    return power.max(dim=1)


@dataclass
class AtomClusters:
    """A partition of the dictionary's atoms for the exact coarse-to-fine search.

    Attributes:
        centres: ``(K, R)`` complex128 unit-norm cluster centres.
        angles_rad: ``(K,)`` float64 angular radius of each cluster: the largest
            Fubini-Study distance ``arccos |<c_k, d>|`` from its centre to a member atom.
        members: list of ``K`` index tensors into the dictionary's atoms.
        block: ``(K,)`` int64 B1 block of each cluster (index into the dictionary's sorted B1
            values; -1 for a cluster that mixes B1 values), or None when the clustering ignored
            B1. Matching with a B1 map needs clusters that never mix B1 values.
    """

    centres: torch.Tensor
    angles_rad: torch.Tensor
    members: list[torch.Tensor]
    block: torch.Tensor | None = None

    @property
    def n_clusters(self) -> int:
        return len(self.members)

    def to(self, device: torch.device | str) -> AtomClusters:
        return AtomClusters(
            self.centres.to(device),
            self.angles_rad.to(device),
            [m.to(device) for m in self.members],
            None if self.block is None else self.block.to(device),
        )


def _fs_angle(corr: torch.Tensor) -> torch.Tensor:
    """Fubini-Study distance ``arccos |<u, v>|`` of unit vectors from ``|<u, v>|``."""
    return torch.arccos(corr.clamp(0.0, 1.0))


def _kmeans(atoms: torch.Tensor, k: int, n_iter: int) -> AtomClusters:
    """Deterministic spherical k-means (up to phase) of unit ``atoms (M, R)`` complex128."""
    n_atoms, device = atoms.shape[0], atoms.device
    k = min(max(int(k), 1), n_atoms)
    centres = atoms[torch.linspace(0, n_atoms - 1, k, device=device).round().long()].clone()
    chunk = max(1, _CHUNK_ELEMENTS // max(k, 1))

    def assign(c: torch.Tensor) -> torch.Tensor:  # nearest centre in Fubini-Study distance
        w = _real_weights(c)
        return torch.cat(
            [_best_all(_as_real(atoms[s : s + chunk]), w).argmax(1) for s in range(0, n_atoms, chunk)]
        )

    for _ in range(max(n_iter, 1)):
        label = assign(centres)
        # align each atom's phase to its centre before averaging (the search ignores phase)
        rot = (centres[label].conj() * atoms).sum(1)
        rot = torch.where(rot.abs() > 0, rot / rot.abs().clamp_min(1e-300), torch.ones_like(rot))
        sums = torch.zeros_like(centres).index_add_(0, label, atoms * rot.conj()[:, None])
        keep = torch.linalg.vector_norm(sums, dim=1) > 0
        centres = sums[keep] / torch.linalg.vector_norm(sums[keep], dim=1, keepdim=True)
    label = assign(centres)
    order = torch.argsort(label, stable=True)
    counts = torch.bincount(label, minlength=centres.shape[0]).tolist()
    members, kept = [], []
    for c, m in enumerate(torch.split(order, counts)):
        if m.numel():
            members.append(m)
            kept.append(c)
    centres = centres[kept]
    angles = torch.stack([_fs_angle((atoms[m] @ c.conj()).abs()).max() for m, c in zip(members, centres)])
    return AtomClusters(centres=centres, angles_rad=angles, members=members)


def build_atom_clusters(
    dictionary: Any,
    n_clusters: int | None = None,
    n_iter: int = 10,
    device: str | torch.device | None = None,
    by_b1: bool = False,
) -> AtomClusters:
    """Cluster the unit-norm compressed atoms (deterministic k-means) for the exact search.

    The clusters partition the atoms; their angular radii make the bound of
    :func:`match_dictionary` exact whatever the clustering's quality.

    Args:
        dictionary: an ``MRFDictionary`` (``compressed (N, R)``, ``norms (N,)``, optional ``b1``).
        n_clusters: number of clusters; default ``sqrt(N)`` (balances the cluster and
            member searches), ``sqrt(N_b)`` per B1 block with ``by_b1``; a given number is
            shared evenly among the B1 blocks.
        n_iter: Lloyd iterations. Initial centres are atoms evenly spaced in the
            dictionary's order (its T1/T2 grid), so the result is reproducible.
        device: where the clustering runs; default the dictionary's device.
        by_b1: cluster each B1 value's atoms separately, so that clusters never mix B1 values
            (matching with a B1 map needs them). Without a map (B1 free) clusters that mix
            B1 values prune better: ``benchmarks/bench_b1.py`` measured the free search about 3x
            faster with them.
    """
    compressed = torch.as_tensor(dictionary.compressed)
    device = torch.device(device) if device is not None else compressed.device
    atoms, _ = _atoms(dictionary, compressed.shape[1], device)
    atoms = atoms.to(torch.complex128)
    n_atoms = atoms.shape[0]
    blocks = b1_blocks(dictionary, device)
    if not by_b1 or blocks is None:
        k = int(n_clusters) if n_clusters else max(1, int(round(np.sqrt(n_atoms))))
        clusters = _kmeans(atoms, k, n_iter)
        if blocks is not None:  # record which clusters happen to hold a single B1 value
            b = [blocks[1][m] for m in clusters.members]
            clusters.block = torch.tensor(
                [int(x[0]) if bool((x == x[0]).all()) else -1 for x in b], device=device
            )
        return clusters
    grid, atom_block = blocks
    parts = []
    for j in range(grid.numel()):
        idx = torch.nonzero(atom_block == j).squeeze(1)
        k = int(n_clusters) // grid.numel() if n_clusters else int(round(np.sqrt(idx.numel())))
        part = _kmeans(atoms[idx], max(k, 1), n_iter)
        parts.append((j, idx, part))
    return AtomClusters(
        centres=torch.cat([p.centres for _, _, p in parts]),
        angles_rad=torch.cat([p.angles_rad for _, _, p in parts]),
        members=[idx[m] for _, idx, p in parts for m in p.members],
        block=torch.cat(
            [torch.full((p.n_clusters,), j, dtype=torch.long, device=device) for j, _, p in parts]
        ),
    )


def _as_real(z: torch.Tensor) -> torch.Tensor:
    return torch.cat([z.real, z.imag], dim=-1)


def _cluster_bounds(
    xv: torch.Tensor, clusters: AtomClusters, centre_w: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit rows ``x_hat`` (complex128) and the upper bound ``(V, K)`` of ``|<x_hat, d>|``
    over the atoms ``d`` of each cluster: ``cos(max(0, phi_k - theta_k))``."""
    x64 = xv.to(torch.complex128)
    norm = torch.linalg.vector_norm(x64, dim=1)
    xn64 = x64 / norm.clamp_min(1e-300)[:, None]
    # cos(max(0, phi - theta)) without arccos: c cos(theta) + sqrt(1 - c^2) sin(theta) where
    # c = cos(phi) < cos(theta), else 1 (float64 for accuracy near c = 1)
    c = _best_all(_as_real(xn64), centre_w).sqrt_().clamp_(0.0, 1.0)  # (V, K)
    cos_t, sin_t = torch.cos(clusters.angles_rad)[None, :], torch.sin(clusters.angles_rad)[None, :]
    upper = (1.0 - c.square()).clamp_(min=0.0).sqrt_().mul_(sin_t).addcmul_(c, cos_t)
    upper = torch.where(c >= cos_t, torch.ones((), dtype=upper.dtype, device=upper.device), upper)
    return xn64, upper


def _search_clusters(
    xn64: torch.Tensor, upper: torch.Tensor, clusters: AtomClusters, weights: list[torch.Tensor]
) -> torch.Tensor:
    """Exact branch-and-bound search over clusters; returns the best atom of each row.

    The Fubini-Study distance ``arccos |<u, v>|`` is a metric on unit vectors up to phase,
    so an atom ``d`` of cluster ``k`` satisfies ``|<x_hat, d>| <= cos(max(0, phi_k -
    theta_k))`` with ``phi_k`` the distance of ``x_hat`` to the centre and ``theta_k`` the
    cluster's angular radius. Clusters whose bound is below the best value found in the
    nearest cluster are skipped. ``xn64`` and ``upper`` are :func:`_cluster_bounds` of the rows.
    """
    v = xn64.shape[0]
    first = upper.argmax(dim=1)
    xn = _as_real(xn64).to(weights[0].dtype)
    best_val = torch.full((v,), -1.0, dtype=xn.dtype, device=xn.device)
    best_idx = torch.zeros(v, dtype=torch.long, device=xn.device)

    def visit(k: int, rows: torch.Tensor) -> None:
        val, arg = _best(xn[rows], weights[k])
        idx = clusters.members[k][arg]
        cur_val, cur_idx = best_val[rows], best_idx[rows]
        better = (val > cur_val) | ((val == cur_val) & (idx < cur_idx))
        best_val[rows] = torch.where(better, val, cur_val)
        best_idx[rows] = torch.where(better, idx, cur_idx)

    order = torch.argsort(first)
    counts = torch.bincount(first, minlength=clusters.n_clusters).tolist()
    for k, rows in enumerate(torch.split(order, counts)):
        if rows.numel():
            visit(k, rows)
    # compare with |<x_hat, d>| of the best atom so far (slack for float32 rounding)
    slack = 1e-5 if xn.dtype == torch.float32 else 1e-12
    need = upper >= (best_val.clamp_min(0).sqrt().to(upper.dtype) - slack)[:, None]
    need[torch.arange(v, device=xn.device), first] = False
    need = need.T.contiguous()  # (K, V): one contiguous row per cluster
    for k in torch.nonzero(need.any(dim=1)).squeeze(1).tolist():
        visit(k, torch.nonzero(need[k]).squeeze(1))
    return best_idx


def _best_all(xr: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``|<x, d_n>|^2`` for every row of ``xr (V, 2R)`` and atom (``(V, N)``)."""
    n = weights.shape[1] // 2
    y = _mm(xr, weights)
    power = y[:, :n].square()
    return power.addcmul_(y[:, n:], y[:, n:])


def make_background_mask(pd_abs: torch.Tensor, threshold: float = 0.15) -> torch.Tensor:
    """Object mask ``|PD| > threshold * max |PD|`` with holes filled.

    Holes are filled in each 2D image of the last two axes (``scipy.ndimage
    .binary_fill_holes``); a 1D input (a list of voxels) is only thresholded.
    Returns a bool tensor on the input's device.
    """
    if not 0 <= threshold < 1:
        raise ValueError(f"mask_threshold must lie in [0, 1); got {threshold}")
    peak = pd_abs.max() if pd_abs.numel() else pd_abs.new_zeros(())
    mask = (pd_abs > threshold * peak).cpu().numpy()
    if mask.ndim >= 2:
        flat = mask.reshape(-1, *mask.shape[-2:])
        for i in range(flat.shape[0]):
            flat[i] = ndimage.binary_fill_holes(flat[i])
        mask = flat.reshape(mask.shape)
    return torch.from_numpy(mask).to(pd_abs.device)


def match_dictionary(
    x: torch.Tensor | np.ndarray,
    dictionary: Any,
    chunk_size: int | None = None,
    mask: torch.Tensor | np.ndarray | None = None,
    mask_threshold: float = 0.15,
    coarse_to_fine: bool | AtomClusters = False,
    skip_background: bool = True,
    b1_map: torch.Tensor | np.ndarray | None = None,
) -> dict[str, torch.Tensor]:
    """Match a compressed TSMI against a dictionary.

    Args:
        x: ``(R, ...)`` complex compressed TSMI (torch or numpy), e.g. ``(R, Nx, Ny)``.
        dictionary: an ``MRFDictionary`` with ``compressed (N, R)``, ``norms (N,)``,
            ``t1_s (N,)``, ``t2_s (N,)`` and optionally ``b1 (N,)``. The search runs on the
            device of ``dictionary.compressed`` (move it with ``dictionary.to("cuda")``).
        chunk_size: voxels per matrix product; brute force needs about
            ``chunk_size * N * 12`` bytes, the default keeps that near 200 MB (the
            coarse-to-fine search about ``chunk_size * K * 24`` bytes for K clusters).
        mask: optional bool ``x.shape[1:]`` object mask; only these voxels are matched and
            it is returned as the mask. When ``None`` the mask is
            :func:`make_background_mask` of the matched ``|PD|``.
        mask_threshold: fraction of the largest ``|PD|`` below which a voxel is
            background (0 keeps every voxel with non-zero PD).
        coarse_to_fine: ``True`` (or a prebuilt :class:`AtomClusters`) uses the exact
            cluster branch-and-bound search instead of brute force (``True`` with a
            ``b1_map`` builds per-B1 clusters, ``build_atom_clusters(..., by_b1=True)``).
        skip_background: when the mask comes from the threshold (``mask=None``), first
            match the voxels with the largest possible ``|PD|``, then skip every voxel whose
            ``|PD|`` provably stays below ``mask_threshold`` times the largest one (an upper
            bound from its norm and, with clusters, its angular distance to them). Exact:
            the maps and mask are those of a full search; only ``index`` of skipped voxels
            differs (-1). A head slice is about half background, whose noise vectors are
            the expensive ones for the coarse-to-fine search.
        b1_map: optional ``x.shape[1:]`` relative B1 of each voxel, for a dictionary with a B1
            axis: each voxel is matched only against the atoms at the grid B1 nearest to its own
            (:mod:`mrf_monai.matching.b1`; voxels whose B1 is not a positive finite number are
            matched against every atom). Without a map, B1 is a free parameter: every atom is
            searched and ``b1`` returns the matched value. Both searches are exact (with
            ``coarse_to_fine``, clusters that never mix B1 values restrict the search).

    Returns:
        dict with tensors shaped ``x.shape[1:]`` on the device of ``x``: ``t1_s``, ``t2_s``
        (seconds, float32), ``pd`` (``|PD|``), ``pd_phase`` (radians), ``mask`` (bool),
        ``index`` (int64 best atom of every searched voxel, inside the mask and out; -1 for
        voxels that ``skip_background`` proved to be background), and ``b1`` when the dictionary
        has a B1 axis. Maps are exactly 0 outside the mask; no NaN or Inf anywhere.

    Raises:
        ValueError: when ``x`` holds NaN/Inf, has no component axis, or its rank differs
            from the dictionary's; a ``b1_map`` of the wrong shape or for a dictionary without
            a B1 axis.
    """
    x = torch.as_tensor(x)
    if x.ndim < 1:
        raise ValueError("x must be a compressed TSMI shaped (R, ...) with the subspace axis first")
    out_device = x.device
    if not x.is_complex():
        x = x.to(torch.complex64)
    bad = int((~torch.isfinite(x)).any(dim=0).sum()) if x.numel() else 0
    if bad:
        raise ValueError(
            f"the TSMI holds NaN or Inf values in {bad} voxel(s); fix or mask the reconstruction "
            "before matching (e.g. torch.nan_to_num)"
        )
    rank, spatial = x.shape[0], tuple(x.shape[1:])
    device = torch.as_tensor(dictionary.compressed).device
    atoms, scale = _atoms(dictionary, rank, device)
    real_dtype = atoms.real.dtype
    xv = x.reshape(rank, -1).T.to(device=device, dtype=atoms.dtype)  # (V, R)
    n_vox = xv.shape[0]

    if mask is not None:
        mask_t = torch.as_tensor(mask, device=device).to(torch.bool)
        if tuple(mask_t.shape) != spatial:
            raise ValueError(f"mask shape {tuple(mask_t.shape)} must equal the TSMI's image shape {spatial}")
        rows = torch.nonzero(mask_t.reshape(-1)).squeeze(1)
    else:
        mask_t = None
        rows = torch.arange(n_vox, device=device)

    voxel_block = None  # B1 block of each voxel (-1: every atom), or None: no restriction
    if b1_map is not None:
        blocks = b1_blocks(dictionary, device)
        if blocks is None:
            raise ValueError(
                "a B1 map was given but the dictionary has no B1 axis; build one with b1_values "
                "(physics.dictionary.build_dictionary, or io.dictionary.cached_dictionary(..., b1_step=0.05))"
            )
        b1_t = torch.as_tensor(b1_map)
        if tuple(b1_t.shape) != spatial:
            raise ValueError(f"b1_map shape {tuple(b1_t.shape)} must equal the TSMI's image shape {spatial}")
        grid, atom_block = blocks
        voxel_block = nearest_b1_block(b1_t.to(device), grid)
        block_members = [torch.nonzero(atom_block == j).squeeze(1) for j in range(grid.numel())]

    n_atoms = atoms.shape[0]
    use_clusters = coarse_to_fine is not False and coarse_to_fine is not None
    chunk_auto = chunk_size is None
    if chunk_size is None:
        if use_clusters:  # the (chunk, clusters) bounds are the largest arrays
            n_cl = (
                coarse_to_fine.n_clusters
                if isinstance(coarse_to_fine, AtomClusters)
                else int(np.sqrt(n_atoms))
            )
            chunk_size = max(256, (_CHUNK_ELEMENTS // 2) // max(n_cl, 1))
        else:
            chunk_size = max(256, _CHUNK_ELEMENTS // max(n_atoms, 1))
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive number of voxels; got {chunk_size}")

    if use_clusters:
        if isinstance(coarse_to_fine, AtomClusters):
            clusters = coarse_to_fine
        else:  # per-B1 clusters restrict exactly; clusters mixing B1 prune the free search better
            clusters = build_atom_clusters(dictionary, by_b1=voxel_block is not None)
        if voxel_block is not None and (clusters.block is None or bool((clusters.block < 0).any())):
            raise ValueError(
                "matching with a B1 map needs clusters that never mix B1 values; build them with "
                "build_atom_clusters(dictionary, by_b1=True)"
            )
        clusters = clusters.to(device)
    else:
        clusters = None
    x_norm = torch.linalg.vector_norm(xv, dim=1).to(torch.float64)
    searchers: dict[int, Any] = {}  # per B1 block (FREE: every atom), built on first use

    def searcher(j: int) -> Any:
        """``(members or None, real weights)`` for brute force, or ``(clusters, their weights,
        centre weights, smallest PD scale per cluster)`` for the atoms of block ``j``."""
        if j not in searchers:
            if clusters is None:
                members = None if j == FREE else block_members[j]
                searchers[j] = (members, _real_weights(atoms if members is None else atoms[members]))
            else:
                keep = list(range(clusters.n_clusters)) if j == FREE else torch.nonzero(clusters.block == j)
                keep = torch.as_tensor(keep, dtype=torch.long, device=device).reshape(-1)
                sub = AtomClusters(
                    clusters.centres[keep],
                    clusters.angles_rad[keep],
                    [clusters.members[k] for k in keep.tolist()],
                )
                searchers[j] = (
                    sub,
                    [_real_weights(atoms[m]) for m in sub.members],
                    _real_weights(sub.centres.to(torch.complex128)),
                    torch.stack([scale[m].min() for m in sub.members]).to(torch.float64),
                )
        return searchers[j]

    def search_group(sel: torch.Tensor, j: int, pd_floor: float | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Voxels ``sel`` of B1 block ``j``: the searched ones and their best atoms."""
        if clusters is None:
            members, weights = searcher(j)
            arg = _best(_as_real(xv[sel]).to(real_dtype), weights)[1]
            return sel, arg if members is None else members[arg]
        sub, cl_weights, centre_w, s_min = searcher(j)
        xn64, upper = _cluster_bounds(xv[sel], sub, centre_w)
        if pd_floor is not None:  # tighter: |PD| <= ||x|| max_k bound_k / min_{n in k} scale_n
            live = x_norm[sel] * (upper / s_min[None, :]).amax(dim=1) >= pd_floor
            sel, xn64, upper = sel[live], xn64[live], upper[live]
        return sel, _search_clusters(xn64, upper, sub, cl_weights)

    def search(sel_rows: torch.Tensor, pd_floor: float | None = None) -> None:
        """Best atom of the voxels ``sel_rows`` into ``index`` (marks them ``matched``);
        with ``pd_floor``, voxels whose ``|PD|`` provably stays below it are skipped. With a
        B1 map, the voxels of each B1 block are searched together against its atoms (or its
        clusters) alone."""
        if pd_floor is not None:  # Cauchy-Schwarz: |PD| <= ||x|| / min_n scale_n
            sel_rows = sel_rows[x_norm[sel_rows] >= pd_floor * float(scale.min())]
        if voxel_block is None:
            groups = [(sel_rows, FREE)]
        else:
            vb = voxel_block[sel_rows]
            groups = [(sel_rows[vb == j], j) for j in torch.unique(vb).tolist()]
        for rows, j in groups:
            step = chunk_size
            if voxel_block is not None and chunk_auto:  # sized for the block's own atoms or clusters
                found = searcher(j)
                n_cand = found[1].shape[1] // 2 if clusters is None else found[0].n_clusters
                step = max(256, (_CHUNK_ELEMENTS // (1 if clusters is None else 2)) // max(n_cand, 1))
            for start in range(0, rows.numel(), step):
                sel, arg = search_group(rows[start : start + step], j, pd_floor)
                index[sel] = arg
                matched[sel] = True

    def pd_of(sel_rows: torch.Tensor) -> torch.Tensor:
        idx = index[sel_rows]
        return (atoms[idx].conj() * xv[sel_rows]).sum(dim=1) / scale[idx]

    index = torch.full((n_vox,), -1, dtype=torch.long, device=device)
    matched = torch.zeros(n_vox, dtype=torch.bool, device=device)
    if mask_t is None and skip_background and mask_threshold > 0 and n_vox > _N_PROBE:
        # Exact background skip: the brightest voxels give a lower bound of the largest |PD|;
        # a voxel whose |PD| cannot reach mask_threshold times it is background whatever its
        # best atom, so it is not searched.
        probe = torch.topk(x_norm, _N_PROBE).indices
        search(probe)
        floor = mask_threshold * float(pd_of(probe).abs().max()) * (1.0 - 1e-4)  # float32 slack
        rest = torch.ones(n_vox, dtype=torch.bool, device=device)
        rest[probe] = False
        search(torch.nonzero(rest).squeeze(1), pd_floor=floor)
    else:
        search(rows)

    pd_c = torch.zeros(n_vox, dtype=atoms.dtype, device=device)
    done = torch.nonzero(matched).squeeze(1)
    pd_c[done] = pd_of(done)
    pd_abs = pd_c.abs().to(real_dtype)
    if mask_t is None:
        mask_t = make_background_mask(pd_abs.reshape(spatial), mask_threshold)
        holes = torch.nonzero(mask_t.reshape(-1) & ~matched).squeeze(1)
        if holes.numel():  # filled holes whose voxels the pre-screen skipped
            search(holes)
            pd_c[holes] = pd_of(holes)
            pd_abs = pd_c.abs().to(real_dtype)
    keep = mask_t.reshape(-1) & matched

    def _map(values: torch.Tensor) -> torch.Tensor:
        v = torch.where(keep, values.to(torch.float32), torch.zeros((), dtype=torch.float32, device=device))
        return torch.nan_to_num(v, nan=0.0, posinf=0.0, neginf=0.0).reshape(spatial).to(out_device)

    safe = index.clamp_min(0)
    t1 = torch.as_tensor(dictionary.t1_s).to(device)[safe]
    t2 = torch.as_tensor(dictionary.t2_s).to(device)[safe]
    result = {
        "t1_s": _map(t1),
        "t2_s": _map(t2),
        "pd": _map(pd_abs),
        "pd_phase": _map(torch.angle(pd_c)),
        "mask": keep.reshape(spatial).to(out_device),
        "index": index.reshape(spatial).to(out_device),
    }
    b1 = getattr(dictionary, "b1", None)
    if b1 is not None:
        result["b1"] = _map(torch.as_tensor(b1).to(device)[safe])
    return result


def stack_matches(results: Sequence[dict[str, torch.Tensor]], dim: int = -1) -> dict[str, torch.Tensor]:
    """Stack per-slice :func:`match_dictionary` results along a new axis (default last)."""
    if not results:
        raise ValueError("no matching results to stack")
    return {k: torch.stack([r[k] for r in results], dim=dim) for k in results[0]}
