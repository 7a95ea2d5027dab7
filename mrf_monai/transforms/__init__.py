"""MONAI transforms of mrf_monai (array transforms with dictionary ``...d`` twins).

Names are imported lazily (on first attribute access) to keep ``import mrf_monai.transforms``
cheap.
"""

from __future__ import annotations

import importlib

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
    "intensity": ("NormalizeByCondition", "NormalizeByConditiond", "condition_scale", "denormalize"),
    "subspace": ("SubspaceCompress", "SubspaceCompressd", "SubspaceExpand", "SubspaceExpandd"),
    "gridding": ("GridSubspace", "GridSubspaced"),
    "matching": ("DictionaryMatch", "DictionaryMatchd"),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = sorted(_WHERE)


def __getattr__(name: str):
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'mrf_monai.transforms' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
