"""Lazy exports of a package's names from its sub-modules (imported on first attribute access).

A package ``__init__`` declares ``{module: (names, ...)}`` and calls :func:`lazy_exports`, so that
``import mrf_monai.transforms`` (or ``mrf-monai --help``) imports no sub-module, PyTorch or MONAI
until a name is used.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(
    package: str, namespace: dict[str, Any], exports: Mapping[str, Sequence[str]]
) -> tuple[list[str], Callable[[str], Any], Callable[[], list[str]]]:
    """``(__all__, __getattr__, __dir__)`` of ``package`` exporting ``exports``.

    Args:
        package: the package's ``__name__``.
        namespace: its ``globals()`` (a resolved name is cached there).
        exports: sub-module name -> the names it exports.
    """
    where = {name: module for module, names in exports.items() for name in names}
    names = sorted(where)

    def __getattr__(name: str) -> Any:
        module = where.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{module}"), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(names))

    return names, __getattr__, __dir__
