"""Publishing a finished output folder atomically, and cleaning up after interrupted runs.

A subject's outputs are written into a hidden temporary folder beside the final one
(``.sub-<label>.tmp-<pid>-<token>``) and published only when complete:

- no folder yet: one ``os.rename`` (atomic);
- a folder from an earlier run: the files that the earlier folder holds and this run does
  not write (a user's notes, an earlier ``dicom/``) are first hard-linked (or copied) into the
  new folder, then the two folders are exchanged with one atomic ``renameat2(RENAME_EXCHANGE)``
  where the system offers it (Linux >= 3.15), else with two renames through a hidden
  ``.sub-<label>.old-<pid>-<token>`` folder. An error or an interrupt (Ctrl-C, or SIGTERM as
  ``mrf-monai`` turns it into an exception) between those two renames puts the old folder back
  at once; a kill (SIGKILL, power loss) leaves it hidden, and :func:`recover_interrupted` (run
  at the start of every run) puts it back.

So a reader sees either the old or the new complete folder, never a half-written one, and
files the run does not own survive a re-run.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import fnmatch
import os
import re
import secrets
import shutil
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = [
    "staged_folder",
    "temporary_folder",
    "publish_folder",
    "recover_interrupted",
    "exchange_folders",
    "TMP_FOLDER_MARKER",
    "OLD_FOLDER_MARKER",
]

TMP_FOLDER_MARKER = ".tmp-"
OLD_FOLDER_MARKER = ".old-"
_HIDDEN_RE = re.compile(r"^\.(?P<name>.+?)\.(?P<kind>tmp|old)-(?P<pid>\d+)-[0-9a-f]+$")
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _temporary_name(final: Path) -> Path:
    return final.with_name(f".{final.name}{TMP_FOLDER_MARKER}{os.getpid()}-{secrets.token_hex(3)}")


def temporary_folder(final: str | os.PathLike) -> Path:
    """Create and return a new hidden temporary folder beside ``final`` (same file system).

    The caller removes it on failure; :func:`staged_folder` does all of it, and also when an
    interrupt arrives right after the folder was created.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary_name(final)
    tmp.mkdir()
    return tmp


@contextmanager
def staged_folder(final: str | os.PathLike, owned: Iterable[str] = ()) -> Iterator[Path]:
    """Write a folder in one go: ``with staged_folder(final) as tmp: <write into tmp>``.

    Yields a new hidden temporary folder beside ``final``; when the block ends normally it is
    published as ``final`` (:func:`publish_folder` with ``owned``), when it raises (an error,
    ``KeyboardInterrupt``, ``SystemExit``...) the temporary folder is removed, from the moment
    it exists, and the exception propagates with an earlier ``final`` untouched.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary_name(final)
    try:
        tmp.mkdir()
        yield tmp
        publish_folder(tmp, final, owned)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _renameat2():
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


def exchange_folders(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Atomically exchange two existing paths (Linux ``renameat2(RENAME_EXCHANGE)``).

    Returns:
        ``True`` when exchanged, ``False`` when the system does not support it (nothing changed).
    """
    fn = _renameat2()
    if fn is None:
        return False
    res = fn(_AT_FDCWD, os.fsencode(os.fspath(a)), _AT_FDCWD, os.fsencode(os.fspath(b)), _RENAME_EXCHANGE)
    if res == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(err, f"cannot exchange {a} and {b}: {os.strerror(err)}")


def _carry_over(old: Path, new: Path, owned: Iterable[str]) -> None:
    """Link (or copy) into ``new`` every file and folder of ``old`` that ``new`` does not have
    and whose name matches none of the ``owned`` patterns."""
    patterns = list(owned)
    for entry in old.iterdir():
        target = new / entry.name
        if (
            target.exists()
            or target.is_symlink()
            or any(fnmatch.fnmatchcase(entry.name, p) for p in patterns)
        ):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.copytree(entry, target, copy_function=_link_or_copy, symlinks=True)
        else:
            _link_or_copy(entry, target)


def _link_or_copy(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    try:
        os.link(src, dst, follow_symlinks=False)
    except OSError:
        shutil.copy2(src, dst, follow_symlinks=False)


def publish_folder(tmp: str | os.PathLike, final: str | os.PathLike, owned: Iterable[str] = ()) -> Path:
    """Publish the complete folder ``tmp`` as ``final`` (see the module notes).

    Args:
        tmp: the complete new folder.
        final: where it goes.
        owned: ``fnmatch`` patterns of the names this kind of run owns (for example every map
            name of the data contract): entries of an existing ``final`` that match them are
            dropped even when ``tmp`` lacks them (outputs of an earlier run that this run no
            longer makes must not be mixed with the new ones). Everything else that ``tmp``
            does not contain is kept.
    """
    tmp, final = Path(tmp), Path(final)
    if not final.exists():
        os.rename(tmp, final)
        return final
    if not final.is_dir():
        raise NotADirectoryError(f"cannot write the outputs to {final}: it exists and is not a folder")
    _carry_over(final, tmp, owned)
    if exchange_folders(tmp, final):
        shutil.rmtree(tmp, ignore_errors=True)  # tmp now holds the old folder
        return final
    old = final.with_name(f".{final.name}{OLD_FOLDER_MARKER}{os.getpid()}-{secrets.token_hex(3)}")
    os.rename(final, old)
    try:
        os.rename(tmp, final)
    except BaseException:  # an error or an interrupt between the renames: put the old folder back
        if not final.exists():
            os.rename(old, final)
        raise
    shutil.rmtree(old, ignore_errors=True)
    return final


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def recover_interrupted(folder: str | os.PathLike, names: Iterable[str] | None = None) -> list[str]:
    """Clean the hidden debris that an interrupted run left in ``folder``.

    ``.<name>.tmp-<pid>-*`` folders of processes that no longer run are removed; a
    ``.<name>.old-<pid>-*`` folder whose ``<name>`` is missing (a kill between the two renames
    of :func:`publish_folder`) is renamed back to ``<name>``, otherwise removed.

    Args:
        folder: the output folder.
        names: restrict to these final names (default: all).

    Returns:
        one line per action, for the log.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    wanted = None if names is None else set(names)
    actions: list[str] = []
    for entry in sorted(folder.iterdir()):
        m = _HIDDEN_RE.match(entry.name)
        if m is None or not entry.is_dir() or (wanted is not None and m["name"] not in wanted):
            continue
        if _pid_alive(int(m["pid"])):
            continue
        final = folder / m["name"]
        if m["kind"] == "old" and not final.exists():
            os.rename(entry, final)
            actions.append(f"restored {final.name} from an interrupted run")
        else:
            shutil.rmtree(entry, ignore_errors=True)
            actions.append(f"removed {entry.name} left by an interrupted run")
    return actions
