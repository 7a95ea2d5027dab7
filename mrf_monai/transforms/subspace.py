"""Temporal subspace compression and expansion (``docs/interfaces.md``).

``basis`` is ``(T, R)`` complex with orthonormal columns. Compression of a time series
``x (T, ...)``: ``c[r] = sum_t conj(basis[t, r]) x[t]``; expansion: ``x[t] = sum_r basis[t, r] c[r]``.
``dim`` is the time (or component) axis. MetaTensor metadata is kept; numpy in, numpy out.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, Transform
from monai.utils import TransformBackends

__all__ = [
    "SubspaceCompress",
    "SubspaceExpand",
    "SubspaceCompressd",
    "SubspaceExpandd",
    "SubspaceBasisd",
    "RotateSubspaced",
    "check_model_subspace",
]


def _as_basis(basis) -> torch.Tensor:
    b = torch.as_tensor(basis)
    if b.ndim != 2:
        raise ValueError(f"the temporal basis must be (T, R), got shape {tuple(b.shape)}")
    if not b.is_complex():
        b = b.to(torch.complex128 if b.dtype == torch.float64 else torch.complex64)
    return b


def _apply(x, matrix: torch.Tensor, dim: int):
    """Contract axis ``dim`` of ``x`` (size matrix.shape[1]) with ``matrix (out, in)``."""
    is_np = isinstance(x, np.ndarray)
    xt = torch.as_tensor(x)
    if not xt.is_complex():
        xt = xt.to(torch.complex128 if xt.dtype == torch.float64 else torch.complex64)
    dtype = torch.promote_types(xt.dtype, matrix.dtype) if xt.dtype != matrix.dtype else xt.dtype
    if xt.dtype == torch.complex64:
        dtype = torch.complex64  # keep single precision data single precision
    m = matrix.to(device=xt.device, dtype=dtype)
    out = torch.tensordot(m, xt.to(dtype).movedim(dim, 0), dims=([1], [0])).movedim(0, dim)
    return out.cpu().numpy() if is_np else out


class SubspaceCompress(Transform):
    """Time series ``(T, ...)`` -> subspace coefficients ``(R, ...)`` with ``basis^H``.

    Args:
        basis: ``(T, R)`` complex, orthonormal columns.
        dim: time axis of the input.
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(self, basis, dim: int = 0) -> None:
        self.basis = _as_basis(basis)
        self.dim = dim

    def __call__(self, img):
        t = img.shape[self.dim]
        if t != self.basis.shape[0]:
            raise ValueError(
                f"the time series has T = {t} frames (axis {self.dim}) but the basis has "
                f"{self.basis.shape[0]} rows; build the basis/dictionary with the same sequence length "
                "(or truncate the sequence)"
            )
        return _apply(img, self.basis.conj().T, self.dim)

    def inverse(self, img):
        return SubspaceExpand(self.basis, self.dim)(img)


class SubspaceExpand(Transform):
    """Subspace coefficients ``(R, ...)`` -> time series ``(T, ...)`` with ``basis``."""

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(self, basis, dim: int = 0) -> None:
        self.basis = _as_basis(basis)
        self.dim = dim

    def __call__(self, img):
        r = img.shape[self.dim]
        if r != self.basis.shape[1]:
            raise ValueError(
                f"the coefficients have R = {r} components (axis {self.dim}) but the basis has "
                f"{self.basis.shape[1]} columns; use the basis the coefficients were compressed with"
            )
        return _apply(img, self.basis, self.dim)

    def inverse(self, img):
        return SubspaceCompress(self.basis, self.dim)(img)


class _Subspaced(MapTransform):
    backend = SubspaceCompress.backend
    _array_cls: type = SubspaceCompress

    def __init__(self, keys: KeysCollection, basis, dim: int = 0, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.transform = self._array_cls(basis, dim)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.transform(d[key])
        return d

    def inverse(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.transform.inverse(d[key])
        return d


class SubspaceCompressd(_Subspaced):
    """Dictionary twin of :class:`SubspaceCompress`."""

    _array_cls = SubspaceCompress


class SubspaceExpandd(_Subspaced):
    """Dictionary twin of :class:`SubspaceExpand`."""

    _array_cls = SubspaceExpand


def check_model_subspace(
    raw: Any,
    dictionary: Any,
    rank: int,
    model_basis: torch.Tensor | None,
    sequence_key: str | None,
    model_name: str,
    tolerance: float = 1e-3,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Check that a trained network, the raw data and the dictionary share one subspace.

    Args:
        raw: the subject's raw data (its ``sequence`` is compared when it has one).
        dictionary: the matching dictionary (``basis (T, R)``).
        rank: the network's number of subspace components.
        model_basis: the ``(T, R)`` training basis stored with the network, or ``None``.
        sequence_key: :meth:`MRFSequence.key` of the training sequence, or ``None``.
        model_name: how errors name the network, e.g. ``"the model runs/x/model.pt"``.
        tolerance: largest ``1 - cos`` of the principal angles between the two subspaces.

    Returns:
        ``(basis, Q)``: the basis to grid the condition with (``(T, R)`` complex64) and the
        ``R x R`` matrix taking network coefficients to dictionary coefficients (``None``
        when the bases are the same).

    Raises:
        ValueError: another sequence, rank, number of frames or subspace (the message says which).
    """
    seq = getattr(raw, "sequence", None)
    if sequence_key is not None and seq is not None and seq.key() != sequence_key:
        raise ValueError(
            f"{model_name} was trained for another MRF sequence (key {sequence_key}) than the raw data "
            f"({seq.key()}, {seq.n_frames} frames); use weights trained for that sequence"
        )
    d_basis = torch.as_tensor(dictionary.basis).detach().cpu()
    if d_basis.shape[1] != rank:
        raise ValueError(
            f"the dictionary has rank {d_basis.shape[1]}, {model_name} was trained with rank {rank}; "
            f"use dictionary.truncate_rank({rank}) or a dictionary of that rank"
        )
    if model_basis is None:
        return d_basis.to(torch.complex64), None
    model_basis = torch.as_tensor(model_basis).detach().cpu()
    if model_basis.shape[0] != d_basis.shape[0]:
        raise ValueError(
            f"the training basis of {model_name} has {model_basis.shape[0]} time frames, the "
            f"dictionary's {d_basis.shape[0]}: they belong to different sequences"
        )
    q = d_basis.to(torch.complex128).conj().T @ model_basis.to(torch.complex128)
    if torch.allclose(q, torch.eye(rank, dtype=q.dtype), atol=1e-6):
        return model_basis.to(torch.complex64), None
    sv = torch.linalg.svdvals(q)
    if float(1.0 - sv.min()) > tolerance:
        raise ValueError(
            f"the dictionary's subspace differs from the training subspace of {model_name} (smallest "
            f"principal cosine {float(sv.min()):.4f}); build the dictionary for the training "
            "sequence and rank"
        )
    return model_basis.to(torch.complex64), q.to(torch.complex64)


class SubspaceBasisd(MapTransform):
    """Choose the temporal basis a slice is gridded with, checking it against a trained network.

    Without a network (``model_basis=None`` and ``rank=None``: SVD-MRF, LRTV) the basis is the
    dictionary's. With one, :func:`check_model_subspace` checks that the network, the raw data and
    the dictionary share one subspace and returns the network's training basis and the rotation
    ``Q`` from network to dictionary coefficients (``None`` when they coincide).

    Args:
        dictionary_key: key of the ``MRFDictionary``
            (:class:`~mrf_monai.transforms.dictionary.AttachDictionaryd`).
        sequence_key: key of the raw data's ``MRFSequence`` (compared with the network's).
        basis_key: where the ``(T, R)`` basis goes.
        rotation_key: where ``Q`` ``(R, R)`` (or ``None``) goes.
        rank: the network's number of subspace components (``None``: no network).
        model_basis: the network's ``(T, R)`` training basis, or ``None``.
        model_sequence_key: the network's training :meth:`MRFSequence.key`, or ``None``.
        model_name: how errors name the network.
        tolerance: see :func:`check_model_subspace`.
    """

    def __init__(
        self,
        dictionary_key: str = "dictionary",
        sequence_key: str = "sequence",
        basis_key: str = "basis",
        rotation_key: str = "rotation",
        rank: int | None = None,
        model_basis: Any = None,
        model_sequence_key: str | None = None,
        model_name: str = "the model",
        tolerance: float = 1e-3,
    ) -> None:
        super().__init__([dictionary_key])
        self.dictionary_key, self.sequence_key = dictionary_key, sequence_key
        self.basis_key, self.rotation_key = basis_key, rotation_key
        self.rank = None if rank is None else int(rank)
        self.model_basis = None if model_basis is None else torch.as_tensor(model_basis)
        self.model_sequence_key = model_sequence_key
        self.model_name = model_name
        self.tolerance = float(tolerance)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        dictionary = d[self.dictionary_key]
        if self.rank is None and self.model_basis is None:
            d[self.basis_key] = torch.as_tensor(dictionary.basis).detach().cpu().to(torch.complex64)
            d[self.rotation_key] = None
            return d
        rank = self.rank if self.rank is not None else int(self.model_basis.shape[1])
        d[self.basis_key], d[self.rotation_key] = check_model_subspace(
            SimpleNamespace(sequence=d.get(self.sequence_key)),
            dictionary,
            rank,
            self.model_basis,
            self.model_sequence_key,
            self.model_name,
            self.tolerance,
        )
        return d


class RotateSubspaced(MapTransform):
    """Express subspace coefficients in another basis: ``c' = Q c`` along axis ``dim``.

    ``Q`` is read from ``data[rotation_key]`` (``None``: unchanged), e.g. the network-to-dictionary
    rotation of :class:`SubspaceBasisd`.
    """

    backend = [TransformBackends.TORCH]

    def __init__(
        self,
        keys: KeysCollection,
        rotation_key: str = "rotation",
        dim: int = -3,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.rotation_key = rotation_key
        self.dim = dim

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        q = d.get(self.rotation_key)
        if q is None:
            return d
        q = torch.as_tensor(q)
        for key in self.key_iterator(d):
            x = torch.as_tensor(d[key])
            d[key] = _apply(x, q.to(x.device), self.dim % x.ndim)
        return d
