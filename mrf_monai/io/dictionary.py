"""Dictionary files (HDF5, data contract section 4) and an on-disk dictionary cache.

Layout: datasets ``t1``, ``t2`` (N,) float32 seconds, optional ``b1`` (N,) float32 (relative
transmit field of each atom: a dictionary with a B1 axis), ``basis`` (T, R) complex64,
``compressed`` (N, R) complex64, ``norms`` (N,) float32, optional ``fingerprints`` (N, T)
complex64; attributes ``sequence`` (JSON), ``energy`` and ``software`` (``"mrf_monai <version>"``).

Dictionary cache
----------------
:func:`cached_dictionary` builds the dictionary of a sequence once and keeps it as an HDF5
file in the cache folder: ``$MRF_MONAI_CACHE`` when that environment variable is set, else
``~/.cache/mrf_monai`` (:func:`default_cache_dir`); the ``cache_dir`` argument overrides both. File names are
``dict-<sequence key>-<grid key>-r<rank>.h5``, keyed by the sequence's physics, the T1/T2 grid,
the B1 grid and the rank, so any file may be deleted at any time (it is rebuilt on next use).
When the cache cannot be written (a full disk, a read-only or missing folder: any ``OSError``),
the dictionary built in memory is used, no partial file is left behind, and a
:class:`DictionaryCacheWarning` names the folder, the reason and how to choose another folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import h5py
import numpy as np
import torch

from .. import __version__
from ..physics.dictionary import MRFDictionary, b1_grid, build_dictionary, t1t2_grid
from ..physics.sequence import MRFSequence
from .atomic import atomic_write_path

__all__ = [
    "DictionaryCacheWarning",
    "save_dictionary",
    "load_dictionary",
    "cached_dictionary",
    "default_cache_dir",
]


class DictionaryCacheWarning(UserWarning):
    """The dictionary cache could not be written; the dictionary is used from memory."""


#: Bump when the simulation or the basis convention changes, so that old caches are rebuilt.
_CACHE_FORMAT = 1


def _np(x: torch.Tensor, dtype: np.dtype) -> np.ndarray:
    return x.detach().cpu().numpy().astype(dtype, copy=False)


def save_dictionary(d: MRFDictionary, path: str | os.PathLike) -> Path:
    """Write ``d`` to the HDF5 dictionary file ``path`` atomically; returns the path."""
    path = Path(path)
    with atomic_write_path(path) as tmp, h5py.File(tmp, "w") as f:
        f.create_dataset("t1", data=_np(d.t1_s, np.float32))
        f.create_dataset("t2", data=_np(d.t2_s, np.float32))
        if d.b1 is not None:
            f.create_dataset("b1", data=_np(d.b1, np.float32))
        f.create_dataset("basis", data=_np(d.basis, np.complex64))
        f.create_dataset("compressed", data=_np(d.compressed, np.complex64))
        f.create_dataset("norms", data=_np(d.norms, np.float32))
        if d.fingerprints is not None:
            f.create_dataset("fingerprints", data=_np(d.fingerprints, np.complex64))
        f.attrs["sequence"] = d.sequence.to_json()
        f.attrs["energy"] = float(d.energy)
        f.attrs["software"] = f"mrf_monai {__version__}"
    return path


def _read(f: h5py.File, name: str, ndim: int, path: Path, optional: bool = False) -> np.ndarray | None:
    if name not in f:
        if optional:
            return None
        raise ValueError(f"dictionary file {path} has no dataset {name!r}; it is not a valid dictionary file")
    data = f[name][()]
    if data.ndim != ndim:
        raise ValueError(
            f"dictionary file {path}: dataset {name!r} has {data.ndim} dimensions, expected {ndim}"
        )
    return data


def load_dictionary(path: str | os.PathLike) -> MRFDictionary:
    """Read a dictionary file written by :func:`save_dictionary` (or another tool).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file is not HDF5, lacks a dataset or attribute, or shapes disagree
            (the message names the file and the problem).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"dictionary file {path} does not exist")
    try:
        f = h5py.File(path, "r")
    except OSError as err:
        raise ValueError(f"dictionary file {path} cannot be opened as HDF5: {err}") from err
    with f:
        t1 = _read(f, "t1", 1, path)
        t2 = _read(f, "t2", 1, path)
        b1 = _read(f, "b1", 1, path, optional=True)
        basis = _read(f, "basis", 2, path)
        compressed = _read(f, "compressed", 2, path)
        norms = _read(f, "norms", 1, path)
        fingerprints = _read(f, "fingerprints", 2, path, optional=True)
        for attr in ("sequence", "energy"):
            if attr not in f.attrs:
                raise ValueError(f"dictionary file {path} has no attribute {attr!r}")
        seq_text = f.attrs["sequence"]
        energy = float(f.attrs["energy"])
    if isinstance(seq_text, bytes):
        seq_text = seq_text.decode()
    try:
        sequence = MRFSequence.from_json(str(seq_text))
    except (ValueError, TypeError, json.JSONDecodeError) as err:
        raise ValueError(
            f"dictionary file {path}: attribute 'sequence' is not a valid sequence: {err}"
        ) from err

    n, (t, r) = t1.shape[0], basis.shape
    problems = []
    if t2.shape != (n,):
        problems.append(f"t2 has {t2.shape[0]} atoms but t1 has {n}")
    if b1 is not None and b1.shape != (n,):
        problems.append(f"b1 has {b1.shape[0]} atoms but t1 has {n}")
    if norms.shape != (n,):
        problems.append(f"norms has {norms.shape[0]} atoms but t1 has {n}")
    if compressed.shape != (n, r):
        problems.append(f"compressed has shape {compressed.shape}, expected ({n}, {r}) from t1 and basis")
    if t != sequence.n_frames:
        problems.append(f"basis has {t} rows but the sequence has {sequence.n_frames} frames")
    if fingerprints is not None and fingerprints.shape != (n, t):
        problems.append(f"fingerprints has shape {fingerprints.shape}, expected ({n}, {t})")
    if problems:
        raise ValueError(f"dictionary file {path} is inconsistent: " + "; ".join(problems))

    def tt(x: np.ndarray | None, dtype: np.dtype) -> torch.Tensor | None:
        return None if x is None else torch.from_numpy(np.ascontiguousarray(x, dtype=dtype))

    return MRFDictionary(
        t1_s=tt(t1, np.float32),
        t2_s=tt(t2, np.float32),
        b1=tt(b1, np.float32),
        basis=tt(basis, np.complex64),
        compressed=tt(compressed, np.complex64),
        norms=tt(norms, np.float32),
        fingerprints=tt(fingerprints, np.complex64),
        sequence=sequence,
        energy=energy,
    )


def default_cache_dir() -> Path:
    """``$MRF_MONAI_CACHE`` if set, else ``~/.cache/mrf_monai``."""
    env = os.environ.get("MRF_MONAI_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "mrf_monai"


def _b1_axis(
    b1_values: Sequence[float] | torch.Tensor | None,
    b1_range: tuple[float, float] | None,
    b1_step: float | None,
) -> list[float] | None:
    """The B1 grid asked for: explicit ``b1_values``, or :func:`b1_grid` of range and step."""
    if b1_values is not None:
        if b1_step is not None or b1_range is not None:
            raise ValueError("give b1_values, or b1_step (and optionally b1_range), not both")
        values = [float(v) for v in torch.as_tensor(b1_values).reshape(-1).tolist()]
    elif b1_step is not None:
        values = b1_grid(b1_range if b1_range is not None else (0.6, 1.4), float(b1_step)).tolist()
    elif b1_range is not None:
        raise ValueError("b1_range needs b1_step (e.g. b1_step=0.05)")
    else:
        return None
    return [round(v, 6) for v in values]


def cached_dictionary(
    sequence: MRFSequence,
    cache_dir: str | os.PathLike | None = None,
    rank: int = 5,
    b1_values: Sequence[float] | torch.Tensor | None = None,
    b1_step: float | None = None,
    b1_range: tuple[float, float] | None = None,
    **grid_kwargs,
) -> MRFDictionary:
    """The default-grid dictionary of ``sequence``, built once and then read from disk.

    The file name is keyed by ``sequence.key()``, the grid (``grid_kwargs`` of
    :func:`~mrf_monai.physics.dictionary.t1t2_grid`: ``t1_range_s``, ``t2_range_s``,
    ``step``), the B1 grid and the rank. An unreadable cache file is rebuilt; a cache that
    cannot be written falls back to the in-memory dictionary with a
    :class:`DictionaryCacheWarning` (module docs: where the cache lives and how to move it).

    Args:
        sequence: the MRF schedule.
        cache_dir: folder of the cache (None: :func:`default_cache_dir`).
        rank: subspace rank.
        b1_values: a B1 axis (relative transmit fields); None without one (B1 = 1).
        b1_step, b1_range: the B1 axis as :func:`~mrf_monai.physics.dictionary.b1_grid`
            ``(b1_range, b1_step)`` (range default ``(0.6, 1.4)``), instead of ``b1_values``.
        **grid_kwargs: passed to :func:`~mrf_monai.physics.dictionary.t1t2_grid`.
    """
    unknown = set(grid_kwargs) - {"t1_range_s", "t2_range_s", "step"}
    if unknown:
        raise ValueError(f"unknown grid argument(s) {sorted(unknown)}; use t1_range_s, t2_range_s, step")
    grid = {
        "t1_range_s": [float(v) for v in grid_kwargs.get("t1_range_s", (0.05, 5.0))],
        "t2_range_s": [float(v) for v in grid_kwargs.get("t2_range_s", (0.005, 3.0))],
        "step": float(grid_kwargs.get("step", 0.03)),
        "format": _CACHE_FORMAT,
    }
    b1_axis = _b1_axis(b1_values, b1_range, b1_step)
    if b1_axis is not None:  # only then, so that caches without a B1 axis keep their names
        grid["b1_values"] = b1_axis
    grid_key = hashlib.sha256(json.dumps(grid, sort_keys=True).encode()).hexdigest()[:12]
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    path = folder / f"dict-{sequence.key()}-{grid_key}-r{rank}.h5"
    try:
        cached = path.is_file()
    except OSError:
        cached = False
    if cached:
        try:
            d = load_dictionary(path)
            if d.sequence == sequence and d.rank == rank:
                return d
        except (ValueError, OSError):
            pass  # stale or damaged: rebuild below
    t1_s, t2_s = t1t2_grid(tuple(grid["t1_range_s"]), tuple(grid["t2_range_s"]), grid["step"])
    b1 = None if b1_axis is None else torch.tensor(b1_axis, dtype=torch.float32)
    d = build_dictionary(sequence, t1_s, t2_s, rank=rank, b1_values=b1)
    try:
        save_dictionary(d, path)
    except OSError as err:  # a full disk, a read-only folder...: the dictionary is still good
        try:
            path.unlink()  # never a partial file under the final name (the writer is atomic)
        except OSError:
            pass
        reason = err.strerror or str(err) or type(err).__name__
        warnings.warn(
            f"cannot write the dictionary cache in {folder} ({reason}); using the dictionary from memory "
            "(it is rebuilt on every run): set MRF_MONAI_CACHE (or pass cache_dir) to a writable folder",
            DictionaryCacheWarning,
            stacklevel=2,
        )
    return d
