"""A small FISP dictionary for the matching tests (real EPG physics, 200 frames)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mrf_monai.physics import fisp_mrf_jiang2015
from mrf_monai.physics.dictionary import build_dictionary


def small_dictionary(rank: int = 5, n_t1: int = 24, n_t2: int = 24, n_frames: int = 200):
    """Dictionary on a log T1/T2 grid (T2 < T1) of the first ``n_frames`` of the preset."""
    t1, t2 = np.meshgrid(np.geomspace(0.1, 4.0, n_t1), np.geomspace(0.01, 2.0, n_t2), indexing="ij")
    keep = t2 < t1
    return build_dictionary(
        fisp_mrf_jiang2015(n_frames),
        t1_s=torch.tensor(t1[keep], dtype=torch.float32),
        t2_s=torch.tensor(t2[keep], dtype=torch.float32),
        rank=rank,
    )


@pytest.fixture(scope="session")
def dictionary():
    return small_dictionary()


@pytest.fixture(scope="session")
def make_dictionary():
    """Factory ``make_dictionary(rank=5, n_t1=24, n_t2=24, n_frames=200)``."""
    return small_dictionary
