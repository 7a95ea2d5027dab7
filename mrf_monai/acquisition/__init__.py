"""MRF acquisition model: trajectories, protocol, density compensation, NUFFT, subspace operators,
coils, and the gridding front end."""

from .coils import combine_coils, estimate_coil_maps_walsh, simulate_coil_maps
from .density import pipe_menon_dcf
from .gridding import SubspaceGridder
from .nufft import Nufft2D, available_backends, make_nufft
from .operators import SubspaceNufftOperator, ToeplitzSubspaceNormal, grid_subspace, toeplitz_kernels
from .problem import SliceProblem
from .protocol import Protocol
from .trajectory import (
    GOLDEN_ANGLE_RAD,
    default_n_interleaves_full,
    fully_sampled_spiral,
    golden_angle_radial,
    mrf_spiral_trajectory,
    radial_trajectory,
    spiral_interleaf,
)

__all__ = [
    "GOLDEN_ANGLE_RAD",
    "Nufft2D",
    "Protocol",
    "SliceProblem",
    "SubspaceGridder",
    "SubspaceNufftOperator",
    "ToeplitzSubspaceNormal",
    "available_backends",
    "combine_coils",
    "default_n_interleaves_full",
    "estimate_coil_maps_walsh",
    "fully_sampled_spiral",
    "golden_angle_radial",
    "grid_subspace",
    "make_nufft",
    "mrf_spiral_trajectory",
    "pipe_menon_dcf",
    "radial_trajectory",
    "simulate_coil_maps",
    "spiral_interleaf",
    "toeplitz_kernels",
]
