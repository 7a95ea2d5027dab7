"""The reconstruction pipeline every method shares: raw data -> maps, as MONAI components.

- :mod:`.methods`: each method is a MONAI config (``svdmrf``, ``lrtv`` in ``pipeline/configs``;
  ``unet``, ``iddpm`` in their bundles); :func:`build_run` parses one with overrides.
- :mod:`.runner`: :class:`SubjectRunner`, the loop over subjects and slices (preprocessing,
  inferer, postprocessing, writer), with per-subject failure isolation.
- :mod:`.writer`: :class:`SubjectWriter`, the atomic output folder of one subject.
- :mod:`.settings`: checks that run before any subject (device, output folder, ...).
- :func:`reconstruct_dataset`: the Python entry point (``mrf-monai reconstruct`` calls it).

Names are imported lazily so that ``mrf-monai --help`` stays fast.
"""

from __future__ import annotations

from mrf_monai._lazy import lazy_exports

_EXPORTS = {
    "methods": (
        "MethodConfig",
        "register_method",
        "available_methods",
        "method_config",
        "method_options",
        "build_run",
        "config_error_message",
        "parse_options",
    ),
    "runner": ("SubjectRunner", "ReconstructionFailed"),
    "writer": ("SubjectWriter", "TIMING_FILE", "TSMI_SUFFIX"),
    "settings": (
        "resolve_device",
        "check_device",
        "check_output_dir",
        "check_mask_threshold",
        "subjects_for_rank",
        "raw_reader",
        "set_num_threads",
        "load_noise_covariance",
        "check_b1_path",
    ),
    "dataset": ("reconstruct_dataset",),
}
__all__, __getattr__, __dir__ = lazy_exports(__name__, globals(), _EXPORTS)
