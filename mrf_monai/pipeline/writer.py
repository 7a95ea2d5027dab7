"""Writing one reconstructed subject: the maps of the data contract and what goes with them.

Output folder of one subject (besides the maps, their sidecars and, for probabilistic methods,
the ``desc-std`` maps of the data contract):

- ``sub-<label>_TB1map.nii.gz`` (and its sidecar): the relative B1+ map matched as a free
  dictionary parameter, written only when B1 was free (``b1_policy="free"`` without a map;
  :class:`~mrf_monai.transforms.b1.MatchedB1d`), on the grid of the maps, 0 outside the mask.
  The same name and grid as a subject's input map (data contract section 5), so the folder can
  be given as ``b1_path`` to a later run.

- ``sub-<label>_desc-compressed_TSMI.nii.gz``: complex64 ``(Nx, Ny, S, R)`` compressed TSMI
  with a JSON sidecar giving the sequence and the rank (used by the evaluation's TSMI
  metrics).
- ``timing.json``: ``{"method", "device", "n_slices", "seconds_per_slice"`` (list, the
  method's reconstruction plus matching of each slice), ``"reconstruction_seconds"``,
  ``"matching_seconds"`` (lists), ``"mean_seconds_per_slice"``, ``"total_seconds"``
  (the whole subject, reading and writing included)``}`` and the matching settings.
- ``dicom/`` (optional): one DICOM series per map.

Every map sidecar also records what the front end did for the subject
(:func:`mrf_monai.transforms.gridding.merge_acquisition_info` of the slices'
``acquisition_info``): ``NoisePrewhitening``, ``CoilCompression``, ``CoilMaps`` and ``B1`` (the
handling: ``"map"``, ``"free"`` or ``"ignore"``, the map file and the dictionary's B1 grid); a
value that differs between slices is a list with one entry per slice.

Everything is written into a hidden temporary folder and published with
:func:`mrf_monai.io.folders.staged_folder`: a reader never sees a half-written folder, and files
of an earlier ``sub-<label>/`` that this writer does not own (a user's notes; an earlier
``dicom/`` when this run writes none) are kept.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["SubjectWriter", "TIMING_FILE", "TSMI_SUFFIX", "B1_MAP_SUFFIX", "OWNED_PATTERNS"]

#: Name of the per-subject timing file.
TIMING_FILE = "timing.json"
#: BIDS-style suffix of the compressed TSMI written next to the maps.
TSMI_SUFFIX = "desc-compressed_TSMI"
#: BIDS suffix of the matched B1+ map (free B1), as the data contract's input B1 maps.
B1_MAP_SUFFIX = "TB1map"
#: Order of the front end's record in the sidecars (other sections follow).
_INFO_SECTIONS = ("NoisePrewhitening", "CoilCompression", "CoilMaps", "B1")
#: Names inside ``sub-<label>/`` that a reconstruction owns: an earlier run's files with these
#: names are replaced or dropped, everything else in the folder is kept.
OWNED_PATTERNS = (
    "sub-*_*map.nii.gz",
    "sub-*_*map.json",
    f"sub-*_{B1_MAP_SUFFIX}.*",
    f"sub-*_{TSMI_SUFFIX}.*",
    TIMING_FILE,
)

_MAP_KEYS = {
    "t1_s": "T1map",
    "t2_s": "T2map",
    "pd": "PDmap",
    "t1_std_s": "desc-std_T1map",
    "t2_std_s": "desc-std_T2map",
}


class SubjectWriter:
    """Writes the per-slice results of one subject as one output folder.

    Args:
        output_dir: the dataset's output folder; each subject goes to ``sub-<label>/``.
        method_name: the method named in the sidecars and ``timing.json``.
        units: ``"s"`` or ``"ms"`` for the T1/T2 maps.
        write_dicom: also write DICOM series into ``sub-<label>/dicom/``.
        sidecar_extra: extra fields for every map sidecar (e.g. the sampler's settings).
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        method_name: str,
        units: str = "s",
        write_dicom: bool = False,
        sidecar_extra: Mapping[str, Any] | None = None,
    ) -> None:
        if units not in ("s", "ms"):
            raise ValueError(f"units must be 's' or 'ms'; got {units!r}")
        self.output_dir = Path(output_dir)
        self.method_name = str(method_name)
        self.units = units
        self.write_dicom = bool(write_dicom)
        self.sidecar_extra = dict(sidecar_extra or {})

    def owned_patterns(self) -> tuple[str, ...]:
        """Names this writer owns in a subject folder (see :data:`OWNED_PATTERNS`)."""
        return OWNED_PATTERNS + (("dicom",) if self.write_dicom else ())

    def __call__(
        self,
        label: str,
        slices: Sequence[Mapping[str, Any]],
        affine: np.ndarray,
        timing: Mapping[str, Any],
        sequence: Any = None,
        raw: Any = None,
    ) -> Path:
        """Write one subject.

        Args:
            label: the subject's ``<label>``.
            slices: per slice (in order) a mapping with ``t1_s``, ``t2_s``, ``pd``, ``mask``,
                ``tsmi`` (``(R, Nx, Ny)`` complex) and optionally ``t1_std_s``, ``t2_std_s``,
                ``b1_matched`` (tensors or arrays of shape ``(Nx, Ny)``) and
                ``acquisition_info`` (the front end's record of the slice).
            affine: the subject's 4x4 RAS+ affine (``RawSubject.affine()``).
            timing: the content of ``timing.json``.
            sequence: the ``MRFSequence`` (recorded in the sidecars).
            raw: the ``RawSubject`` (for the DICOM acquisition metadata).

        Returns:
            the published ``sub-<label>`` folder.
        """
        from mrf_monai.io.folders import staged_folder
        from mrf_monai.io.nifti import write_maps

        if not slices:
            raise ValueError(f"sub-{label}: no slice to write")
        stacked = {k: np.stack([_numpy(s[k]) for s in slices], axis=-1) for k in slices[0] if k in _MAP_KEYS}
        missing = {"t1_s", "t2_s", "pd"} - set(stacked)
        if missing:
            raise KeyError(f"sub-{label}: the reconstruction produced no {sorted(missing)} map")
        tsmi = np.stack([np.moveaxis(_numpy(s["tsmi"]), 0, -1) for s in slices], axis=2).astype(np.complex64)
        final = self.output_dir / f"sub-{label}"
        with staged_folder(final, owned=self.owned_patterns()) as tmp:  # removed on any error or interrupt
            nifti_maps = {_MAP_KEYS[k]: v.astype(np.float32) for k, v in stacked.items()}
            extra = {
                "MaskThreshold": timing.get("mask_threshold"),
                **acquisition_info(slices),
                **self.sidecar_extra,
            }
            write_maps(
                tmp,
                label,
                nifti_maps,
                affine,
                self.method_name,
                units=self.units,
                sidecar_extra=extra,
                sequence=sequence,
            )
            b1 = matched_b1(slices)
            if b1 is not None:
                b1_extra = {**extra, "Units": "ratio", "Description": _B1_DESCRIPTION}
                write_maps(
                    tmp,
                    label,
                    {B1_MAP_SUFFIX: b1},
                    affine,
                    self.method_name,
                    sidecar_extra=b1_extra,
                    sequence=sequence,
                )
            self._write_tsmi(tmp, label, tsmi, affine, sequence)
            if self.write_dicom:
                self._write_dicom(tmp, label, nifti_maps, affine, sequence, raw)
            (tmp / TIMING_FILE).write_text(json.dumps(dict(timing), indent=2) + "\n")
        return final

    def _write_tsmi(
        self, folder: Path, label: str, tsmi: np.ndarray, affine: np.ndarray, sequence: Any
    ) -> None:
        import nibabel as nib

        img = nib.Nifti1Image(tsmi, affine)
        img.header.set_xyzt_units("mm")
        img.header["descrip"] = b"compressed TSMI (complex, last axis: subspace component)"
        nib.save(img, str(folder / f"sub-{label}_{TSMI_SUFFIX}.nii.gz"))
        sidecar = {
            "Description": "compressed time-series magnetisation images basis^H x; "
            "axes (i, j, slice, component)",
            "Rank": int(tsmi.shape[-1]),
            "Sequence": sequence.to_dict() if sequence is not None else None,
        }
        (folder / f"sub-{label}_{TSMI_SUFFIX}.json").write_text(json.dumps(sidecar, indent=2) + "\n")

    def _write_dicom(
        self,
        folder: Path,
        label: str,
        maps: Mapping[str, np.ndarray],
        affine: np.ndarray,
        sequence: Any,
        raw: Any,
    ) -> None:
        from mrf_monai.io import dicom

        metadata = dict(dicom.raw_dicom_metadata(raw)) if raw is not None else {"sequence": sequence}
        dicom.write_dicom_maps(
            folder / "dicom", label, dict(maps), affine, units=self.units, method=self.method_name, **metadata
        )


_B1_DESCRIPTION = (
    "relative B1+ transmit field (1 = nominal flip angle) matched as a free dictionary parameter "
    "(the B1 of each voxel's best atom, on the dictionary's B1 grid)"
)


def acquisition_info(slices: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The subject's front-end record for the sidecars: the slices' ``acquisition_info`` merged
    (:func:`~mrf_monai.transforms.gridding.merge_acquisition_info`), in the order of
    ``NoisePrewhitening``, ``CoilCompression``, ``CoilMaps``, ``B1``; empty without records."""
    from mrf_monai.transforms.gridding import merge_acquisition_info

    merged = merge_acquisition_info([s.get("acquisition_info") for s in slices])
    order = [k for k in _INFO_SECTIONS if k in merged] + [k for k in merged if k not in _INFO_SECTIONS]
    return {k: merged[k] for k in order}


def matched_b1(slices: Sequence[Mapping[str, Any]]) -> np.ndarray | None:
    """The ``(Nx, Ny, S)`` float32 matched B1 map of free-B1 matching, or ``None`` when no slice has
    one (a slice without one, which cannot happen within one subject's run, is 0: unknown)."""
    maps = [s.get("b1_matched") for s in slices]
    if all(m is None for m in maps):
        return None
    shape = next(_numpy(m).shape for m in maps if m is not None)
    return np.stack(
        [np.zeros(shape, np.float32) if m is None else _numpy(m).astype(np.float32) for m in maps], axis=-1
    )


def _numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)
