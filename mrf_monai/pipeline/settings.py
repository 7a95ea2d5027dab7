"""Checks and helpers that run before any subject: devices, output folders, subjects, readers.

Everything a run can know to be wrong before it reads the first raw file is checked here, so
that a mistyped device or an unwritable output folder fails in a second with one clear line,
not after minutes of reconstruction.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "resolve_device",
    "check_device",
    "check_output_dir",
    "check_mask_threshold",
    "subjects_for_rank",
    "raw_reader",
    "set_num_threads",
    "load_noise_covariance",
    "check_b1_path",
]


def check_device(device: Any) -> None:
    """Raise ``ValueError`` (what to do) unless ``device`` names a device this machine has."""
    import torch

    if device is None or str(device) == "auto":
        return
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError) as err:
        raise ValueError(
            f"--device {device!r} is not a torch device; use cpu, cuda, cuda:1, mps or auto"
        ) from err
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"--device {device}: this PyTorch has no CUDA device (build {torch.__version__}); "
                "use --device cpu, or install a CUDA build of PyTorch"
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) here")
    elif dev.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise ValueError(f"--device {device}: MPS is not available here; use --device cpu")


def resolve_device(device: Any = "auto") -> Any:
    """``"auto"``/``None``: ``cuda:<LOCAL_RANK>`` when CUDA is available (torchrun), else CPU.

    Raises:
        ValueError: a device this machine does not have (see :func:`check_device`).
    """
    import torch

    if device is None or str(device) == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)) % torch.cuda.device_count())
        return torch.device("cpu")
    check_device(device)
    return torch.device(device)


def check_output_dir(path: str | os.PathLike) -> Path:
    """Prove that ``path`` is (or can be created as) a writable folder, leaving nothing; returns it.

    A hidden probe folder with one file is created (in ``path``, or in its nearest existing
    parent when ``path`` does not exist yet) and removed: permissions, read-only mounts and a
    parent that is a file are all caught, also for root, whom permission bits do not stop.

    Raises:
        ValueError: it is a file, or it (or the folder it would be created in) cannot be written.
    """
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise ValueError(f"output {out} exists and is not a folder; choose another --output")
    where = out.absolute()
    while not where.exists() and where != where.parent:
        where = where.parent
    if not where.is_dir():
        raise ValueError(f"cannot create the output folder {out}: {where} is not a folder")
    try:
        probe = Path(tempfile.mkdtemp(prefix=".mrf-monai-write-test-", dir=where))
        try:
            (probe / "probe").write_bytes(b"")
            (probe / "probe").unlink()
        finally:
            probe.rmdir()
    except OSError as err:
        what = "write to the output folder" if out.is_dir() else f"create the output folder {out} in"
        raise ValueError(f"cannot {what} {where}: {err.strerror or err}; choose another --output") from err
    return out


def check_mask_threshold(value: float) -> float:
    """The background threshold must lie in [0, 1) (a fraction of the largest |PD|)."""
    v = float(value)
    if not 0.0 <= v < 1.0:
        raise ValueError(f"mask threshold {value} is outside [0, 1): it is a fraction of the largest |PD|")
    return v


def subjects_for_rank(
    inputs: str | os.PathLike | Sequence[str | os.PathLike],
    process_rank: int | None = None,
    world_size: int | None = None,
) -> list[Path]:
    """This process's share of the subjects of ``inputs`` (dataset or subject folders).

    Under ``torchrun`` (``RANK``/``WORLD_SIZE`` in the environment, or given explicitly) process
    ``r`` takes subjects ``r, r + W, r + 2W, ...`` of the sorted list; otherwise all of them.

    Raises:
        FileNotFoundError: no subject in ``inputs``.
    """
    from mrf_monai.io.subjects import find_subjects

    process_rank = int(os.environ.get("RANK", 0)) if process_rank is None else int(process_rank)
    world_size = int(os.environ.get("WORLD_SIZE", 1)) if world_size is None else int(world_size)
    if world_size < 1 or not 0 <= process_rank < world_size:
        raise ValueError(f"need 0 <= process_rank < world_size, got {process_rank} and {world_size}")
    paths = [inputs] if isinstance(inputs, str | os.PathLike) else list(inputs)
    subjects = sorted(Path(p) for p in find_subjects(paths))
    if not subjects:
        raise FileNotFoundError(f"no subjects (sub-<label>/raw.h5) in {', '.join(str(p) for p in paths)}")
    return subjects[process_rank::world_size]


def raw_reader(trajectory: str | os.PathLike | None = None, **options: Any) -> Callable[[Path], Any]:
    """``path -> RawSubject``: :func:`mrf_monai.io.ismrmrd.read_raw`, with a trajectory file for
    raw files that carry none (data contract section 5) and the reader's other options."""
    from mrf_monai.io.ismrmrd import read_raw

    if trajectory is None and not options:
        return read_raw
    if trajectory is not None and not Path(trajectory).is_file():
        raise FileNotFoundError(f"trajectory file {trajectory} not found")

    def read(path: Path) -> Any:
        return read_raw(path, trajectory=trajectory, **options)

    return read


def set_num_threads(n: int | None) -> int | None:
    """``torch.set_num_threads(n)`` when ``n`` is given; returns ``n``."""
    if n:
        import torch

        torch.set_num_threads(int(n))
    return n


def load_noise_covariance(value: Any) -> Any:
    """The ``noise_covariance`` option as a ``(C, C)`` array: ``None`` (use the raw file's noise
    scan), a NumPy ``.npy`` file (complex allowed) or a nested list of numbers.

    Raises:
        ValueError: not a square matrix, or an unreadable file (named).
    """
    import numpy as np

    if value is None:
        return None
    if isinstance(value, str | os.PathLike):
        path = Path(value)
        if not path.is_file():
            raise FileNotFoundError(f"noise covariance file {path} not found (a (C, C) NumPy .npy file)")
        try:
            cov = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as err:
            raise ValueError(f"{path}: cannot be read as a NumPy .npy array ({err})") from err
        where = str(path)
    else:
        cov = np.asarray(value)
        where = "noise_covariance"
    if cov.ndim != 2 or cov.shape[0] != cov.shape[1] or not np.issubdtype(cov.dtype, np.number):
        raise ValueError(f"{where}: a noise covariance is a (C, C) matrix of numbers, got shape {cov.shape}")
    return cov


def check_b1_path(b1_path: str | os.PathLike | None, subjects: Sequence[str | os.PathLike]) -> None:
    """Check a B1 map given for a run before the first subject: it must exist, and a file (one
    subject's map) only goes with one subject; several subjects need a folder of
    ``sub-<label>_TB1map.nii.gz`` maps (:class:`~mrf_monai.transforms.b1.LoadB1Mapd`).

    Raises:
        ValueError: a missing path, or one file for several subjects.
    """
    if b1_path is None:
        return
    path = Path(b1_path)
    if not path.exists():
        raise ValueError(
            f"B1 map {path} not found (--b1: a B1 map file for one subject, or a folder of "
            "sub-<label>_TB1map.nii.gz maps)"
        )
    if path.is_file() and len(subjects) > 1:
        raise ValueError(
            f"--b1 {path} is one B1 map file but {len(subjects)} subjects are reconstructed; give a folder "
            "of sub-<label>_TB1map.nii.gz maps (directly or in sub-<label>/ or sub-<label>/b1/), or leave "
            "--b1 out to read each subject's b1/sub-<label>_TB1map.nii.gz"
        )
