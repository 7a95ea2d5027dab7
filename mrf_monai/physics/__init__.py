"""MRF physics: sequences, EPG signal simulation, dictionaries and their SVD subspace."""

from .sequence import SUPPORTED_SEQUENCE_TYPES, MRFSequence, fisp_mrf_jiang2015

__all__ = ["MRFSequence", "SUPPORTED_SEQUENCE_TYPES", "fisp_mrf_jiang2015"]
