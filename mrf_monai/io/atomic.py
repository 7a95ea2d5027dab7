"""Atomic file writing: write under a temporary name in the same folder, then rename.

A reader (another process, a viewer, a resumed run) never sees a half-written file: the
final name appears only once the file is complete, because ``os.replace`` within one folder
is atomic on POSIX and Windows. Every writer of :mod:`mrf_monai.io` goes through
:func:`atomic_write_path`.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["atomic_write_path", "atomic_write", "temporary_name", "TEMP_MARKER"]

#: Text that every temporary name contains (``.<stem>.tmp-<pid>-<token><suffix>``).
TEMP_MARKER = ".tmp-"

#: Multi-part suffixes kept at the end of temporary names so that writers that infer the
#: format from the file name (nibabel, for example) still work on the temporary path.
_COMPOUND_SUFFIXES = (".nii.gz", ".tar.gz")


def _split_suffix(name: str) -> tuple[str, str]:
    for compound in _COMPOUND_SUFFIXES:
        if name.endswith(compound) and len(name) > len(compound):
            return name[: -len(compound)], compound
    suffix = Path(name).suffix
    return (name[: -len(suffix)], suffix) if suffix else (name, "")


def temporary_name(path: str | os.PathLike) -> Path:
    """The temporary path used while writing ``path``.

    It lies in the same folder, is hidden (leading dot), contains :data:`TEMP_MARKER`, the
    process id and a random token, and keeps the file's suffix (``.nii.gz``, ``.h5``,
    ``.dcm``, ...), e.g. ``sub-01_T1map.nii.gz`` -> ``.sub-01_T1map.tmp-4242-9f3a1c.nii.gz``.
    """
    path = Path(path)
    stem, suffix = _split_suffix(path.name)
    return path.with_name(f".{stem}{TEMP_MARKER}{os.getpid()}-{secrets.token_hex(3)}{suffix}")


@contextmanager
def atomic_write_path(path: str | os.PathLike, make_parents: bool = True) -> Iterator[Path]:
    """Context manager yielding a temporary path to write instead of ``path``.

    On normal exit the temporary file is flushed to disk and renamed to ``path``
    (replacing an existing file); if the block raises, the temporary file is removed and
    the exception propagates, leaving any previous ``path`` untouched.

    Args:
        path: final file name.
        make_parents: create the parent folder if it does not exist.

    Example::

        with atomic_write_path(out / "raw.h5") as tmp:
            write_something(tmp)
    """
    path = Path(path)
    if make_parents:
        path.parent.mkdir(parents=True, exist_ok=True)
    elif not path.parent.is_dir():
        raise FileNotFoundError(f"cannot write {path}: folder {path.parent} does not exist")
    tmp = temporary_name(path)
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(
                f"writing {path}: nothing was written to the temporary file {tmp.name}; "
                "the writer must create the file at the path that atomic_write_path yields"
            )
        try:
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError:  # fsync is best effort (some file systems refuse it)
            pass
        os.replace(tmp, path)
    except BaseException:
        try:
            tmp.unlink()
        except FileNotFoundError:
            pass
        raise


#: Alias used in ``docs/interfaces.md``.
atomic_write = atomic_write_path
