"""Fault injection for ``mrf-monai reconstruct`` (issue 18): bad inputs, bad settings, signals.

Every case asserts the exit status (0 all written, 1 a subject failed, 2 a wrong setting, 130 after
SIGINT, 143 after SIGTERM), ONE clear line per problem without a traceback, that the other
subjects are written (with exact maps: noise-free, fully sampled subjects of two tissues that lie
on the dictionary grid), that no partial or hidden folder (``.tmp-``, ``.old-``) is left, and that
earlier maps and the user's own files survive.

"Checked before the first subject" is proved without timing: those runs get an empty dictionary
cache folder and no ``--dictionary``, so a subject that had been read and reconstructed would
have left its sequence's dictionary there.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pytest
import torch
from ismrmrd import xsd
from scipy.ndimage import gaussian_filter

from mrf_monai.acquisition.nufft import Nufft2D
from mrf_monai.acquisition.trajectory import fully_sampled_spiral
from mrf_monai.cli import main
from mrf_monai.io.dictionary import save_dictionary
from mrf_monai.io.ismrmrd import RawSubject, write_raw
from mrf_monai.physics import fisp_mrf_jiang2015
from mrf_monai.physics.dictionary import build_dictionary
from mrf_monai.physics.epg import simulate_fisp
from mrf_monai.pipeline.methods import method_options
from mrf_monai.pipeline.writer import OWNED_PATTERNS

REPO = Path(__file__).resolve().parents[2]
N, FRAMES, OTHER_FRAMES = 24, 24, 30
T1_GRID = np.geomspace(0.3, 3.0, 16)
T2_GRID = np.geomspace(0.03, 1.0, 16)
TISSUES = ((T1_GRID[5], T2_GRID[4]), (T1_GRID[11], T2_GRID[9]))  # (T1 s, T2 s), on the grid
MAPS = ("T1map", "T2map", "PDmap", "desc-compressed_TSMI")
PREFIX = "mrf-monai reconstruct: "
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


# ----------------------------------------------------------------------------- data


def _phantom() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Tissue fractions (2, N, N) of a disc split in two, and the exact T1/T2 maps of pure voxels."""
    i, j = np.meshgrid(np.arange(N) - N // 2, np.arange(N) - N // 2, indexing="ij")
    labels = np.where(np.hypot(i, j) < 9, np.where(j > 1, 2, 1), 0)
    frac = np.stack([gaussian_filter((labels == k).astype(float), 0.8) for k in (1, 2)])
    pure, dom = frac.max(0) > 0.9, frac.argmax(0)
    t1 = np.where(pure, np.array([t[0] for t in TISSUES])[dom], 0.0)
    t2 = np.where(pure, np.array([t[1] for t in TISSUES])[dom], 0.0)
    return frac, t1, t2


def _raw(n_frames: int) -> RawSubject:
    seq = fisp_mrf_jiang2015(n_frames)
    frac, _, _ = _phantom()
    fp = simulate_fisp(
        torch.tensor([t[0] for t in TISSUES]), torch.tensor([t[1] for t in TISSUES]), seq
    ).numpy()
    traj = fully_sampled_spiral(n_frames, matrix=N, samples_per_readout=96)
    series = np.einsum("kt,kxy->txy", fp, frac) * np.exp(0.4j)
    kspace = Nufft2D(traj[0], (N, N)).forward(torch.as_tensor(series, dtype=torch.complex64)).numpy()
    return RawSubject(
        kspace=kspace[None, None],
        traj=traj[None],
        interleaf=np.zeros((1, n_frames), dtype=np.int64),
        sequence=seq,
        matrix=(N, N),
        fov_mm=(230.0, 230.0, 5.0),
        position_mm=np.zeros((1, 3)),
    )


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """The raw files (good: 24 frames; other: 30 frames) and a dictionary of the 24-frame sequence."""
    root = tmp_path_factory.mktemp("faults")
    good = write_raw(root / "good.h5", _raw(FRAMES))
    other = write_raw(root / "other.h5", _raw(OTHER_FRAMES))
    t1, t2 = np.meshgrid(T1_GRID, T2_GRID, indexing="ij")
    keep = t2 < t1
    d = build_dictionary(
        fisp_mrf_jiang2015(FRAMES), torch.tensor(t1[keep]).float(), torch.tensor(t2[keep]).float(), rank=4
    )
    return {"good": good, "other": other, "dictionary": save_dictionary(d, root / "dict.h5")}


def _subject(ds: Path, label: str, source: Path) -> Path:
    """``ds/sub-<label>/raw.h5`` as a copy of ``source``; returns the raw file."""
    folder = ds / f"sub-{label}"
    folder.mkdir(parents=True)
    return Path(shutil.copyfile(source, folder / "raw.h5"))


def _rewrite_records(path: Path, mutate) -> None:
    with h5py.File(path, "a") as f:
        records = mutate(f["dataset/data"][()])
        del f["dataset/data"]
        f["dataset"].create_dataset("data", data=records, maxshape=(None,))


def _rewrite_header(path: Path, mutate) -> None:
    with h5py.File(path, "r") as f:
        header = xsd.CreateFromDocument(f["dataset/xml"][0])
    mutate(header)
    with h5py.File(path, "a") as f:
        del f["dataset/xml"]
        f["dataset"].create_dataset(
            "xml", data=[xsd.ToXML(header).encode()], dtype=h5py.special_dtype(vlen=bytes)
        )


def _scale_trajectory(factor: float):
    def mutate(records):
        for n in range(len(records)):
            records["traj"][n] = records["traj"][n] * np.float32(factor)
        return records

    return mutate


# ----------------------------------------------------------------------------- checks


def _reconstruct(capfd, *args: str, method: str = "svdmrf") -> tuple[int, list[str], str]:
    """``mrf-monai reconstruct --method METHOD ARGS --no-progress`` in this process."""
    status = main(["reconstruct", "--method", method, *args, "--no-progress"])
    captured = capfd.readouterr()
    assert "Traceback" not in captured.err + captured.out
    return status, captured.err.splitlines(), captured.out


def _debris(folder: Path) -> list[str]:
    """Hidden temporaries of interrupted writes (folders and files) anywhere under ``folder``."""
    if not folder.exists():
        return []
    marks = (".tmp-", ".old-", ".mrf-monai-write-test-")
    return [str(p.relative_to(folder)) for p in folder.rglob("*") if any(m in p.name for m in marks)]


def _assert_exact_maps(sub: Path) -> None:
    """The subject's maps exist, complete, and the pure voxels hold the exact tissue values."""
    label = sub.name.removeprefix("sub-")
    for suffix in MAPS:
        assert (sub / f"sub-{label}_{suffix}.nii.gz").is_file() and (
            sub / f"sub-{label}_{suffix}.json"
        ).is_file()
    assert json.loads((sub / "timing.json").read_text())["n_slices"] == 1
    _, true_t1, true_t2 = _phantom()
    t1 = np.asarray(nib.load(sub / f"sub-{label}_T1map.nii.gz").dataobj)[..., 0]
    t2 = np.asarray(nib.load(sub / f"sub-{label}_T2map.nii.gz").dataobj)[..., 0]
    pure = true_t1 > 0
    assert np.mean(np.isclose(t1[pure], true_t1[pure], rtol=1e-4)) > 0.9
    assert np.mean(np.isclose(t2[pure], true_t2[pure], rtol=1e-4)) > 0.9
    assert (t1[N // 2, :2] == 0).all() and (t1[:2, N // 2] == 0).all()  # background


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ----------------------------------------------------------------------------- bad raw data


def test_bad_trajectories_are_refused_and_the_batch_goes_on(files, tmp_path, capfd):
    ds, out = tmp_path / "ds", tmp_path / "out"
    _subject(ds, "good", files["good"])
    scaled = _subject(ds, "scaled", files["good"])
    _rewrite_records(scaled, _scale_trajectory(10.0))  # |k| up to 5 cycles per pixel
    matrix = _subject(ds, "matrix", files["good"])

    def header_128(h) -> None:  # the header says 128 x 128, the trajectory was designed for 64 x 64
        for space in (h.encoding[0].encodedSpace, h.encoding[0].reconSpace):
            space.matrixSize.x = space.matrixSize.y = 128

    _rewrite_header(matrix, header_128)
    _rewrite_records(matrix, _scale_trajectory(0.5))  # |k| <= 0.25 of the 128 matrix: a 64 x 64 design
    status, err, _ = _reconstruct(
        capfd, str(ds), "--output", str(out), "--dictionary", str(files["dictionary"])
    )
    assert status == 1
    assert len(err) == 3, err  # one line per bad subject, one summary
    line = {e.split(":")[0]: e for e in err}
    assert str(scaled) in line["sub-scaled"] and "leaves k-space" in line["sub-scaled"]
    assert "|k| = 5 cycles per pixel in slice 0, frame 0" in line["sub-scaled"]
    assert str(matrix) in line["sub-matrix"] and "matrixSize is 128 x 128" in line["sub-matrix"]
    assert "resolves a matrix of about 64 x 64" in line["sub-matrix"]
    assert err[-1] == f"svdmrf: 2 of 3 subject(s) failed (1 written to {out})"
    assert sorted(p.name for p in out.iterdir()) == ["sub-good"] and not _debris(out)
    _assert_exact_maps(out / "sub-good")


def test_bad_raw_files_fail_alone_with_one_line_each(files, tmp_path, capfd):
    ds, out = tmp_path / "ds", tmp_path / "out"
    for label in ("a", "z"):
        _subject(ds, label, files["good"])
    truncated = _subject(ds, "truncated", files["good"])
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 3])
    junk = _subject(ds, "junk", files["good"])
    junk.write_bytes(b"this is no HDF5 file " * 50)
    nan = _subject(ds, "nan", files["good"])

    def poison(records):
        samples = records["data"][3].copy()
        samples[5] = np.nan
        records["data"][3] = samples
        return records

    _rewrite_records(nan, poison)
    other = _subject(ds, "other", files["other"])  # 30 frames: the 24-frame dictionary does not fit
    status, err, _ = _reconstruct(
        capfd, str(ds), "--output", str(out), "--dictionary", str(files["dictionary"])
    )
    assert status == 1
    assert len(err) == 5, err
    line = {e.split(":")[0]: e for e in err[:-1]}
    assert str(truncated) in line["sub-truncated"] and "truncated" in line["sub-truncated"]
    assert str(junk) in line["sub-junk"] and "not an HDF5 file" in line["sub-junk"]
    assert (
        str(nan) in line["sub-nan"] and "NaN/Inf k-space" in line["sub-nan"] and "frame 3" in line["sub-nan"]
    )
    assert (
        "another sequence" in line["sub-other"] and f"{OTHER_FRAMES} frames vs {FRAMES}" in line["sub-other"]
    )
    assert str(files["dictionary"]) in line["sub-other"] and str(other) not in err[-1]
    assert err[-1] == f"svdmrf: 4 of 6 subject(s) failed (2 written to {out})"
    assert sorted(p.name for p in out.iterdir()) == ["sub-a", "sub-z"] and not _debris(out)
    for label in ("a", "z"):
        _assert_exact_maps(out / f"sub-{label}")


# ----------------------------------------------------------------------------- settings, checked first


@pytest.fixture()
def three(files, tmp_path):
    """Three good subjects, and a dictionary cache folder that does not exist yet."""
    ds = tmp_path / "ds"
    for label in ("a", "b", "c"):
        _subject(ds, label, files["good"])
    return ds, tmp_path / "cache"


def _assert_setting_error(capfd, ds, cache, out, *args, method="svdmrf", words=()) -> str:
    status, err, stdout = _reconstruct(
        capfd, str(ds), "--output", str(out), "--cache-dir", str(cache), *args, method=method
    )
    assert status == 2
    assert len(err) == 1 and err[0].startswith(PREFIX + "error: "), err
    for w in words:
        assert w in err[0], err[0]
    assert stdout == ""
    assert not cache.exists()  # no subject was read: its dictionary would be cached there
    assert not Path(out).is_dir() or not list(Path(out).iterdir())  # nothing written, not even a folder
    return err[0]


def test_output_that_is_a_file(three, tmp_path, capfd):
    ds, cache = three
    target = tmp_path / "maps.txt"
    target.write_text("mine")
    _assert_setting_error(capfd, ds, cache, target, words=(str(target), "exists and is not a folder"))
    assert target.read_text() == "mine"
    _assert_setting_error(capfd, ds, cache, target / "out", words=(str(target), "is not a folder"))


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_output_in_a_read_only_parent(three, tmp_path, capfd):
    ds, cache = three
    parent = tmp_path / "locked"
    parent.mkdir()
    parent.chmod(0o555)
    try:
        _assert_setting_error(
            capfd, ds, cache, parent / "out", words=("cannot create the output folder", "locked")
        )
        _assert_setting_error(capfd, ds, cache, parent, words=("cannot write to the output folder",))
        assert list(parent.iterdir()) == []
    finally:
        parent.chmod(0o755)


def test_output_on_a_file_system_nobody_may_write(three, capfd):
    """Like a read-only parent, but also for root: sysfs refuses new folders to everyone."""
    ds, cache = three
    sysfs = Path("/sys/kernel")
    if not sysfs.is_dir():
        pytest.skip("no sysfs here")
    _assert_setting_error(
        capfd, ds, cache, sysfs / "mrf-monai-maps", words=("cannot create the output folder",)
    )


@pytest.mark.parametrize(
    "args, words",
    [
        (("--device", "banana"), ("--device 'banana' is not a torch device", "use cpu, cuda")),
        (("--mask-threshold", "2"), ("mask threshold 2.0 is outside [0, 1)",)),
        (
            ("--option", "n_sampels=3"),
            ("unknown option(s) n_sampels for method 'svdmrf'; valid:", "dcf_iter"),
        ),
        (("--option", "dcf_iter=abc"), ('option dcf_iter="abc" (default 15)', "invalid literal for int()")),
        (("--option", "coil_maps=best"), ('option coil_maps="best" (default "inati")', "walsh")),
        (("--dictionary", "/nowhere/dict.h5"), ("/nowhere/dict.h5", "does not exist")),
        (("--trajectory", "/nowhere/traj.npy"), ("/nowhere/traj.npy", "not found")),
    ],
)
def test_wrong_settings_stop_before_the_first_subject(three, tmp_path, capfd, args, words):
    ds, cache = three
    _assert_setting_error(capfd, ds, cache, tmp_path / "out", *args, words=words)


def test_unknown_options_list_the_valid_ones(three, tmp_path, capfd):
    ds, cache = three
    text = _assert_setting_error(
        capfd, ds, cache, tmp_path / "out", "--option", "lamda=0.1", "--option", "n_iter=5", method="lrtv"
    )
    valid, hint = text.split("valid: ")[1].split(" (")
    assert "unknown option(s) lamda for method 'lrtv'" in text and hint == "did you mean lam?)"
    assert sorted(valid.split(", ")) == sorted(method_options("lrtv"))  # the --option keys, no wiring


def test_an_option_of_the_wrong_type_is_named(three, tmp_path, capfd):
    ds, cache = three
    text = _assert_setting_error(
        capfd, ds, cache, tmp_path / "out", "--option", "n_iter=abc", "--option", "lam=0.02", method="lrtv"
    )
    assert (
        text
        == PREFIX
        + "error: method 'lrtv': option n_iter=\"abc\" (default 30): "
        + "n_iter must be a whole number >= 1, got 'abc'"
    )


def test_missing_weights_of_a_learned_method_stop_before_the_first_subject(three, tmp_path, capfd):
    ds, cache = three
    text = _assert_setting_error(
        capfd,
        ds,
        cache,
        tmp_path / "out",
        "--option",
        "model_path=/missing.pt",
        "--device",
        "cpu",
        method="iddpm",
    )
    assert (
        text
        == PREFIX
        + "error: method 'iddpm': option model_path=\"/missing.pt\": weights file /missing.pt does not exist"
    )


def test_cuda_on_a_cpu_build_is_one_message(three, tmp_path, capfd):
    if torch.cuda.is_available():
        pytest.skip("this PyTorch has CUDA")
    ds, cache = three
    _assert_setting_error(
        capfd, ds, cache, tmp_path / "out", "--device", "cuda", words=("no CUDA device", "--device cpu")
    )


# ----------------------------------------------------------------------------- re-runs


def test_rerun_replaces_owned_files_and_keeps_the_users(files, tmp_path, capfd):
    ds, out = tmp_path / "ds", tmp_path / "out"
    _subject(ds, "a", files["good"])
    common = (str(ds), "--output", str(out), "--dictionary", str(files["dictionary"]))
    status, err, stdout = _reconstruct(capfd, *common, "--dicom")
    assert status == 0 and err == [f"svdmrf: 1 subject(s) written to {out}"] and stdout == ""
    sub = out / "sub-a"
    series = sorted(p.name for p in (sub / "dicom").iterdir())
    assert series  # one DICOM series per map
    (sub / "notes.txt").write_text("my notes")
    (sub / "analysis").mkdir()
    (sub / "analysis" / "roi.csv").write_text("1,2,3")
    (sub / "dicom" / "sent-to-pacs.txt").write_text("yes")
    (sub / "sub-a_desc-std_T1map.nii.gz").write_bytes(b"an earlier probabilistic run")  # owned: dropped
    earlier_dicom = _snapshot(sub / "dicom")

    # without --dicom: the maps are replaced (now in ms), the earlier DICOM and the user's files stay
    status, err, _ = _reconstruct(capfd, *common, "--units", "ms")
    assert status == 0 and err == [f"svdmrf: 1 subject(s) written to {out}"]
    assert json.loads((sub / "sub-a_T1map.json").read_text())["Units"] == "ms"
    assert (sub / "notes.txt").read_text() == "my notes" and (
        sub / "analysis" / "roi.csv"
    ).read_text() == "1,2,3"
    assert _snapshot(sub / "dicom") == earlier_dicom
    assert not (sub / "sub-a_desc-std_T1map.nii.gz").exists()
    assert not _debris(out) and sorted(p.name for p in out.iterdir()) == ["sub-a"]

    # with --dicom: the run owns dicom/ and replaces it as a whole
    status, _, _ = _reconstruct(capfd, *common, "--dicom")
    assert status == 0
    assert sorted(p.name for p in (sub / "dicom").iterdir()) == series  # the note inside it is gone
    assert (sub / "notes.txt").read_text() == "my notes" and not _debris(out)
    owned = [p.name for p in sub.iterdir() if any(Path(p.name).match(pat) for pat in OWNED_PATTERNS)]
    assert sorted(owned) == sorted(
        [*(f"sub-a_{m}.{ext}" for m in MAPS for ext in ("nii.gz", "json")), "timing.json"]
    )
    _assert_exact_maps(sub)


def _dead_pid() -> int:
    proc = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    return int(proc.stdout)


def test_debris_of_a_killed_run_is_cleaned_up_by_the_next(files, tmp_path, capfd):
    ds, out = tmp_path / "ds", tmp_path / "out"
    _subject(ds, "a", files["good"])
    common = (str(ds), "--output", str(out), "--dictionary", str(files["dictionary"]))
    assert _reconstruct(capfd, *common)[0] == 0
    dead = _dead_pid()
    half = out / f".sub-a.tmp-{dead}-0a1b2c"  # killed while writing sub-a
    half.mkdir()
    (half / "sub-a_T1map.nii.gz").write_bytes(b"half written")
    hidden = out / f".sub-b.old-{dead}-0a1b2c"  # killed between the two renames of sub-b's swap
    shutil.copytree(out / "sub-a", hidden)
    stale = out / f".sub-a.old-{dead}-3d4e5f"  # an old copy whose sub-a exists: stale
    stale.mkdir()
    busy = out / f".sub-c.tmp-{os.getppid()}-0a1b2c"  # a run that is still going (its process lives)
    busy.mkdir()
    kept = _snapshot(hidden)
    status, err, _ = _reconstruct(capfd, *common)
    assert status == 0
    assert sorted(err) == sorted(
        [
            f"{out}: removed {half.name} left by an interrupted run",
            f"{out}: removed {stale.name} left by an interrupted run",
            f"{out}: restored sub-b from an interrupted run",
            f"svdmrf: 1 subject(s) written to {out}",
        ]
    )
    assert sorted(p.name for p in out.iterdir()) == [busy.name, "sub-a", "sub-b"]
    assert _snapshot(out / "sub-b") == kept
    _assert_exact_maps(out / "sub-a")


def test_an_interrupt_inside_the_swap_keeps_the_old_folder(tmp_path, monkeypatch):
    """Where the system has no atomic exchange (two renames), an interrupt between the renames
    puts the old folder back at once; one while writing removes the temporary folder."""
    from mrf_monai.io import folders

    final = tmp_path / "sub-a"
    final.mkdir()
    (final / "sub-a_T1map.nii.gz").write_text("old")
    with pytest.raises(KeyboardInterrupt), folders.staged_folder(final) as tmp:
        (tmp / "sub-a_T1map.nii.gz").write_text("half")
        raise KeyboardInterrupt
    assert _snapshot(tmp_path) == {"sub-a/sub-a_T1map.nii.gz": b"old"}

    monkeypatch.setattr(folders, "exchange_folders", lambda a, b: False)  # e.g. not Linux
    real_rename, interrupted = os.rename, []

    def rename(src, dst):
        if Path(dst) == final and not interrupted:  # the second rename: the signal arrives just before it
            interrupted.append(src)
            raise KeyboardInterrupt
        real_rename(src, dst)

    monkeypatch.setattr(folders.os, "rename", rename)
    with pytest.raises(KeyboardInterrupt), folders.staged_folder(final, owned=("sub-*",)) as tmp:
        (tmp / "sub-a_T1map.nii.gz").write_text("new")
    monkeypatch.undo()
    assert ".tmp-" in Path(interrupted[0]).name
    assert _snapshot(tmp_path) == {"sub-a/sub-a_T1map.nii.gz": b"old"}  # no .old-, no .tmp- left


# ----------------------------------------------------------------------------- signals


def _start(args: list[str]) -> subprocess.Popen:
    """``python -m mrf_monai.cli reconstruct ...`` with SIGINT at its default (so Python raises
    KeyboardInterrupt even when the test runner was started with SIGINT ignored)."""
    return subprocess.Popen(
        [sys.executable, "-m", "mrf_monai.cli", "reconstruct", *args, "--no-progress"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def _wait_until(condition, proc: subprocess.Popen, timeout_s: float = 120.0, poll_s: float = 0.001) -> None:
    t_end = time.monotonic() + timeout_s
    while not condition():
        if proc.poll() is not None:
            raise AssertionError(f"the run ended early ({proc.returncode}): {proc.communicate()[1]}")
        if time.monotonic() > t_end:
            proc.kill()
            raise AssertionError("the run did not get there in time")
        time.sleep(poll_s)


def test_sigint_during_a_reconstruction(files, tmp_path, capfd):
    ds, out = tmp_path / "ds", tmp_path / "out"
    for label in ("a", "b"):
        _subject(ds, label, files["good"])
    dictionary = ("--dictionary", str(files["dictionary"]))
    assert _reconstruct(capfd, str(ds / "sub-a"), "--output", str(out), *dictionary)[0] == 0
    earlier = _snapshot(out / "sub-a")
    stale = out / f".sub-b.tmp-{_dead_pid()}-0a1b2c"  # removed when the run starts: our cue
    stale.mkdir()
    proc = _start(
        ["--method", "lrtv", str(ds), "--output", str(out), *dictionary, "--option", "n_iter=1000000"]
    )
    _wait_until(lambda: not stale.exists(), proc)
    time.sleep(0.5)  # well inside sub-a's LRTV iterations
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and stdout == ""
    assert stderr.splitlines() == [
        f"{out}: removed {stale.name} left by an interrupted run",
        PREFIX + "interrupted (SIGINT)",
    ]
    assert sorted(p.name for p in out.iterdir()) == ["sub-a"] and not _debris(out)
    assert _snapshot(out / "sub-a") == earlier  # the earlier maps are intact


def test_sigterm_while_a_subject_is_written(files, tmp_path, capfd):
    ds, out = tmp_path / "ds", tmp_path / "out"
    labels = [f"s{n}" for n in range(8)]
    for label in labels:
        _subject(ds, label, files["good"])
    dictionary = ("--dictionary", str(files["dictionary"]))
    assert _reconstruct(capfd, str(ds / "sub-s0"), "--output", str(out), *dictionary)[0] == 0
    earlier = _snapshot(out / "sub-s0")
    (out / "sub-s0" / "notes.txt").write_text("mine")
    proc = _start(["--method", "svdmrf", str(ds), "--output", str(out), *dictionary, "--dicom"])
    caught: list[Path] = []

    def writing() -> bool:  # a subject's hidden temporary folder is there: stop the run right then
        tmps = [p for p in out.iterdir() if p.name.startswith(".sub-") and f".tmp-{proc.pid}-" in p.name]
        if not tmps:
            return False
        os.kill(proc.pid, signal.SIGSTOP)
        if tmps[0].exists():
            caught.append(tmps[0])
            os.kill(proc.pid, signal.SIGTERM)  # delivered when it goes on, while it writes
        os.kill(proc.pid, signal.SIGCONT)
        return bool(caught)

    _wait_until(writing, proc)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 143, stderr
    assert "Traceback" not in stderr and stdout == ""
    assert stderr.splitlines()[-1] == PREFIX + "terminated (SIGTERM)"
    assert not caught[0].exists() and not _debris(out), (
        caught,
        _debris(out),
    )  # the unfinished one is removed
    assert (out / "sub-s0" / "notes.txt").read_text() == "mine"
    for sub in out.iterdir():  # every published subject is complete; sub-s0 is the earlier one or a new one
        if sub.name == "sub-s0" and _snapshot(sub) == {**earlier, "notes.txt": b"mine"}:
            continue
        _assert_exact_maps(sub)
        assert (sub / "dicom").is_dir()
    assert len(list(out.iterdir())) < len(labels)  # it stopped before the end


# ----------------------------------------------------------------------------- dictionary cache


def test_full_disk_at_the_dictionary_cache_falls_back_to_memory(files, tmp_path, capfd, monkeypatch):
    ds, cache = tmp_path / "ds", tmp_path / "cache"
    for label in ("a", "b"):
        _subject(ds, label, files["good"])
    real = h5py.Group.create_dataset

    def disk_full(self, name, *args, **kwargs):  # the disk fills up while the cache file is written
        if "dict-" in Path(self.file.filename).name and name != "t1":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(self, name, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(h5py.Group, "create_dataset", disk_full)
        status, err, _ = _reconstruct(
            capfd, str(ds), "--output", str(tmp_path / "full"), "--cache-dir", str(cache)
        )
    assert status == 0
    assert len(err) == 2, err  # one warning (one sequence), one summary
    assert err[0].startswith(
        PREFIX + f"warning: cannot write the dictionary cache in {cache} (No space left on device)"
    )
    assert "using the dictionary from memory" in err[0] and "MRF_MONAI_CACHE" in err[0]
    assert err[1] == f"svdmrf: 2 subject(s) written to {tmp_path / 'full'}"
    assert list(cache.iterdir()) == []  # no partial or temporary cache file
    # the same maps as with a working cache (which is then written)
    assert _reconstruct(capfd, str(ds), "--output", str(tmp_path / "ok"), "--cache-dir", str(cache))[0] == 0
    assert [p.suffix for p in cache.iterdir()] == [".h5"]
    for label in ("a", "b"):
        for suffix in ("T1map", "T2map", "PDmap"):
            name = f"sub-{label}/sub-{label}_{suffix}.nii.gz"
            np.testing.assert_array_equal(
                np.asarray(nib.load(tmp_path / "full" / name).dataobj),
                np.asarray(nib.load(tmp_path / "ok" / name).dataobj),
            )


# ----------------------------------------------------------------------------- bundles


def _bundle_run(config: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(config), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**ENV, "PYTHONWARNINGS": "ignore"},
        cwd=REPO,
    )


def test_bundle_runs_end_in_one_error_line(files, tmp_path):
    """``python -m monai.bundle run``: a missing weights file, and a failing subject (both at once)."""
    ds_good, ds_mixed = tmp_path / "good", tmp_path / "mixed"
    _subject(ds_good, "a", files["good"])
    _subject(ds_mixed, "a", files["good"])
    _subject(ds_mixed, "bad", files["good"]).write_bytes(b"no HDF5")
    bundle = REPO / "bundles" / "mrf_iddpm" / "configs"
    missing = _bundle_run(
        bundle / "inference.json",
        "--meta_file",
        str(bundle / "metadata.json"),
        "--dataset_dir",
        str(ds_good),
        "--output_dir",
        str(tmp_path / "iddpm"),
        "--model_path",
        "/missing.pt",
    )
    failing = _bundle_run(
        REPO / "mrf_monai" / "pipeline" / "configs" / "svdmrf.json",
        "--dataset_dir",
        str(ds_mixed),
        "--output_dir",
        str(tmp_path / "svdmrf"),
        "--dictionary_path",
        str(files["dictionary"]),
        "--progress",
        "false",
    )
    _, missing_err = missing.communicate(timeout=300)
    _, failing_err = failing.communicate(timeout=300)
    assert missing.returncode != 0 and "Traceback" not in missing_err
    errors = [line for line in missing_err.splitlines() if line.startswith("error:")]
    assert errors == ["error: weights file /missing.pt does not exist"], missing_err
    assert not (tmp_path / "iddpm").exists() or not list((tmp_path / "iddpm").iterdir())

    assert failing.returncode != 0 and "Traceback" not in failing_err
    errors = [line for line in failing_err.splitlines() if line.startswith("error:")]
    assert errors == [
        "error: ReconstructionFailed: svdmrf: 1 of 2 subject(s) failed (see the messages above)"
    ]
    assert [line for line in failing_err.splitlines() if line.startswith("sub-bad:")] == [
        f"sub-bad: {ds_mixed / 'sub-bad' / 'raw.h5'}: not an HDF5 file (no HDF5 signature; truncated at the "
        "start or a different format). mrf_monai reads ISMRMRD HDF5 raw data."
    ]
    assert sorted(p.name for p in (tmp_path / "svdmrf").iterdir()) == ["sub-a"]
    _assert_exact_maps(tmp_path / "svdmrf" / "sub-a")


# ----------------------------------------------------------------------------- help


def test_help_shows_defaults_and_the_options_of_every_method(capsys):
    with pytest.raises(SystemExit) as info:
        main(["reconstruct", "--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    flat = " ".join(text.split())
    for default in (
        "(default: 0.15)",
        "(default: s)",
        "(default: $MRF_MONAI_CACHE, else ~/.cache/mrf_monai)",
    ):
        assert default in flat
    assert "2 a wrong setting" in flat and "143 after SIGTERM" in flat
    for method in ("svdmrf", "lrtv", "unet", "iddpm"):
        block = flat.split(f" {method}: ", 1)[1]
        for key, value in method_options(method).items():
            shown = "(computed)" if isinstance(value, str) and value.startswith("$") else json.dumps(value)
            assert f"{key}={shown}" in block, (method, key)


def test_list_options_prints_keys_and_defaults(capsys):
    assert main(["reconstruct", "--list-options", "iddpm"]) == 0
    lines = capsys.readouterr().out.splitlines()
    options = method_options("iddpm")
    assert lines == [f"{key} = {json.dumps(value)}" for key, value in options.items()]
    assert "n_samples = 10" in lines and 'sampling_method = "ddim"' in lines
    assert main(["reconstruct", "--list-options", "nope"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "unknown reconstruction method 'nope'; available:" in err[0]
