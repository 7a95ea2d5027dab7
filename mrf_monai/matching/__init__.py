"""Dictionary matching: compressed TSMI -> T1, T2 and proton density maps (and B1 with a B1 axis)."""

from .b1 import b1_coverage, nearest_b1_block
from .match import AtomClusters, build_atom_clusters, make_background_mask, match_dictionary, stack_matches
from .projection import DictionaryProjection, DictionaryProjectionFactory

__all__ = [
    "AtomClusters",
    "DictionaryProjection",
    "DictionaryProjectionFactory",
    "b1_coverage",
    "build_atom_clusters",
    "make_background_mask",
    "match_dictionary",
    "nearest_b1_block",
    "stack_matches",
]
