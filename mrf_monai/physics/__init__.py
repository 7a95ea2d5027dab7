"""MRF physics: sequences, EPG signal simulation, dictionaries and their SVD subspace."""

from .dictionary import MRFDictionary, b1_grid, build_dictionary, t1t2_grid, temporal_basis
from .epg import default_n_states, simulate, simulate_fisp
from .sequence import SUPPORTED_SEQUENCE_TYPES, MRFSequence, fisp_mrf_jiang2015

__all__ = [
    "MRFSequence",
    "SUPPORTED_SEQUENCE_TYPES",
    "fisp_mrf_jiang2015",
    "simulate",
    "simulate_fisp",
    "default_n_states",
    "MRFDictionary",
    "b1_grid",
    "build_dictionary",
    "t1t2_grid",
    "temporal_basis",
]
