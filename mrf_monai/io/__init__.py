"""File I/O of mrf_monai: the data contract (``docs/data-contract.md``) lives here.

Names are imported lazily (on first attribute access) so that ``import mrf_monai.io`` stays
cheap and does not pull in h5py, nibabel, pydicom or torch until they are needed.
"""

from __future__ import annotations

from mrf_monai._lazy import lazy_exports

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
    "dicom": ("write_dicom_series", "write_dicom_maps", "DicomSeries", "raw_dicom_metadata"),
    "dictionary": ("save_dictionary", "load_dictionary", "cached_dictionary", "default_cache_dir"),
    "trajectory_file": ("read_trajectory_file", "write_trajectory_file", "TrajectoryData"),
    "weights": ("save_weights", "load_weights", "load_hyper_parameters", "load_network", "WeightsFileError"),
    "folders": ("publish_folder", "temporary_folder", "recover_interrupted"),
}
__all__, __getattr__, __dir__ = lazy_exports(__name__, globals(), _EXPORTS)
