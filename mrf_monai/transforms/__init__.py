"""MONAI transforms of mrf_monai (array transforms with dictionary ``...d`` twins).

Names are imported lazily (on first attribute access) to keep ``import mrf_monai.transforms``
cheap.
"""

from __future__ import annotations

from mrf_monai._lazy import lazy_exports

_EXPORTS = {
    "io": ("LoadRawSubject", "LoadRawSubjectd"),
    "complex": (
        "ComplexToChannels",
        "ComplexToChannelsd",
        "ChannelsToComplex",
        "ChannelsToComplexd",
        "complex_to_channels",
        "channels_to_complex",
    ),
    "intensity": (
        "NormalizeByCondition",
        "NormalizeByConditiond",
        "Denormalized",
        "ScaleChannelsd",
        "condition_scale",
        "denormalize",
    ),
    "subspace": (
        "SubspaceCompress",
        "SubspaceCompressd",
        "SubspaceExpand",
        "SubspaceExpandd",
        "SubspaceBasisd",
        "RotateSubspaced",
    ),
    "dictionary": ("DictionaryProvider", "AttachDictionaryd"),
    "samples": ("SampleMeand", "SampleStdMapsd", "pooled_std"),
    "protocol": ("CheckProtocold",),
    "gridding": ("GridSubspace", "GridSubspaced", "merge_acquisition_info"),
    "b1": ("LoadB1Map", "LoadB1Mapd", "MatchedB1d"),
    "matching": ("DictionaryMatch", "DictionaryMatchd"),
}
__all__, __getattr__, __dir__ = lazy_exports(__name__, globals(), _EXPORTS)
