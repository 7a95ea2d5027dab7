"""The per-subject reconstruction driver shared by every method, and the method registry.

A *method* is a :class:`Reconstructor`: given one subject's raw data, a slice index and the
dictionary of the subject's sequence, it returns the compressed TSMI of that slice (and,
for probabilistic methods, samples of it). :func:`reconstruct_dataset` does the rest for
all methods alike: finds the subjects, reads the raw data, gets the dictionary, matches,
computes standard-deviation maps over samples, and writes the maps, the TSMI and
``timing.json`` into ``<output>/sub-<label>/``.

Output folder of one subject (besides the maps of the data contract):

- ``sub-<label>_desc-compressed_TSMI.nii.gz``: complex64 ``(Nx, Ny, S, R)`` compressed TSMI
  with a JSON sidecar giving the sequence and the rank (used by the evaluation's TSMI
  metrics).
- ``timing.json``: ``{"method", "device", "n_slices", "seconds_per_slice"`` (list, the
  method's reconstruction plus matching of each slice), ``"reconstruction_seconds"``,
  ``"matching_seconds"`` (lists), ``"mean_seconds_per_slice"``, ``"total_seconds"``
  (the whole subject, reading and writing included)``}``.

Each subject is written into a hidden temporary folder that is renamed to
``sub-<label>`` once complete, so that an interrupted or failed subject leaves nothing
half-written behind.
"""

from __future__ import annotations

import importlib
import json
import os
import secrets
import shutil
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from .matching.match import build_atom_clusters, match_dictionary

__all__ = [
    "Reconstructor",
    "register_method",
    "get_method",
    "available_methods",
    "reconstruct_dataset",
    "reconstruct_subject",
    "check_dictionary",
    "TIMING_FILE",
    "TSMI_SUFFIX",
]

#: Name of the per-subject timing file.
TIMING_FILE = "timing.json"
#: BIDS-style suffix of the compressed TSMI written next to the maps.
TSMI_SUFFIX = "desc-compressed_TSMI"


@runtime_checkable
class Reconstructor(Protocol):
    """A reconstruction method.

    ``__call__(raw, slice_index, dictionary)`` returns a dict with ``"tsmi"``: the ``(R, Nx,
    Ny)`` complex compressed TSMI of slice ``slice_index`` of ``raw`` in the dictionary's
    subspace, and optionally ``"samples"``: ``(K, R, Nx, Ny)`` samples of it (probabilistic
    methods; ``"tsmi"`` is then their mean).
    """

    def __call__(self, raw: Any, slice_index: int, dictionary: Any) -> dict[str, torch.Tensor]: ...


#: name -> factory, or ``"module:attribute"`` imported on first use (methods of other
#: modules register themselves lazily here so that importing the pipeline stays light).
_REGISTRY: dict[str, Callable[..., Reconstructor] | str] = {
    "svdmrf": "mrf_monai.baselines.svdmrf:SVDMRFReconstructor",
    "iddpm": "mrf_monai.diffusion.reconstructor:IDDPMReconstructor",
    "lrtv": "mrf_monai.baselines.lrtv:LRTVReconstructor",
    "unet": "mrf_monai.baselines.unet:UNetReconstructor",
}


def register_method(name: str, factory: Callable[..., Reconstructor] | str, overwrite: bool = False) -> None:
    """Register a method factory (called with ``**options``) under ``name``.

    ``factory`` may be a callable or a ``"package.module:attribute"`` string imported when
    the method is first requested. Re-registering a name needs ``overwrite=True``, except
    to replace a lazy string by the object it names.
    """
    if not name or not name.replace("-", "").replace("_", "").isalnum():
        raise ValueError(f"method names are alphanumeric (with - or _); got {name!r}")
    current = _REGISTRY.get(name)
    if current is not None and not overwrite and current is not factory:
        if not (isinstance(current, str) and not isinstance(factory, str)):
            raise ValueError(f"method {name!r} is already registered; pass overwrite=True to replace it")
    _REGISTRY[name] = factory


def available_methods() -> list[str]:
    """Registered method names (whether or not their module can be imported here)."""
    return sorted(_REGISTRY)


def get_method(name: str) -> Callable[..., Reconstructor]:
    """The factory of method ``name``; call it with the method's options.

    Raises:
        ValueError: unknown name (lists the registered ones) or a module that cannot be
            imported (names the module and the reason).
    """
    if name not in _REGISTRY:
        raise ValueError(
            f"unknown reconstruction method {name!r}; available: {', '.join(available_methods())}"
        )
    factory = _REGISTRY[name]
    if isinstance(factory, str):
        module_name, _, attr = factory.partition(":")
        try:
            module = importlib.import_module(module_name)
            factory = getattr(module, attr)
        except (ImportError, AttributeError) as err:
            raise ValueError(
                f"reconstruction method {name!r} is not available: cannot load {module_name}:{attr} ({err})"
            ) from err
        _REGISTRY[name] = factory
    return factory


def check_dictionary(dictionary: Any, sequence: Any) -> None:
    """Raise ``ValueError`` unless ``dictionary`` was built for ``sequence``."""
    dseq = getattr(dictionary, "sequence", None)
    if dseq is None or not (dseq == sequence):
        n_d = getattr(dseq, "n_frames", "?")
        raise ValueError(
            f"the dictionary was built for a different sequence ({n_d} frames, "
            f"{getattr(dseq, 'name', '') or 'unnamed'}) than the raw data ({sequence.n_frames} frames, "
            f"{getattr(sequence, 'name', '') or 'unnamed'}); build one for this sequence "
            "(`mrf-monai dictionary`) or leave out --dictionary to use the cached one"
        )


def _subject_label(path: Path) -> str:
    from .io.subjects import subject_label

    return subject_label(path)


def _std_maps(samples: torch.Tensor, dictionary: Any, mask: torch.Tensor, match_options: Mapping) -> dict:
    """Standard deviation (ddof 0) of T1 and T2 over per-sample matches; 0 outside ``mask``."""
    t1, t2 = [], []
    for k in range(samples.shape[0]):
        r = match_dictionary(samples[k], dictionary, mask=mask, **match_options)
        t1.append(r["t1_s"])
        t2.append(r["t2_s"])
    zero = torch.zeros((), dtype=torch.float32, device=mask.device)
    return {
        "t1_std_s": torch.where(mask, torch.stack(t1).std(dim=0, correction=0), zero),
        "t2_std_s": torch.where(mask, torch.stack(t2).std(dim=0, correction=0), zero),
    }


def reconstruct_subject(
    raw: Any,
    method: Reconstructor,
    dictionary: Any,
    match_options: Mapping[str, Any] | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Reconstruct and match every slice of one subject.

    Returns:
        ``maps``: ``(Nx, Ny, S)`` float32 arrays ``t1_s``, ``t2_s``, ``pd``, ``pd_phase``,
        ``mask`` (uint8), ``tsmi`` (``(Nx, Ny, S, R)`` complex64) and, for methods that
        return samples, ``t1_std_s``, ``t2_std_s``; and ``timing`` (seconds per slice).
    """
    opts = {"mask_threshold": 0.15, "coarse_to_fine": True, **dict(match_options or {})}
    if opts.get("coarse_to_fine") is True:  # cluster once for all slices and samples
        opts["coarse_to_fine"] = build_atom_clusters(dictionary)
    std_opts = {k: v for k, v in opts.items() if k != "mask_threshold"}
    per_slice: list[dict[str, np.ndarray]] = []
    rec_s, match_s = [], []
    for s in range(raw.n_slices):
        t0 = time.perf_counter()
        out = method(raw, s, dictionary)
        if not isinstance(out, Mapping) or "tsmi" not in out:
            raise TypeError(
                f"the method returned {type(out).__name__}; a Reconstructor returns a dict with 'tsmi'"
            )
        tsmi = torch.as_tensor(out["tsmi"])
        if tsmi.ndim != 3 or tuple(tsmi.shape[1:]) != tuple(raw.matrix):
            raise ValueError(
                f"slice {s}: the method returned a TSMI of shape {tuple(tsmi.shape)}; "
                f"expected (R, {raw.matrix[0]}, {raw.matrix[1]})"
            )
        if tsmi.is_cuda:  # time the method's own work, not queued kernels
            torch.cuda.synchronize(tsmi.device)
        t1 = time.perf_counter()
        res = match_dictionary(tsmi, dictionary, **opts)
        maps = {k: res[k] for k in ("t1_s", "t2_s", "pd", "pd_phase")}
        maps["mask"] = res["mask"].to(torch.uint8)
        samples = out.get("samples")
        if samples is not None:
            maps.update(_std_maps(torch.as_tensor(samples), dictionary, res["mask"], std_opts))
        t2 = time.perf_counter()
        rec_s.append(t1 - t0)
        match_s.append(t2 - t1)
        row = {k: v.detach().cpu().numpy() for k, v in maps.items()}
        row["tsmi"] = np.moveaxis(tsmi.detach().cpu().numpy().astype(np.complex64), 0, -1)
        per_slice.append(row)
    stacked = {k: np.stack([r[k] for r in per_slice], axis=2) for k in per_slice[0]}
    for k, v in stacked.items():
        if k != "tsmi":
            stacked[k] = v.astype(np.uint8 if k == "mask" else np.float32)
    timing = {
        "n_slices": raw.n_slices,
        "reconstruction_seconds": rec_s,
        "matching_seconds": match_s,
        "seconds_per_slice": [a + b for a, b in zip(rec_s, match_s)],
    }
    timing["mean_seconds_per_slice"] = float(np.mean(timing["seconds_per_slice"]))
    timing["mask_threshold"] = float(opts["mask_threshold"])
    brute = opts.get("coarse_to_fine") in (False, None)
    timing["matching_search"] = "brute_force" if brute else "coarse_to_fine"
    return stacked, timing


def _write_tsmi(folder: Path, label: str, tsmi: np.ndarray, affine: np.ndarray, dictionary: Any) -> None:
    import nibabel as nib

    img = nib.Nifti1Image(tsmi.astype(np.complex64), affine)
    img.header.set_xyzt_units("mm")
    img.header["descrip"] = b"compressed TSMI (complex, last axis: subspace component)"
    nib.save(img, str(folder / f"sub-{label}_{TSMI_SUFFIX}.nii.gz"))
    seq = getattr(dictionary, "sequence", None)
    sidecar = {
        "Description": "compressed time-series magnetisation images basis^H x; axes (i, j, slice, component)",
        "Rank": int(tsmi.shape[-1]),
        "Sequence": seq.to_dict() if seq is not None else None,
    }
    (folder / f"sub-{label}_{TSMI_SUFFIX}.json").write_text(json.dumps(sidecar, indent=2))


def _write_subject(
    output_dir: Path,
    label: str,
    maps: dict[str, np.ndarray],
    affine: np.ndarray,
    method_name: str,
    units: str,
    dictionary: Any,
    timing: dict,
    write_dicom: bool,
) -> Path:
    from .io.nifti import write_maps

    final = output_dir / f"sub-{label}"
    tmp = output_dir / f".sub-{label}.tmp-{os.getpid()}-{secrets.token_hex(3)}"
    tmp.mkdir(parents=True)
    try:
        nifti_maps = {"T1map": maps["t1_s"], "T2map": maps["t2_s"], "PDmap": maps["pd"]}
        if "t1_std_s" in maps:
            nifti_maps["desc-std_T1map"] = maps["t1_std_s"]
            nifti_maps["desc-std_T2map"] = maps["t2_std_s"]
        extra = {"MaskThreshold": timing.get("mask_threshold", 0.15)}
        seq = getattr(dictionary, "sequence", None)
        write_maps(
            tmp, label, nifti_maps, affine, method_name, units=units, sidecar_extra=extra, sequence=seq
        )
        _write_tsmi(tmp, label, maps["tsmi"], affine, dictionary)
        if write_dicom:
            from .io.dicom import write_dicom_maps

            write_dicom_maps(tmp / "dicom", label, nifti_maps, affine, units=units, method=method_name)
        (tmp / TIMING_FILE).write_text(json.dumps(timing, indent=2))
        old = None
        if final.exists():
            old = output_dir / f".sub-{label}.old-{os.getpid()}-{secrets.token_hex(3)}"
            os.replace(final, old)
        os.replace(tmp, final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def reconstruct_dataset(
    inputs: str | os.PathLike | Sequence[str | os.PathLike],
    output_dir: str | os.PathLike,
    method: Reconstructor | str,
    dictionary: Any = None,
    write_dicom: bool = False,
    units: str = "s",
    method_name: str | None = None,
    device: str | torch.device | None = None,
    match_options: Mapping[str, Any] | None = None,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> int:
    """Reconstruct every subject of ``inputs`` with ``method`` into ``output_dir``.

    Args:
        inputs: dataset folder(s) and/or subject folder(s) (``io.subjects.find_subjects``).
        output_dir: where ``sub-<label>/`` folders are written (created if needed).
        method: a :class:`Reconstructor`, or a registered name (built without options).
        dictionary: an ``MRFDictionary`` to use for every subject; each subject's sequence
            must match it (otherwise that subject fails with a clear message). ``None``:
            ``io.dictionary.cached_dictionary(raw.sequence)`` per distinct sequence.
        write_dicom: also write DICOM series (``io.dicom.write_dicom_series``).
        units: ``"s"`` or ``"ms"`` for the T1/T2 maps.
        method_name: name written to sidecars and ``timing.json`` (default: the registered
            name, or the class name).
        device: device for matching (the dictionary is moved there).
        match_options: extra keyword arguments of :func:`match_dictionary`.
        cache_dir: dictionary cache folder (``cached_dictionary``).
        progress: show a tqdm progress bar.
        log: where to print failures and the summary (default ``stderr``).

    Returns:
        0 when every subject succeeded, 1 otherwise (also when no subject was found).
    """
    from tqdm.auto import tqdm

    from .io.ismrmrd import read_raw
    from .io.subjects import find_subjects

    if units not in ("s", "ms"):
        raise ValueError(f"units must be 's' or 'ms'; got {units!r}")
    if log is None:

        def log(msg: str) -> None:
            print(msg, file=sys.stderr, flush=True)

    if isinstance(method, str):
        method_name = method_name or method
        method = get_method(method)()
    method_name = method_name or type(method).__name__
    paths = [inputs] if isinstance(inputs, str | os.PathLike) else list(inputs)
    try:
        subjects = find_subjects(paths)
    except (OSError, ValueError) as err:
        log(str(err))
        return 1
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    dev = torch.device(device) if device is not None else None
    if dictionary is not None and dev is not None:
        dictionary = dictionary.to(dev)
    cache: dict[str, Any] = {}
    clusters: dict[int, Any] = {}  # atom clusters of the coarse-to-fine search, per dictionary
    failures: list[str] = []
    done = 0
    bar = tqdm(subjects, desc=f"{method_name}", unit="subject", disable=not progress, file=sys.stderr)
    for subject in bar:
        subject = Path(subject)
        try:
            label = _subject_label(subject)
        except Exception:
            label = subject.name.removeprefix("sub-")
        bar.set_postfix_str(f"sub-{label}")
        t_start = time.perf_counter()
        try:
            raw = read_raw(subject / "raw.h5")
            if dictionary is not None:
                check_dictionary(dictionary, raw.sequence)
                subject_dict = dictionary
            else:
                key = raw.sequence.key()
                if key not in cache:
                    from .io.dictionary import cached_dictionary

                    d = cached_dictionary(raw.sequence, cache_dir=cache_dir)
                    cache[key] = d.to(dev) if dev is not None else d
                subject_dict = cache[key]
            subject_options = dict(match_options or {})
            if subject_options.get("coarse_to_fine", True) is True:  # cluster each dictionary once
                if id(subject_dict) not in clusters:
                    clusters[id(subject_dict)] = build_atom_clusters(subject_dict)
                subject_options["coarse_to_fine"] = clusters[id(subject_dict)]
            maps, timing = reconstruct_subject(raw, method, subject_dict, subject_options)
            timing = {"method": method_name, "device": str(dev or "cpu"), **timing}
            timing["total_seconds"] = time.perf_counter() - t_start
            _write_subject(
                output_dir, label, maps, raw.affine(), method_name, units, subject_dict, timing, write_dicom
            )
            done += 1
        except KeyboardInterrupt:
            raise
        except Exception as err:  # one bad subject must not stop the others
            reason = str(err) if isinstance(err, ValueError | OSError) else f"{type(err).__name__}: {err}"
            failures.append(f"sub-{label}: {reason}")
            log(f"sub-{label}: {reason}")
    bar.close()
    if failures:
        log(f"{len(failures)} of {len(subjects)} subject(s) failed ({done} written to {output_dir}):")
        for f in failures:
            log(f"  {f}")
        return 1
    return 0


def parse_options(pairs: Iterable[str] | None) -> dict[str, Any]:
    """``["steps=50", "mean=true", "name=x"]`` -> ``{"steps": 50, "mean": True, "name": "x"}``."""
    options: dict[str, Any] = {}
    for pair in pairs or ():
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"options are key=value; got {pair!r}")
        low = value.lower()
        if low in ("true", "false"):
            options[key] = low == "true"
        elif low in ("none", "null"):
            options[key] = None
        else:
            try:
                options[key] = int(value)
            except ValueError:
                try:
                    options[key] = float(value)
                except ValueError:
                    options[key] = value
    return options
