"""Small shared set-up for the simulation tests: 40 frames, 48 x 48, rank 5."""

from __future__ import annotations

import pytest

from mrf_monai.physics.dictionary import build_dictionary, t1t2_grid
from mrf_monai.physics.sequence import fisp_mrf_jiang2015

N_FRAMES = 40
MATRIX = 48
N_SAMPLES = 192


@pytest.fixture(scope="session")
def sequence():
    return fisp_mrf_jiang2015(1000).truncate(N_FRAMES)


@pytest.fixture(scope="session")
def dictionary(sequence):
    t1, t2 = t1t2_grid(step=0.1)
    return build_dictionary(sequence, t1, t2, rank=5)


@pytest.fixture(scope="session")
def table_cache(tmp_path_factory):
    """Signal tables are cached here so that each test dataset simulates its table once."""
    return tmp_path_factory.mktemp("tables")


@pytest.fixture(scope="session")
def make_dataset(dictionary, table_cache):
    from mrf_monai.simulation import SimulatedPairDataset

    def make(**kwargs):
        args = dict(
            matrix=MATRIX, samples_per_readout=N_SAMPLES, split="test", length=8, table_step=0.03, noise=0.0
        )
        args.update(kwargs)
        return SimulatedPairDataset(dictionary, cache_dir=table_cache, **args)

    return make


@pytest.fixture(scope="session")
def pair_dataset(make_dataset):
    return make_dataset()
