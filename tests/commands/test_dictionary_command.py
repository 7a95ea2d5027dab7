"""``mrf-monai dictionary``: one build path with the dictionary cache, and the B1 axis options."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch

from mrf_monai.cli import main
from mrf_monai.io.dictionary import cached_dictionary, load_dictionary
from mrf_monai.physics.dictionary import b1_grid, t1t2_grid
from mrf_monai.physics.sequence import fisp_mrf_jiang2015

#: 20 frames, a coarse grid: a few dozen (T1, T2) pairs.
GRID = dict(t1_range_s=(0.2, 2.0), t2_range_s=(0.02, 0.5), step=0.3)
ARGS = ["--frames", "20", "--rank", "3", "--t1-range", "0.2,2", "--t2-range", "0.02,0.5", "--step", "0.3"]


@pytest.mark.parametrize(
    "progress, b1",
    [(False, False), (True, False), (True, True)],
    ids=["no-progress", "progress", "progress-b1"],
)
def test_file_equals_the_cached_dictionary(tmp_path, capfd, progress, b1):
    out = tmp_path / "d.h5"
    b1_args = ["--b1-step", "0.2", "--b1-range", "0.8", "1.2"] if b1 else []
    argv = ["dictionary", "--out", str(out), *ARGS, *b1_args, *([] if progress else ["--no-progress"])]
    assert main(argv) == 0
    err = capfd.readouterr().err
    got = load_dictionary(out)
    b1_kwargs = {"b1_step": 0.2, "b1_range": (0.8, 1.2)} if b1 else {}
    ref = cached_dictionary(fisp_mrf_jiang2015(20), cache_dir=tmp_path / "cache", rank=3, **b1_kwargs, **GRID)
    assert got.sequence == ref.sequence and got.n_atoms == ref.n_atoms
    for name in ("t1_s", "t2_s", "b1"):
        a, b = getattr(got, name), getattr(ref, name)
        assert (a is None and b is None) or torch.equal(a, b), name
    if not progress:  # the very same computation: bit for bit
        assert err == ""
        for name in ("basis", "compressed", "norms"):
            assert torch.equal(getattr(got, name), getattr(ref, name)), name
        assert got.energy == ref.energy
    else:  # simulated in sub-blocks: float32 rounding at most
        n = got.n_atoms
        assert f"{n}/{n}" in err
        torch.testing.assert_close(got.basis, ref.basis, atol=1e-6, rtol=0)
        torch.testing.assert_close(got.compressed, ref.compressed, atol=1e-6, rtol=0)
        torch.testing.assert_close(got.norms, ref.norms, atol=1e-6, rtol=1e-6)
        assert got.energy == pytest.approx(ref.energy, abs=1e-7)


def test_b1_dictionary_has_the_requested_grid(tmp_path, capfd):
    out = tmp_path / "b1.h5"
    assert main(["dictionary", "--out", str(out), *ARGS, "--b1-step", "0.4", "--no-progress"]) == 0
    stdout = capfd.readouterr().out
    d = load_dictionary(out)
    t1, t2 = t1t2_grid(**GRID)
    values = b1_grid((0.6, 1.4), 0.4)  # the default --b1-range
    assert values.tolist() == pytest.approx([0.6, 1.0, 1.4])
    assert d.n_atoms == 3 * t1.numel()
    assert torch.equal(d.b1_values, values)
    assert torch.equal(d.b1, values.repeat_interleave(t1.numel()))  # B1-major
    assert torch.equal(d.t1_s, t1.repeat(3)) and torch.equal(d.t2_s, t2.repeat(3))
    with h5py.File(out, "r") as f:  # data contract section 4: optional b1 (N,) float32
        assert f["b1"].shape == (d.n_atoms,) and f["b1"].dtype == np.float32
    assert stdout.startswith(f"wrote {out}: {d.n_atoms} atoms (3 B1 values 0.6 to 1.4),")
    assert stdout.count("\n") == 1


@pytest.mark.parametrize(
    "b1_args, expected",
    [
        (["--b1-step", "0"], "--b1-step 0: give a positive step"),
        (["--b1-step", "-0.05"], "--b1-step -0.05: give a positive step"),
        (["--b1-step", "nan"], "--b1-step nan: give a positive step"),
        (["--b1-step", "inf"], "--b1-step inf: give a positive step"),
        (
            ["--b1-step", "0.1", "--b1-range", "1.4", "0.6"],
            "--b1-range 1.4 0.6: must satisfy 0 < LOW <= HIGH",
        ),
        (["--b1-step", "0.1", "--b1-range", "0", "1"], "--b1-range 0 1: must satisfy 0 < LOW <= HIGH"),
        (["--b1-step", "0.1", "--b1-range", "0.6", "inf"], "--b1-range 0.6 inf: must satisfy"),
        (["--b1-range", "0.6", "1.4"], "--b1-range needs --b1-step"),
    ],
)
def test_bad_b1_options_exit_2_with_one_line(tmp_path, capfd, b1_args, expected):
    status = main(["dictionary", "--out", str(tmp_path / "d.h5"), *ARGS, *b1_args])  # progress bar on
    captured = capfd.readouterr()
    assert status == 2 and captured.out == ""
    assert captured.err.startswith("mrf-monai dictionary: error: ") and captured.err.count("\n") == 1
    assert expected in captured.err and "Traceback" not in captured.err
    assert not list(tmp_path.iterdir())  # checked before anything is simulated or written
