"""One-line error messages for ``python -m monai.bundle run`` with this project's bundles.

MONAI wraps every error raised while a config is instantiated or evaluated in a
``RuntimeError("Failed to evaluate ConfigExpression: ...")`` (and Compose in
``RuntimeError("applying transform ...")``) and the interpreter then prints 50 lines of
traceback around the one line that matters. Importing this module (the bundles' ``imports`` do)
installs an exception hook for the bundle process that prints only that line, the innermost
error's message, and exits with status 1. ``MRF_MONAI_TRACEBACK=1`` restores the full traceback.
Interactive sessions and other hooks are left alone: the hook is installed only over Python's
default hook.
"""

from __future__ import annotations

import os
import sys
from types import TracebackType

__all__ = ["innermost", "install"]

_WRAPPERS = ("Failed to evaluate", "Failed to instantiate", "applying transform", "Component to instantiate")


def innermost(err: BaseException) -> BaseException:
    """The original error inside MONAI's config and transform wrappers."""
    seen: set[int] = set()
    while id(err) not in seen:
        seen.add(id(err))
        nxt = err.__cause__ or err.__context__
        if nxt is None:
            break
        err = nxt
    return err


def _is_wrapped(err: BaseException) -> bool:
    return isinstance(err, RuntimeError) and str(err).lstrip().startswith(_WRAPPERS)


def _hook(kind: type[BaseException], value: BaseException, tb: TracebackType | None) -> None:
    if os.environ.get("MRF_MONAI_TRACEBACK") or not _is_wrapped(value):
        sys.__excepthook__(kind, value, tb)
        return
    inner = innermost(value)
    text = str(inner).strip().splitlines()[0] if str(inner).strip() else type(inner).__name__
    name = "" if isinstance(inner, ValueError | OSError | KeyError) else f"{type(inner).__name__}: "
    print(f"error: {name}{text}", file=sys.stderr)
    print("(set MRF_MONAI_TRACEBACK=1 for the full traceback)", file=sys.stderr)


def install() -> None:
    """Install the hook (only over Python's default one)."""
    if sys.excepthook is sys.__excepthook__:
        sys.excepthook = _hook


install()
