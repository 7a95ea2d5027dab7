"""MONAI transform attaching to each slice the dictionary of its sequence.

The dictionary of a raw file's sequence is either given (a file the user names: it must match
the sequence, else a clear error says what differs) or built once per sequence and cached on
disk (:func:`mrf_monai.io.dictionary.cached_dictionary`). A :class:`DictionaryProvider` keeps the
dictionaries of one run in memory (one per sequence and B1 axis), moved to the matching device,
with the atom clusters of the exact coarse-to-fine search built once per dictionary and kind.

B1+: with ``b1_step`` the provider also builds dictionaries with a B1 axis (``b1_range`` in
steps of ``b1_step``). :class:`AttachDictionaryd` reads each slice's B1 handling
(:class:`~mrf_monai.transforms.b1.LoadB1Mapd`'s ``data["b1_handling"]``): ``"map"`` gets the B1
dictionary with per-B1 clusters (each voxel searches its own B1's atoms), ``"free"`` the B1
dictionary with clusters that mix B1 values (they prune the free search better), ``"ignore"``
(or no handling) the nominal dictionary. A given dictionary is used as it is; with a B1 axis
and ``"ignore"`` it is matched at B1 = 1 (a map of ones).

The built B1 dictionary shares the nominal dictionary's temporal basis by default
(``b1_basis="nominal"``, :func:`b1_dictionary_on_basis`): the subspace, hence the gridded TSMI
and the learned methods' condition (trained with the nominal basis), does not depend on the B1
handling. ``b1_basis="own"`` uses one basis fitted to every B1 block
(:func:`mrf_monai.io.dictionary.cached_dictionary` with ``b1_step``); its subspace differs
(smallest principal cosine 0.43 against the nominal one at 200 frames, 0.6-1.4), which the
learned methods refuse (``docs/scanner-data.md``).
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from monai.transforms import MapTransform

__all__ = [
    "DictionaryProvider",
    "AttachDictionaryd",
    "check_dictionary",
    "b1_dictionary_on_basis",
    "B1_HANDLINGS",
    "B1_BASES",
]

#: B1 handlings a slice may ask for (``None`` counts as ``"ignore"``).
B1_HANDLINGS = ("map", "free", "ignore")
#: Bases of the built B1 dictionaries (module notes).
B1_BASES = ("nominal", "own")


def b1_dictionary_on_basis(dictionary: Any, b1_values: Any, basis: Any = None) -> Any:
    """The (T1, T2) atoms of a dictionary without a B1 axis, at every B1 of ``b1_values``,
    compressed with ``basis`` (default: the dictionary's own).

    Each B1 block is EPG-simulated with the flip angles scaled by its B1
    (:func:`mrf_monai.physics.epg.simulate`), normalised and projected onto the basis, one block
    after the other (peak memory: one block's fingerprints). Atoms are B1-major, as
    :func:`mrf_monai.physics.dictionary.build_dictionary` with ``b1_values`` lays them out, so
    the B1-restricted and free matching work unchanged.

    Returns:
        an ``MRFDictionary`` with ``b1`` and the given basis (``energy``: the fraction of the
        unit-norm B1 atoms' energy the basis keeps).
    """
    from mrf_monai.physics.dictionary import MRFDictionary
    from mrf_monai.physics.epg import simulate

    if getattr(dictionary, "b1", None) is not None:
        raise ValueError("the dictionary already has a B1 axis; give the nominal (B1 = 1) dictionary")
    basis = torch.as_tensor(dictionary.basis if basis is None else basis).to(torch.complex64)
    values = torch.as_tensor(b1_values, dtype=torch.float32).reshape(-1)
    if values.numel() == 0 or bool((values <= 0).any()) or torch.unique(values).numel() != values.numel():
        raise ValueError("b1_values must be distinct positive relative transmit fields, e.g. b1_grid()")
    t1, t2 = dictionary.t1_s.to(torch.float32), dictionary.t2_s.to(torch.float32)
    basis = basis.to(t1.device)
    conj = basis.conj().resolve_conj()
    compressed, norms, kept = [], [], 0.0
    for v in values.tolist():
        f = simulate(t1, t2, dictionary.sequence, torch.full_like(t1, v)).to(torch.complex64)
        n = torch.linalg.vector_norm(f, dim=1)
        f = f / n.clamp_min(torch.finfo(n.dtype).tiny)[:, None]
        c = f @ conj
        kept += float(c.abs().pow(2).sum())
        compressed.append(c)
        norms.append(n)
        del f
    n_pairs = t1.numel()
    return MRFDictionary(
        t1_s=t1.repeat(values.numel()),
        t2_s=t2.repeat(values.numel()),
        b1=values.to(t1.device).repeat_interleave(n_pairs),
        basis=basis,
        compressed=torch.cat(compressed),
        norms=torch.cat(norms),
        fingerprints=None,
        sequence=dictionary.sequence,
        energy=kept / (n_pairs * values.numel()),
    )


def _cached_b1_on_basis(nominal: Any, b1_values: torch.Tensor, cache_dir: Any) -> Any:
    """:func:`b1_dictionary_on_basis` of the nominal dictionary, kept in the dictionary cache
    (keyed on the nominal atoms, their basis and the B1 grid; an unwritable cache falls back to
    memory with a ``DictionaryCacheWarning``, as :func:`~mrf_monai.io.dictionary.cached_dictionary`)."""
    from mrf_monai.io.dictionary import (
        DictionaryCacheWarning,
        default_cache_dir,
        load_dictionary,
        save_dictionary,
    )

    h = hashlib.sha256()
    for t in (nominal.t1_s, nominal.t2_s, nominal.basis, b1_values):
        h.update(torch.as_tensor(t).detach().cpu().contiguous().numpy().tobytes())
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    path = folder / f"dict-{nominal.sequence.key()}-b1-on-basis-{h.hexdigest()[:12]}-r{nominal.rank}.h5"
    if path.is_file():
        try:
            d = load_dictionary(path)
            if d.sequence == nominal.sequence and d.n_atoms == nominal.n_atoms * b1_values.numel():
                return d
        except (ValueError, OSError):
            pass  # damaged: rebuild
    d = b1_dictionary_on_basis(nominal.to("cpu"), b1_values)
    try:
        save_dictionary(d, path)
    except OSError as err:
        warnings.warn(
            f"cannot write the dictionary cache in {folder} ({err.strerror or err}); using the B1 dictionary "
            "from memory: set MRF_MONAI_CACHE (or cache_dir) to a writable folder",
            DictionaryCacheWarning,
            stacklevel=3,
        )
    return d


def check_dictionary(dictionary: Any, sequence: Any, where: str = "the dictionary") -> None:
    """Raise ``ValueError`` unless ``dictionary`` was built for ``sequence`` (says what differs)."""
    dseq = getattr(dictionary, "sequence", None)
    if dseq is not None and dseq == sequence:
        return
    if dseq is None:
        detail = "it records no sequence"
    elif hasattr(sequence, "differences"):
        detail = "; ".join(sequence.differences(dseq)) or "the sequences differ"
    else:
        detail = f"{getattr(dseq, 'n_frames', '?')} frames vs {getattr(sequence, 'n_frames', '?')}"
    raise ValueError(
        f"{where} was built for another sequence than the raw data (raw data vs dictionary: {detail}); "
        "build one for this sequence (`mrf-monai dictionary`) or leave out --dictionary to use the cached one"
    )


class DictionaryProvider:
    """The dictionaries of one run, one per sequence (and B1 axis).

    Args:
        dictionary: an ``MRFDictionary`` to use for every subject (each subject's sequence must
            match it), or ``None``.
        dictionary_path: an HDF5 dictionary file to load instead (ignored when ``dictionary``
            is given).
        cache_dir: folder of the on-disk dictionary cache (``None``: the default cache folder,
            see :mod:`mrf_monai.io.dictionary`).
        device: where the dictionaries are kept (where matching runs).
        coarse_to_fine: build the atom clusters of the exact clustered search (the pipeline's
            default search); ``False``: brute force.
        b1_step: step of the B1 axis of the built dictionaries used for a B1 map or free B1
            (e.g. 0.05, the measured default grid, ``docs/scanner-data.md``); ``None``: no B1
            axis (B1 is then ignored: a B1 map is an error, free B1 falls back to ignoring it).
        b1_range: ``(low, high)`` relative B1 of that axis.
        b1_basis: ``"nominal"`` (default: the B1 dictionary shares the nominal dictionary's
            basis) or ``"own"`` (one basis fitted to all B1 blocks); module notes.
    """

    def __init__(
        self,
        dictionary: Any = None,
        dictionary_path: str | os.PathLike | None = None,
        cache_dir: str | os.PathLike | None = None,
        device: str | torch.device | None = None,
        coarse_to_fine: bool = True,
        b1_step: float | None = None,
        b1_range: Sequence[float] = (0.6, 1.4),
        b1_basis: str = "nominal",
    ) -> None:
        self.device = None if device is None else torch.device(device)
        self.path = None if dictionary_path is None else os.fspath(dictionary_path)
        if dictionary is None and dictionary_path is not None:
            from mrf_monai.io.dictionary import load_dictionary

            dictionary = load_dictionary(dictionary_path)
        self.fixed = None if dictionary is None else self._move(dictionary)
        self.cache_dir = cache_dir
        self.coarse_to_fine = bool(coarse_to_fine)
        if b1_step is not None and not float(b1_step) > 0:
            raise ValueError(
                f"b1_step must be a positive step of relative B1 (e.g. 0.05) or null, got {b1_step}"
            )
        self.b1_step = None if b1_step is None else float(b1_step)
        self.b1_range = (float(b1_range[0]), float(b1_range[1]))
        if b1_basis not in B1_BASES:
            raise ValueError(f"b1_basis must be one of {list(B1_BASES)}, got {b1_basis!r}")
        self.b1_basis = b1_basis
        self._by_sequence: dict[tuple[str, bool], Any] = {}
        self._clusters: dict[tuple[int, bool], Any] = {}

    def _move(self, dictionary: Any) -> Any:
        return dictionary.to(self.device) if self.device is not None else dictionary

    def __call__(self, sequence: Any) -> tuple[Any, Any]:
        """``(dictionary, clusters)`` for ``sequence`` without B1 handling (``clusters`` is ``None``
        for brute force)."""
        dictionary, clusters, _ = self.resolve(sequence, None)
        return dictionary, clusters

    def resolve(self, sequence: Any, b1_handling: str | None) -> tuple[Any, Any, str]:
        """``(dictionary, clusters, handling)`` for ``sequence`` and a slice's B1 handling.

        ``handling`` is what will be done: the asked one, or ``"ignore"`` when free B1 was asked
        but there is no B1 axis (``b1_step`` is ``None`` and the dictionary has none).

        Raises:
            ValueError: a B1 map without a dictionary with a B1 axis (says what to set), an
                unknown handling, or a dictionary of another sequence.
        """
        handling = "ignore" if b1_handling is None else str(b1_handling)
        if handling not in B1_HANDLINGS:
            raise ValueError(f"unknown B1 handling {handling!r}; expected one of {list(B1_HANDLINGS)}")
        if self.fixed is not None:
            check_dictionary(
                self.fixed, sequence, f"the dictionary {self.path}" if self.path else "the dictionary"
            )
            dictionary = self.fixed
            has_b1 = getattr(dictionary, "b1", None) is not None
        else:
            has_b1 = handling != "ignore" and self.b1_step is not None
            key = (sequence.key(), has_b1)
            if key not in self._by_sequence:
                from mrf_monai.io.dictionary import cached_dictionary
                from mrf_monai.physics.dictionary import b1_grid

                if not has_b1:
                    d = cached_dictionary(sequence, cache_dir=self.cache_dir)
                elif self.b1_basis == "own":
                    d = cached_dictionary(
                        sequence, cache_dir=self.cache_dir, b1_step=self.b1_step, b1_range=self.b1_range
                    )
                else:
                    nominal = cached_dictionary(sequence, cache_dir=self.cache_dir)
                    d = _cached_b1_on_basis(nominal, b1_grid(self.b1_range, self.b1_step), self.cache_dir)
                self._by_sequence[key] = self._move(d)
            dictionary = self._by_sequence[key]
        if not has_b1 and handling == "map":
            where = f"the dictionary {self.path}" if self.path else "the dictionary"
            raise ValueError(
                f"a B1 map was given but {where} has no B1 axis; set b1_step (e.g. 0.05) to build one, "
                "give a dictionary with a B1 axis, or ignore the map (B1 policy 'ignore' with use_map false)"
            )
        if not has_b1:
            handling = "ignore"
        clusters = None
        if self.coarse_to_fine:
            by_b1 = has_b1 and handling != "free"  # a map (or B1 = 1) restricts each voxel's block
            ckey = (id(dictionary), by_b1)
            if ckey not in self._clusters:
                from mrf_monai.matching.match import build_atom_clusters

                self._clusters[ckey] = build_atom_clusters(dictionary, by_b1=by_b1)
            clusters = self._clusters[ckey]
        return dictionary, clusters, handling


class AttachDictionaryd(MapTransform):
    """Put the dictionary of ``data[sequence_key]`` (and its atom clusters) into the data.

    With a B1 handling in ``data[b1_handling_key]`` (:class:`~mrf_monai.transforms.b1.LoadB1Mapd`,
    which must come first), the dictionary and clusters fit it (module notes); the handling
    actually used is written back there and into ``data[info_key]["B1"]`` (with the B1 grid), and
    a given dictionary with a B1 axis under ``"ignore"`` gets a B1 map of ones in
    ``data[b1_key]`` (matching at B1 = 1).

    Args:
        provider: a :class:`DictionaryProvider` (shared by all slices of a run).
        sequence_key: the key of the ``MRFSequence`` (``LoadRawSubjectd`` writes ``"sequence"``).
        dictionary_key: where the ``MRFDictionary`` goes.
        clusters_key: where the atom clusters go (``None`` with brute force).
        b1_handling_key, b1_key, info_key, matrix_key: the B1 keys (see above) and the image
            matrix (``data[matrix_key]["matrix"]``, written by ``LoadRawSubjectd``).
    """

    def __init__(
        self,
        provider: DictionaryProvider,
        sequence_key: str = "sequence",
        dictionary_key: str = "dictionary",
        clusters_key: str = "clusters",
        b1_handling_key: str = "b1_handling",
        b1_key: str = "b1_map",
        info_key: str = "acquisition_info",
        matrix_key: str = "meta",
    ) -> None:
        super().__init__([sequence_key])
        self.provider = provider
        self.sequence_key, self.dictionary_key, self.clusters_key = sequence_key, dictionary_key, clusters_key
        self.b1_handling_key, self.b1_key, self.info_key = b1_handling_key, b1_key, info_key
        self.matrix_key = matrix_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        if self.sequence_key not in d:
            raise KeyError(
                f"AttachDictionaryd needs the sequence under {self.sequence_key!r}; load the raw data first"
            )
        asked = d.get(self.b1_handling_key)
        if asked is None:  # no B1 handling in this pipeline: as before
            d[self.dictionary_key], d[self.clusters_key] = self.provider(d[self.sequence_key])
            return d
        dictionary, clusters, handling = self.provider.resolve(d[self.sequence_key], asked)
        d[self.dictionary_key], d[self.clusters_key] = dictionary, clusters
        d[self.b1_handling_key] = handling
        b1_atoms = getattr(dictionary, "b1", None)
        info = dict(d.get(self.info_key) or {})
        record = dict(info.get("B1") or {})
        record["Handling"] = handling
        if handling != asked:
            record["Note"] = (
                f"{asked} B1 asked, but the dictionary has no B1 axis (b1_step is null): B1 ignored"
            )
        if b1_atoms is not None:
            values = torch.unique(torch.as_tensor(b1_atoms).detach().cpu().to(torch.float64))
            record["DictionaryB1Range"] = [round(float(values[0]), 6), round(float(values[-1]), 6)]
            record["DictionaryB1Values"] = int(values.numel())
            if handling == "ignore":  # a given B1 dictionary, matched at B1 = 1
                d[self.b1_key] = torch.ones(_matrix(d, self.matrix_key), dtype=torch.float32)
        info["B1"] = record
        d[self.info_key] = info
        return d


def _matrix(data: Mapping[Hashable, Any], key: str) -> tuple[int, int]:
    meta = data.get(key)
    matrix = meta.get("matrix") if isinstance(meta, Mapping) else None
    if matrix is None and hasattr(data.get("raw"), "matrix"):
        matrix = data["raw"].matrix
    if matrix is None:
        raise KeyError(f"AttachDictionaryd: the image matrix is unknown (no {key!r}['matrix'], no raw data)")
    return int(matrix[0]), int(matrix[1])
