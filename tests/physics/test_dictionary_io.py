"""Dictionary files (data contract section 4), the dictionary cache and the CLI command."""

import json
import os

import h5py
import numpy as np
import pytest
import torch

from mrf_monai import __version__
from mrf_monai.io.atomic import TEMP_MARKER
from mrf_monai.io.dictionary import cached_dictionary, load_dictionary, save_dictionary
from mrf_monai.physics.dictionary import build_dictionary, t1t2_grid
from mrf_monai.physics.sequence import MRFSequence, fisp_mrf_jiang2015

GRID = dict(t1_range_s=(0.2, 2.0), t2_range_s=(0.02, 0.5), step=0.4)


@pytest.fixture(scope="module")
def dictionary():
    seq = fisp_mrf_jiang2015(30)
    t1, t2 = t1t2_grid(**GRID)
    b1 = torch.linspace(0.8, 1.2, t1.numel())
    return build_dictionary(seq, t1, t2, rank=3, b1=b1, keep_fingerprints=True)


def test_file_layout_follows_the_data_contract(dictionary, tmp_path):
    path = save_dictionary(dictionary, tmp_path / "d.h5")
    assert [p.name for p in tmp_path.iterdir()] == ["d.h5"]  # no temporary left behind
    n, t, r = dictionary.n_atoms, 30, 3
    with h5py.File(path, "r") as f:
        expected = {
            "t1": ((n,), np.float32),
            "t2": ((n,), np.float32),
            "b1": ((n,), np.float32),
            "basis": ((t, r), np.complex64),
            "compressed": ((n, r), np.complex64),
            "norms": ((n,), np.float32),
            "fingerprints": ((n, t), np.complex64),
        }
        for name, (shape, dtype) in expected.items():
            assert f[name].shape == shape and f[name].dtype == dtype, name
        seq = json.loads(f.attrs["sequence"])
        assert seq["sequence_type"] == "FISP" and len(seq["flip_angle_deg"]) == t
        assert seq["tr_ms"] == 10.0 and seq["te_ms"] == pytest.approx(1.908) and seq["ti_ms"] == 18.0
        assert f.attrs["energy"] == pytest.approx(dictionary.energy)
        assert f.attrs["software"] == f"mrf_monai {__version__}"


def test_round_trip(dictionary, tmp_path):
    back = load_dictionary(save_dictionary(dictionary, tmp_path / "d.h5"))
    assert back.sequence == dictionary.sequence and back.energy == pytest.approx(dictionary.energy)
    for name in ("t1_s", "t2_s", "b1", "basis", "compressed", "norms", "fingerprints"):
        torch.testing.assert_close(getattr(back, name), getattr(dictionary, name), msg=name)
    lean = dictionary.truncate_rank(2)
    lean.fingerprints, lean.b1 = None, None
    back = load_dictionary(save_dictionary(lean, tmp_path / "lean.h5"))
    assert back.fingerprints is None and back.b1 is None and back.rank == 2
    with h5py.File(tmp_path / "lean.h5", "r") as f:
        assert "fingerprints" not in f and "b1" not in f


def _corrupt(src, dst, edit):
    import shutil

    shutil.copy(src, dst)
    with h5py.File(dst, "r+") as f:
        edit(f)
    return dst


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda f: f.__delitem__("compressed"), "no dataset 'compressed'"),
        (
            lambda f: f.__delitem__("norms") or f.create_dataset("norms", data=np.ones(3, np.float32)),
            "norms has 3",
        ),
        (
            lambda f: (
                f.__delitem__("basis") or f.create_dataset("basis", data=np.zeros((29, 3), np.complex64))
            ),
            "basis has 29 rows but the sequence has 30",
        ),
        (lambda f: f.attrs.__delitem__("sequence"), "attribute 'sequence'"),
        (lambda f: f.attrs.__setitem__("sequence", "{not json"), "not a valid sequence"),
    ],
)
def test_malformed_files_name_file_and_problem(dictionary, tmp_path, edit, message):
    good = save_dictionary(dictionary, tmp_path / "good.h5")
    bad = _corrupt(good, tmp_path / "bad.h5", edit)
    with pytest.raises(ValueError, match=message) as err:
        load_dictionary(bad)
    assert "bad.h5" in str(err.value)


def test_not_hdf5_and_missing_file(tmp_path):
    (tmp_path / "x.h5").write_text("hello")
    with pytest.raises(ValueError, match="x.h5"):
        load_dictionary(tmp_path / "x.h5")
    with pytest.raises(FileNotFoundError):
        load_dictionary(tmp_path / "missing.h5")


def test_cache_builds_once_and_is_keyed_by_sequence_and_grid(tmp_path, monkeypatch):
    seq = fisp_mrf_jiang2015(20)
    monkeypatch.setenv("MRF_MONAI_CACHE", str(tmp_path / "cache"))
    d1 = cached_dictionary(seq, rank=2, **GRID)
    files = list((tmp_path / "cache").glob("*.h5"))
    assert len(files) == 1 and seq.key() in files[0].name
    mtime = files[0].stat().st_mtime_ns
    d2 = cached_dictionary(seq, rank=2, **GRID)
    assert files[0].stat().st_mtime_ns == mtime  # read, not rebuilt
    torch.testing.assert_close(d1.compressed, d2.compressed)
    other = MRFSequence("FISP", seq.flip_angle_deg, 12.0, seq.te_ms, seq.ti_ms)
    cached_dictionary(other, rank=2, **GRID)
    cached_dictionary(seq, rank=2, t1_range_s=(0.2, 2.0), t2_range_s=(0.02, 0.5), step=0.5)
    assert len(list((tmp_path / "cache").glob("*.h5"))) == 3
    assert not list((tmp_path / "cache").glob(f"*{TEMP_MARKER}*"))
    files[0].write_text("damaged")  # a damaged cache file is rebuilt
    torch.testing.assert_close(cached_dictionary(seq, rank=2, **GRID).compressed, d1.compressed)
    with pytest.raises(ValueError, match="unknown grid"):
        cached_dictionary(seq, cache_dir=tmp_path, t1_range=(0.1, 1.0))


def test_cli_writes_a_dictionary(tmp_path):
    from mrf_monai.cli import main

    out = tmp_path / "cli.h5"
    argv = [
        "dictionary",
        "--out",
        str(out),
        "--frames",
        "25",
        "--rank",
        "3",
        "--t1-range",
        "0.2,2",
        "--t2-range",
        "0.02,0.5",
        "--step",
        "0.4",
    ]
    assert main(argv) == 0
    d = load_dictionary(out)
    assert d.n_frames == 25 and d.rank == 3 and d.sequence == fisp_mrf_jiang2015(25)
    t1, _ = t1t2_grid(**GRID)
    assert d.n_atoms == t1.numel()
    assert main(["dictionary", "--out", str(tmp_path / "e.h5"), "--frames", "5000"]) == 2


def test_cli_reads_the_sequence_from_raw_data(tmp_path):
    from mrf_monai.cli import main
    from mrf_monai.io.ismrmrd import RawSubject, write_raw

    seq = MRFSequence("FISP", np.linspace(5, 40, 12), 9.0, 2.0, 20.0)
    sub = RawSubject(
        kspace=np.zeros((1, 1, 12, 8), np.complex64),
        # a radial-like readout that reaches the edge of k-space (|k| = 0.5) of the 8 x 8 matrix
        traj=np.broadcast_to(np.linspace(-0.5, 0.5, 8, dtype=np.float32)[:, None], (1, 12, 8, 2)).copy(),
        interleaf=np.zeros((1, 12), np.int64),
        sequence=seq,
        matrix=(8, 8),
        fov_mm=(80.0, 80.0, 5.0),
        position_mm=np.zeros((1, 3)),
    )
    raw = write_raw(tmp_path / "raw.h5", sub)
    out = tmp_path / "from_raw.h5"
    assert (
        main(["dictionary", "--out", str(out), "--from-raw", str(raw), "--rank", "2", "--step", "0.5"]) == 0
    )
    assert load_dictionary(out).sequence == seq


def test_cache_is_keyed_by_the_b1_grid(tmp_path):
    seq = fisp_mrf_jiang2015(20)
    plain = cached_dictionary(seq, cache_dir=tmp_path, rank=2, **GRID)
    with_b1 = cached_dictionary(seq, cache_dir=tmp_path, rank=2, b1_step=0.2, b1_range=(0.8, 1.2), **GRID)
    assert plain.b1 is None
    torch.testing.assert_close(with_b1.b1_values, torch.tensor([0.8, 1.0, 1.2]))
    assert with_b1.n_atoms == 3 * plain.n_atoms
    same = cached_dictionary(seq, cache_dir=tmp_path, rank=2, b1_values=[0.8, 1.0, 1.2], **GRID)
    assert len(list(tmp_path.glob("*.h5"))) == 2  # same B1 grid, same file
    torch.testing.assert_close(same.compressed, with_b1.compressed)
    torch.testing.assert_close(same.b1, with_b1.b1)
    cached_dictionary(seq, cache_dir=tmp_path, rank=2, b1_values=[0.9, 1.1], **GRID)
    assert len(list(tmp_path.glob("*.h5"))) == 3
    with pytest.raises(ValueError, match="not both"):
        cached_dictionary(seq, cache_dir=tmp_path, b1_values=[1.0], b1_step=0.1)
    with pytest.raises(ValueError, match="b1_step"):
        cached_dictionary(seq, cache_dir=tmp_path, b1_range=(0.8, 1.2))


def test_full_disk_falls_back_to_the_in_memory_dictionary(tmp_path, monkeypatch):
    import errno
    import warnings

    from mrf_monai.io.dictionary import DictionaryCacheWarning

    seq = fisp_mrf_jiang2015(20)
    cache = tmp_path / "cache"
    real_create = h5py.Group.create_dataset
    calls = []

    def full_disk(self, name, *args, **kwargs):  # the temporary file exists, then the disk is full
        calls.append(name)
        if name == "compressed":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_create(self, name, *args, **kwargs)

    monkeypatch.setattr(h5py.Group, "create_dataset", full_disk)
    with pytest.warns(DictionaryCacheWarning) as record:
        d = cached_dictionary(seq, cache_dir=cache, rank=2, **GRID)
    assert "compressed" in calls
    assert len(record) == 1
    message = str(record[0].message)
    assert "\n" not in message and str(cache) in message
    assert "No space left on device" in message and "MRF_MONAI_CACHE" in message
    assert list(cache.iterdir()) == []  # no partial or temporary file left
    monkeypatch.setattr(h5py.Group, "create_dataset", real_create)
    t1, t2 = t1t2_grid(**GRID)
    ref = build_dictionary(seq, t1, t2, rank=2)
    torch.testing.assert_close(d.compressed, ref.compressed)
    # the next run with space writes the cache normally, silently
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cached_dictionary(seq, cache_dir=cache, rank=2, **GRID)
    assert len(list(cache.glob("*.h5"))) == 1


def test_unwritable_cache_folder_falls_back(tmp_path):
    from mrf_monai.io.dictionary import DictionaryCacheWarning

    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder should be")
    with pytest.warns(DictionaryCacheWarning, match="not-a-folder"):
        d = cached_dictionary(fisp_mrf_jiang2015(10), cache_dir=blocker / "sub", rank=2, **GRID)
    assert d.rank == 2 and blocker.read_text().startswith("a file")
