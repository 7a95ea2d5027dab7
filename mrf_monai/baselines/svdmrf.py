"""SVD-MRF (McGivney et al. 2014): density-compensated gridding into the temporal subspace.

The compressed TSMI of a slice is the calibrated gridding ``A^H D y`` of its k-space with
Pipe-Menon density compensation computed from the slice's own trajectory
(:class:`mrf_monai.acquisition.gridding.SubspaceGridder`); dictionary matching then gives the
maps. It is fast and, with one interleaf per frame, heavily aliased: the baseline that the other
methods improve on, and the learned methods' condition.
"""

from __future__ import annotations

from ..acquisition.gridding import SubspaceGridder

__all__ = ["SVDMRFReconstructor"]


class SVDMRFReconstructor(SubspaceGridder):
    """The SVD-MRF baseline (a :class:`mrf_monai.pipeline.Reconstructor`): subspace gridding,
    nothing more; the pipeline's dictionary matching makes the maps. Arguments as
    :class:`~mrf_monai.acquisition.gridding.SubspaceGridder`."""
