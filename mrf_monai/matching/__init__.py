"""Dictionary matching: compressed TSMI -> T1, T2 and proton density maps."""

from .match import AtomClusters, build_atom_clusters, make_background_mask, match_dictionary, stack_matches

__all__ = ["AtomClusters", "build_atom_clusters", "make_background_mask", "match_dictionary", "stack_matches"]
