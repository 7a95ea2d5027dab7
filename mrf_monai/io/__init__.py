"""File I/O of mrf_monai: the data contract (``docs/data-contract.md``) lives here.

Names are imported lazily (on first attribute access) so that ``import mrf_monai.io`` stays
cheap and does not pull in h5py, nibabel, pydicom or torch until they are needed.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "atomic": ("atomic_write_path", "atomic_write", "temporary_name"),
    "ismrmrd": (
        "RawDataError",
        "RawSubject",
        "read_raw",
        "write_raw",
        "sequence_to_header",
        "sequence_from_header",
        "build_header",
    ),
    "subjects": ("find_subjects", "subject_label", "read_reference", "write_reference", "reference_path"),
    "nifti": ("write_maps", "save_nifti", "load_nifti"),
    "dicom": ("write_dicom_series", "write_dicom_maps", "DicomSeries"),
    "dictionary": ("save_dictionary", "load_dictionary", "cached_dictionary", "default_cache_dir"),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = sorted(_WHERE)


def __getattr__(name: str):
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'mrf_monai.io' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
