"""``reconstruct_dataset``: the Python entry point of the pipeline (``mrf-monai reconstruct``)."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

__all__ = ["reconstruct_dataset"]


def reconstruct_dataset(
    inputs: str | os.PathLike | Sequence[str | os.PathLike],
    output_dir: str | os.PathLike,
    method: str,
    options: Mapping[str, Any] | None = None,
    dictionary: Any = None,
    dictionary_path: str | os.PathLike | None = None,
    write_dicom: bool = False,
    units: str = "s",
    device: str | None = None,
    coarse_to_fine: bool = True,
    mask_threshold: float = 0.15,
    cache_dir: str | os.PathLike | None = None,
    trajectory: str | os.PathLike | None = None,
    b1_path: str | os.PathLike | None = None,
    bundle: str | os.PathLike | None = None,
    extra_configs: Iterable[str | os.PathLike] = (),
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> int:
    """Reconstruct every subject of ``inputs`` with ``method`` into ``output_dir``.

    The method's MONAI config (:mod:`mrf_monai.pipeline.methods`) is parsed with these settings and
    ``options`` as overrides, and its runner is run. Settings are checked before any subject is
    read (device, output folder, option names, mask threshold, the weights of learned methods).

    Args:
        inputs: dataset folder(s) and/or subject folder(s).
        output_dir: where ``sub-<label>/`` folders are written (created if needed).
        method: a registered method name (``svdmrf``, ``lrtv``, ``unet``, ``iddpm``, ...).
        options: method options (the config's keys, e.g. ``{"n_samples": 8}``).
        dictionary: an ``MRFDictionary`` for every subject (each subject's sequence must match it).
        dictionary_path: an HDF5 dictionary file instead (``None`` with ``dictionary=None``: the
            cached dictionary of each raw file's sequence).
        write_dicom: also write DICOM series.
        units: ``"s"`` or ``"ms"`` for the T1/T2 maps.
        device: torch device of the method and the matching (``None``: the config's default).
        coarse_to_fine: the exact clustered matching search (``False``: brute force).
        mask_threshold: background threshold, a fraction of the largest ``|PD|``.
        cache_dir: dictionary cache folder.
        trajectory: a trajectory file for raw files without trajectories (data contract section 5).
        b1_path: a B1+ map file (one subject) or a folder of ``sub-<label>_TB1map.nii.gz`` maps
            instead of each subject's ``b1/sub-<label>_TB1map.nii.gz`` (the method option
            ``b1_path``; ``docs/scanner-data.md``).
        bundle: another bundle folder for the learned methods.
        extra_configs: config files merged over the method's (e.g. ``inference_fast.json``).
        progress: tqdm progress bars.
        log: where messages go (default stderr).

    Returns:
        0 when every subject was written, 1 when at least one failed.

    Raises:
        ValueError: a setting is wrong (the message says which and what to do).
    """
    from .methods import build_run
    from .settings import check_b1_path, check_device, check_mask_threshold, check_output_dir

    if units not in ("s", "ms"):
        raise ValueError(f"units must be 's' or 'ms'; got {units!r}")
    check_device(device)
    check_mask_threshold(mask_threshold)
    out = check_output_dir(output_dir)
    paths = [inputs] if isinstance(inputs, str | os.PathLike) else list(inputs)
    overrides: dict[str, Any] = {
        "dataset_dir": [os.fspath(p) for p in paths],
        "output_dir": os.fspath(out),
        "units": units,
        "write_dicom": bool(write_dicom),
        "coarse_to_fine": bool(coarse_to_fine),
        "mask_threshold": float(mask_threshold),
        "cache_dir": None if cache_dir is None else os.fspath(cache_dir),
        "trajectory": None if trajectory is None else os.fspath(trajectory),
        "progress": bool(progress),
    }
    if dictionary is not None:
        overrides["dictionary"] = dictionary
    if dictionary_path is not None:
        overrides["dictionary_path"] = os.fspath(dictionary_path)
    if device is not None:
        overrides["device"] = device
    if b1_path is not None:
        overrides["b1_path"] = os.fspath(b1_path)
    for key, value in dict(options or {}).items():
        if key in overrides:
            raise ValueError(
                f"option {key!r} is a setting of its own; pass it as {key}=... to reconstruct_dataset"
            )
        overrides[key] = value
    if overrides.get("b1_path") is not None:  # a file is one subject's map: count the subjects
        from pathlib import Path

        from mrf_monai.io.subjects import find_subjects

        b1 = overrides["b1_path"]
        check_b1_path(b1, find_subjects(paths) if Path(b1).is_file() else [])
    runner = build_run(method, overrides, bundle=bundle, extra_configs=extra_configs)
    runner.log = log or _stderr
    return runner.run()


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
