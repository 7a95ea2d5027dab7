# Copyright (c) mrf_monai developers.
# Licensed under the Apache License, Version 2.0.
"""Bloch (dictionary) projection of the diffusion sampler's ``x0`` estimate (a plug-in).

MRF-DiPh (Mayo et al. 2025, "Physics informed guided diffusion for accelerated multi-parametric
MRI reconstruction") constrains every clean-image estimate of the reverse process to the Bloch
response model as well as to the measured k-space. The dictionary's atoms sample that manifold;
the projection of a voxel's compressed fingerprint ``x (R,)`` onto it is its best atom scaled by
the complex inner product::

    P(x) = <d_n, x> d_n = PD * ||f_n|| * v_n,    n = argmax_n |<d_n, x>|,

with ``d_n`` the unit atom inside the subspace and ``PD`` the matched complex proton density
(:func:`~mrf_monai.matching.match.match_dictionary`, whose exact clustered search finds ``n``). A
voxel that is already ``PD * atom`` is returned unchanged; the projection never increases a
voxel's norm. The estimate is optionally blended, ``x0 <- (1 - w) x0 + w P(x0)``, and projected
only on the last ``n_last_steps`` steps.

Only voxels whose norm reaches ``mask_threshold`` times the largest norm of their sample are
projected (the others, background, stay as they are), as the final matching only maps the
object. With k-space data consistency the sampler applies the consistency step first and the
projection last (:class:`~mrf_monai.diffusion.inferer.DiffusionSamplingInferer`): the estimate
each step continues from, and the final sample (the last DDIM step returns its ``x0``), then
lie on the manifold (``w = 1``); the other order would let the consistency step move them off
it again.

Coordinates: the network works on real channels ``[Re .., Im ..]`` of the compressed TSMI
divided by the slice's scale and multiplied by its per-channel factors ``w_r``, in the network's
training basis; the dictionary's atoms are in the dictionary's basis, ``c_dict = Q c_net``
(``Q`` from :class:`~mrf_monai.transforms.SubspaceBasisd`, ``None`` when the bases coincide). The
projection runs in the dictionary's coordinates and its correction is mapped back with
``Q^-1``; the slice's scale drops out (the projection is linear along each voxel's ray), the
channel factors do not.
"""

from __future__ import annotations

from typing import Any

import torch
from monai.utils import convert_to_tensor

from mrf_monai.transforms.complex import channels_to_complex, complex_to_channels

from .match import AtomClusters, match_dictionary

__all__ = ["DictionaryProjection", "DictionaryProjectionFactory"]


def _check_settings(weight: float, n_last_steps: int | None, mask_threshold: float) -> None:
    if isinstance(weight, bool) or not isinstance(weight, int | float) or not 0.0 <= float(weight) <= 1.0:
        raise ValueError(f"weight (projection_weight) must be a number in [0, 1], got {weight!r}")
    if n_last_steps is not None and (
        isinstance(n_last_steps, bool) or not isinstance(n_last_steps, int) or n_last_steps < 1
    ):
        raise ValueError(
            f"n_last_steps (projection_steps) must be a whole number >= 1 or null (every step), "
            f"got {n_last_steps!r}"
        )
    if isinstance(mask_threshold, bool) or not 0.0 <= float(mask_threshold) < 1.0:
        raise ValueError(f"mask_threshold must lie in [0, 1), got {mask_threshold!r}")


class DictionaryProjection:
    """``x0_transform`` of the sampler: project ``x0_hat`` onto the dictionary's atoms.

    Args:
        dictionary: the slice's ``MRFDictionary`` (``compressed (N, R)``, ``norms``, optional
            ``b1``); the search runs on its device.
        clusters: the atom clusters of the exact clustered search
            (:class:`~mrf_monai.matching.match.AtomClusters`, e.g. the slice's
            ``data["clusters"]``), ``None``: brute force.
        rotation: ``Q`` ``(R, R)`` taking network coefficients to dictionary coefficients, or
            ``None`` (same basis).
        channel_scale: the network's per-channel factors ``(2R,)``, or ``None`` (all 1).
        b1_map: the slice's relative B1 map ``(Nx, Ny)`` (each voxel searches its B1's atoms,
            as the final matching does), or ``None``.
        weight: blending weight ``w`` in ``[0, 1]``: ``x0 <- (1 - w) x0 + w P(x0)`` (0: identity).
        n_last_steps: project only on the last this many steps (``None``: every step); needs
            ``n_steps``.
        n_steps: the number of reverse steps of the sampler.
        mask_threshold: fraction of each sample's largest voxel norm below which a voxel is left
            as it is.
        chunk_size: voxels per matrix product of the search (:func:`match_dictionary`).

    ``__call__(x0 (B, 2R, Nx, Ny), step_index) -> (B, 2R, Nx, Ny)``: real channels in the
    network's normalised space, on any device; the result has ``x0``'s device and dtype.
    """

    def __init__(
        self,
        dictionary: Any,
        clusters: AtomClusters | None = None,
        rotation: torch.Tensor | None = None,
        channel_scale: torch.Tensor | None = None,
        b1_map: Any = None,
        weight: float = 1.0,
        n_last_steps: int | None = None,
        n_steps: int | None = None,
        mask_threshold: float = 0.15,
        chunk_size: int | None = None,
    ) -> None:
        _check_settings(weight, n_last_steps, mask_threshold)
        if n_last_steps is not None and n_steps is None:
            raise ValueError("n_last_steps needs the sampler's number of steps (n_steps=...)")
        compressed = torch.as_tensor(dictionary.compressed)
        if compressed.ndim != 2:
            raise ValueError(f"dictionary.compressed must be (N, R); got shape {tuple(compressed.shape)}")
        rank = int(compressed.shape[1])
        w = torch.ones(2 * rank) if channel_scale is None else torch.as_tensor(channel_scale).float()
        if tuple(w.shape) != (2 * rank,):
            raise ValueError(
                f"channel_scale must be (2R,) = ({2 * rank},) for the dictionary's rank {rank}, "
                f"got {tuple(w.shape)}"
            )
        self.dictionary, self.clusters = dictionary, clusters
        self.rank = rank
        self.channel_scale = w
        self.weight = float(weight)
        self.n_last_steps = None if n_last_steps is None else int(n_last_steps)
        self.n_steps = None if n_steps is None else int(n_steps)
        self.mask_threshold = float(mask_threshold)
        self.chunk_size = chunk_size
        if rotation is None:
            self.rotation = self.rotation_inverse = None
        else:
            q = torch.as_tensor(rotation).detach().to(torch.complex128)
            if tuple(q.shape) != (rank, rank):
                raise ValueError(f"rotation must be (R, R) = ({rank}, {rank}), got {tuple(q.shape)}")
            self.rotation, self.rotation_inverse = (
                q.to(torch.complex64),
                torch.linalg.inv(q).to(torch.complex64),
            )
        self.b1_map = None if b1_map is None else convert_to_tensor(b1_map, track_meta=False).detach()
        units = compressed.to(torch.complex64)
        self._atoms = units / torch.linalg.vector_norm(units, dim=1, keepdim=True).clamp_min(1e-30)

    def active(self, step_index: int) -> bool:
        """Whether step ``step_index`` (``0..n_steps-1``) projects."""
        if self.weight == 0.0:
            return False
        if self.n_last_steps is None:
            return True
        return int(step_index) >= self.n_steps - self.n_last_steps

    def project(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(P(x) - x, mask)`` of complex coefficients ``x (B, R, Nx, Ny)`` in the dictionary's
        basis: the change of each projected voxel (0 elsewhere) and the voxels projected."""
        b, r = x.shape[:2]
        if r != self.rank:
            raise ValueError(f"x0 has {r} subspace components, the dictionary {self.rank}")
        norm = torch.linalg.vector_norm(x, dim=1)  # (B, Nx, Ny)
        peak = norm.reshape(b, -1).amax(dim=1).reshape(b, 1, 1)
        mask = (norm > self.mask_threshold * peak) & (norm > 0)
        delta = torch.zeros_like(x)
        if not bool(mask.any()):
            return delta, mask
        b1 = None
        if self.b1_map is not None:
            b1 = self.b1_map.to(x.device).expand(b, *x.shape[2:])
        found = match_dictionary(
            x.movedim(1, 0),
            self.dictionary,
            chunk_size=self.chunk_size,
            mask=mask,
            mask_threshold=self.mask_threshold,
            coarse_to_fine=False if self.clusters is None else self.clusters,
            b1_map=b1,
        )
        index = found["index"][mask]
        if self._atoms.device != x.device:
            self._atoms = self._atoms.to(x.device)
        atoms = self._atoms[index.to(x.device)]  # (V, R) unit atoms
        xv = x.movedim(1, -1)[mask]  # (V, R)
        coefficient = (atoms.conj() * xv).sum(dim=1, keepdim=True)
        change = delta.movedim(1, -1)  # a view: writes go into delta
        change[mask] = coefficient * atoms - xv
        return delta, mask

    def __call__(self, x0: torch.Tensor, step_index: int) -> torch.Tensor:
        """The (blended) projection of the estimate ``x0`` ``(B, 2R, Nx, Ny)`` at step ``step_index``."""
        if x0.ndim != 4 or x0.shape[1] != 2 * self.rank:
            raise ValueError(f"x0 must be (B, {2 * self.rank}, Nx, Ny) real channels, got {tuple(x0.shape)}")
        if not self.active(step_index):
            return x0
        with torch.autocast(x0.device.type, enabled=False):
            wc = self.channel_scale.to(x0.device)[:, None, None]
            x = channels_to_complex(x0.float() / wc, dim=1)  # (B, R, Nx, Ny), network basis
            if self.rotation is not None:
                x = torch.einsum("rs,bs...->br...", self.rotation.to(x.device), x)
            delta, _ = self.project(x)
            if self.rotation_inverse is not None:
                delta = torch.einsum("rs,bs...->br...", self.rotation_inverse.to(x.device), delta)
            out = x0.float() + self.weight * complex_to_channels(delta, dim=1) * wc
        return out.to(dtype=x0.dtype)


class DictionaryProjectionFactory:
    """The settings of the Bloch projection, checked once; builds each slice's
    :class:`DictionaryProjection` (the sampler's ``projection`` factory).

    ``factory(dictionary, clusters=None, rotation=None, channel_scale=None, b1_map=None,
    n_steps=None) -> DictionaryProjection | None``: ``None`` with ``weight`` 0 (nothing to do,
    and the sampler then runs exactly as without a projection: a transform that returns ``x0``
    unchanged still makes it recompute ``eps`` from ``x0``, which differs in the last bits).

    Args:
        weight, n_last_steps, mask_threshold, chunk_size: see :class:`DictionaryProjection`
            (the bundle keys ``projection_weight``, ``projection_steps``, ``mask_threshold``).
    """

    def __init__(
        self,
        weight: float = 1.0,
        n_last_steps: int | None = None,
        mask_threshold: float = 0.15,
        chunk_size: int | None = None,
    ) -> None:
        _check_settings(weight, n_last_steps, mask_threshold)
        self.weight = float(weight)
        self.n_last_steps = n_last_steps
        self.mask_threshold = float(mask_threshold)
        self.chunk_size = chunk_size

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(weight={self.weight}, n_last_steps={self.n_last_steps}, "
            f"mask_threshold={self.mask_threshold})"
        )

    def __call__(
        self,
        dictionary: Any,
        clusters: AtomClusters | None = None,
        rotation: torch.Tensor | None = None,
        channel_scale: torch.Tensor | None = None,
        b1_map: Any = None,
        n_steps: int | None = None,
    ) -> DictionaryProjection | None:
        """The projection of one slice (its dictionary, clusters, basis rotation and B1 map)."""
        if self.weight == 0.0:
            return None
        return DictionaryProjection(
            dictionary,
            clusters=clusters,
            rotation=rotation,
            channel_scale=channel_scale,
            b1_map=b1_map,
            weight=self.weight,
            n_last_steps=self.n_last_steps,
            n_steps=n_steps,
            mask_threshold=self.mask_threshold,
            chunk_size=self.chunk_size,
        )
