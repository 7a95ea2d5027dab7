"""Where the shipped MONAI bundles (configs, docs, weights) are, from any working directory.

The bundles live in the repository's ``bundles/`` folder; ``mrf_monai/bundles`` is a link to
it, so they are found next to the package both in a checkout (editable install) and after a
regular ``pip install`` (the wheel carries them as package data). ``MRF_MONAI_BUNDLES`` (a
folder holding ``<name>/configs/...``) or an explicit ``bundle`` folder (``--bundle DIR`` of
``mrf-monai reconstruct``) take precedence, for bundles trained elsewhere.

A bundle folder holds ``configs/`` (``metadata.json``, ``inference.json``, ``train.json``,
...), ``docs/`` and ``models/`` (``model.pt``: a plain ``state_dict``; ``model.json``: its
hyper-parameters).
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["BUNDLE_NAMES", "BUNDLES_ENV", "bundles_root", "bundle_dir", "bundle_file"]

#: the bundles this package ships.
BUNDLE_NAMES = ("mrf_iddpm", "unet_baseline")
#: environment variable naming a folder of bundles that replaces the shipped ones.
BUNDLES_ENV = "MRF_MONAI_BUNDLES"

_PACKAGE_DIR = Path(__file__).resolve().parent


def bundles_root() -> Path:
    """The folder holding the bundles: ``$MRF_MONAI_BUNDLES`` when set, else the shipped ones.

    Raises:
        FileNotFoundError: neither exists (a broken installation), with what to do.
    """
    env = os.environ.get(BUNDLES_ENV)
    if env:
        root = Path(env).expanduser()
        if not root.is_dir():
            raise FileNotFoundError(
                f"{BUNDLES_ENV}={env} is not a folder; unset it or point it at a bundles folder"
            )
        return root
    for root in (_PACKAGE_DIR / "bundles", _PACKAGE_DIR.parent / "bundles"):
        if (root / BUNDLE_NAMES[0]).is_dir():
            return root
    raise FileNotFoundError(
        f"the shipped bundles are missing (looked in {_PACKAGE_DIR / 'bundles'} and "
        f"{_PACKAGE_DIR.parent / 'bundles'}); reinstall mrf_monai, set {BUNDLES_ENV}, or pass the bundle "
        "folder explicitly (--bundle DIR)"
    )


def bundle_dir(name_or_path: str | os.PathLike = "mrf_iddpm") -> Path:
    """The folder of one bundle: a shipped bundle's name, or a bundle folder given as a path.

    Args:
        name_or_path: ``"mrf_iddpm"``, ``"unet_baseline"`` (looked up in :func:`bundles_root`) or
            the path of a bundle folder (one with ``configs/``).

    Returns:
        the absolute bundle folder.

    Raises:
        FileNotFoundError: no such bundle (the message lists the shipped names).
    """
    text = os.fspath(name_or_path)
    path = Path(text).expanduser()
    if os.sep in text or "/" in text or (path.is_dir() and (path / "configs").is_dir()):
        if not (path / "configs").is_dir():
            raise FileNotFoundError(f"{path} is not a MONAI bundle folder (it has no configs/ folder)")
        return path.resolve()
    folder = bundles_root() / text
    if not (folder / "configs").is_dir():
        raise FileNotFoundError(
            f"no bundle named {text!r} in {bundles_root()}; shipped bundles: {', '.join(BUNDLE_NAMES)}"
        )
    return folder.resolve()


def bundle_file(bundle: str | os.PathLike, relative: str) -> Path:
    """A file inside a bundle, e.g. ``bundle_file("mrf_iddpm", "models/model.pt")``.

    Raises:
        FileNotFoundError: the file is missing (names the bundle and the file).
    """
    path = bundle_dir(bundle) / relative
    if not path.exists():
        raise FileNotFoundError(f"bundle {bundle_dir(bundle)} has no {relative}")
    return path
