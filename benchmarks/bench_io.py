"""Benchmark: bulk ``read_raw`` (one h5py read) vs reading acquisitions one by one with
``ismrmrd.Dataset.read_acquisition``, on a 1000-frame, 8-coil, 920-sample, 1-slice file.

Run: ``.venv/bin/python benchmarks/bench_io.py [--frames 1000 --coils 8 --samples 920]``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--frames", type=int, default=1000)
    parser.add_argument("--coils", type=int, default=8)
    parser.add_argument("--samples", type=int, default=920)
    args = parser.parse_args()

    import ismrmrd

    from mrf_monai.io.ismrmrd import RawSubject, read_raw, write_raw
    from mrf_monai.physics.sequence import fisp_mrf_jiang2015

    t_, c_, s_ = args.frames, args.coils, args.samples
    rng = np.random.default_rng(0)
    kspace = (rng.standard_normal((1, c_, t_, s_)) + 1j * rng.standard_normal((1, c_, t_, s_))).astype(
        np.complex64
    )
    traj = rng.uniform(-0.5, 0.5, (1, t_, s_, 2)).astype(np.float32)
    seq = fisp_mrf_jiang2015(1000).truncate(t_) if t_ <= 1000 else None
    subject = RawSubject(
        kspace, traj, (np.arange(t_) % 48)[None], seq, (230, 230), (300.0, 300.0, 5.0), [[0.0, 0.0, 0.0]]
    )
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "raw.h5"
        t0 = time.perf_counter()
        write_raw(path, subject)
        t_write = time.perf_counter() - t0
        read_raw(path)  # warm imports and the page cache for both readers
        t0 = time.perf_counter()
        back = read_raw(path)
        t_bulk = time.perf_counter() - t0
        assert np.array_equal(back.kspace, kspace)
        t0 = time.perf_counter()
        with ismrmrd.Dataset(str(path), "dataset", mode="r") as dset:
            acqs = [dset.read_acquisition(i) for i in range(dset.number_of_acquisitions())]
        t_each = time.perf_counter() - t0
        assert np.array_equal(acqs[-1].data, kspace[0, :, -1])
        size_mb = path.stat().st_size / 1e6
    print(f"file: {t_} frames x {c_} coils x {s_} samples, 1 slice, {size_mb:.1f} MB")
    print(f"write_raw                     : {t_write:7.3f} s")
    print(f"read_raw (bulk h5py)          : {t_bulk:7.3f} s")
    print(f"ismrmrd read_acquisition loop : {t_each:7.3f} s")
    print(f"speed-up                      : {t_each / t_bulk:7.1f} x")


if __name__ == "__main__":
    main()
