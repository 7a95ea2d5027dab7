"""MONAI transform attaching to each slice the dictionary of its sequence.

The dictionary of a raw file's sequence is either given (a file the user names: it must match
the sequence, else a clear error says what differs) or built once per sequence and cached on
disk (:func:`mrf_monai.io.dictionary.cached_dictionary`). A :class:`DictionaryProvider` keeps the
dictionaries of one run in memory (one per sequence), moved to the matching device, with the atom
clusters of the exact coarse-to-fine search built once per dictionary.
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Mapping
from typing import Any

import torch
from monai.transforms import MapTransform

__all__ = ["DictionaryProvider", "AttachDictionaryd", "check_dictionary"]


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
    """The dictionaries of one run, one per sequence.

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
    """

    def __init__(
        self,
        dictionary: Any = None,
        dictionary_path: str | os.PathLike | None = None,
        cache_dir: str | os.PathLike | None = None,
        device: str | torch.device | None = None,
        coarse_to_fine: bool = True,
    ) -> None:
        self.device = None if device is None else torch.device(device)
        self.path = None if dictionary_path is None else os.fspath(dictionary_path)
        if dictionary is None and dictionary_path is not None:
            from mrf_monai.io.dictionary import load_dictionary

            dictionary = load_dictionary(dictionary_path)
        self.fixed = None if dictionary is None else self._move(dictionary)
        self.cache_dir = cache_dir
        self.coarse_to_fine = bool(coarse_to_fine)
        self._by_sequence: dict[str, Any] = {}
        self._clusters: dict[int, Any] = {}

    def _move(self, dictionary: Any) -> Any:
        return dictionary.to(self.device) if self.device is not None else dictionary

    def __call__(self, sequence: Any) -> tuple[Any, Any]:
        """``(dictionary, clusters)`` for ``sequence`` (``clusters`` is ``None`` for brute force)."""
        if self.fixed is not None:
            check_dictionary(
                self.fixed, sequence, f"the dictionary {self.path}" if self.path else "the dictionary"
            )
            dictionary = self.fixed
        else:
            key = sequence.key()
            if key not in self._by_sequence:
                from mrf_monai.io.dictionary import cached_dictionary

                self._by_sequence[key] = self._move(cached_dictionary(sequence, cache_dir=self.cache_dir))
            dictionary = self._by_sequence[key]
        clusters = None
        if self.coarse_to_fine:
            if id(dictionary) not in self._clusters:
                from mrf_monai.matching.match import build_atom_clusters

                self._clusters[id(dictionary)] = build_atom_clusters(dictionary)
            clusters = self._clusters[id(dictionary)]
        return dictionary, clusters


class AttachDictionaryd(MapTransform):
    """Put the dictionary of ``data[sequence_key]`` (and its atom clusters) into the data.

    Args:
        provider: a :class:`DictionaryProvider` (shared by all slices of a run).
        sequence_key: the key of the ``MRFSequence`` (``LoadRawSubjectd`` writes ``"sequence"``).
        dictionary_key: where the ``MRFDictionary`` goes.
        clusters_key: where the atom clusters go (``None`` with brute force).
    """

    def __init__(
        self,
        provider: DictionaryProvider,
        sequence_key: str = "sequence",
        dictionary_key: str = "dictionary",
        clusters_key: str = "clusters",
    ) -> None:
        super().__init__([sequence_key])
        self.provider = provider
        self.sequence_key, self.dictionary_key, self.clusters_key = sequence_key, dictionary_key, clusters_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        if self.sequence_key not in d:
            raise KeyError(
                f"AttachDictionaryd needs the sequence under {self.sequence_key!r}; load the raw data first"
            )
        d[self.dictionary_key], d[self.clusters_key] = self.provider(d[self.sequence_key])
        return d
