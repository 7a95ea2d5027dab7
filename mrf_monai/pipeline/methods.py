"""Reconstruction methods as MONAI configs, and building a run from them.

Every method is a MONAI bundle config whose ``runner`` is a :class:`~mrf_monai.pipeline.SubjectRunner`:

=========  ==========================================================
``svdmrf``  ``mrf_monai/pipeline/configs/svdmrf.json`` (gridding + matching)
``lrtv``    ``mrf_monai/pipeline/configs/lrtv.json`` (subspace FISTA with TV)
``unet``    ``bundles/unet_baseline/configs/inference.json``
``iddpm``   ``bundles/mrf_iddpm/configs/inference.json``
=========  ==========================================================

``mrf-monai reconstruct --method NAME`` parses that config with the command line's settings as
overrides and runs its ``runner``: exactly what ``python -m monai.bundle run inference`` runs for
the learned methods. A method's options (``--option KEY=VALUE``) are the config's top-level keys;
an unknown key is an error that lists the valid ones, before any subject is read.

Methods of other packages register a config file (:func:`register_method`).
"""

from __future__ import annotations

import difflib
import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "MethodConfig",
    "register_method",
    "available_methods",
    "method_config",
    "method_options",
    "build_run",
    "config_error_message",
    "parse_options",
]

_CONFIGS = Path(__file__).resolve().parent / "configs"
#: keys every method config has (set by ``mrf-monai reconstruct``'s own flags, not by --option).
COMMON_KEYS = (
    "dataset_dir",
    "output_dir",
    "device",
    "dictionary",
    "dictionary_path",
    "cache_dir",
    "units",
    "coarse_to_fine",
    "mask_threshold",
    "write_dicom",
    "trajectory",
    "progress",
)
#: keys of a config that are the pipeline's wiring, not options to set from the command line.
_WIRING_KEYS = {
    "imports",
    "run",
    "inference",
    "runner",
    "writer",
    "preprocessing",
    "postprocessing",
    "inferer",
    "network",
    "network_def",
    "dictionaries",
    "hyper_parameters",
    "scheduler",
    "subjects",
    "data_consistency",
    "match_device",
    "network_device",
    "channel_scale",
    "bundle_root",
}


@dataclass(frozen=True)
class MethodConfig:
    """Where a method's config lives.

    Attributes:
        name: the method's name (``--method``).
        display: its name in tables and figures.
        config: the inference config file (JSON).
        bundle: the bundle folder for bundle methods (its ``metadata.json`` is read and its root
            is the config's ``bundle_root``), else ``None``.
    """

    name: str
    display: str
    config: Path
    bundle: Path | None = None


_BUILTIN = {
    "svdmrf": ("SVD-MRF", "pipeline", "svdmrf.json"),
    "lrtv": ("LRTV", "pipeline", "lrtv.json"),
    "unet": ("U-Net", "bundle", "unet_baseline"),
    "iddpm": ("MRF-IDDPM", "bundle", "mrf_iddpm"),
}


class MethodRegistry:
    """Method name -> :class:`MethodConfig` (the built-in methods plus registered ones)."""

    def __init__(self) -> None:
        self._extra: dict[str, MethodConfig] = {}

    def names(self) -> list[str]:
        return sorted({*_BUILTIN, *self._extra})

    def register(
        self, name: str, config: str | os.PathLike, display: str | None = None, overwrite: bool = False
    ) -> None:
        if not name or not name.replace("-", "").replace("_", "").isalnum():
            raise ValueError(f"method names are alphanumeric (with - or _); got {name!r}")
        if (name in _BUILTIN or name in self._extra) and not overwrite:
            raise ValueError(f"method {name!r} is already registered; pass overwrite=True to replace it")
        path = Path(config)
        if not path.is_file():
            raise FileNotFoundError(f"method {name!r}: config file {path} not found")
        self._extra[name] = MethodConfig(name, display or name, path.resolve())

    def get(self, name: str, bundle: str | os.PathLike | None = None) -> MethodConfig:
        if name in self._extra:
            return self._extra[name]
        if name not in _BUILTIN:
            raise ValueError(f"unknown reconstruction method {name!r}; available: {', '.join(self.names())}")
        display, kind, where = _BUILTIN[name]
        if kind == "pipeline":
            return MethodConfig(name, display, _CONFIGS / where)
        from mrf_monai.resources import bundle_dir

        folder = bundle_dir(bundle if bundle is not None else where)
        config = folder / "configs" / "inference.json"
        if not config.is_file():
            raise FileNotFoundError(f"bundle {folder} has no configs/inference.json")
        return MethodConfig(name, display, config, folder)


#: the registry of this process (methods of other packages register here).
REGISTRY = MethodRegistry()


def register_method(
    name: str, config: str | os.PathLike, display: str | None = None, overwrite: bool = False
) -> None:
    """Register a method given by its inference config (a JSON file with a ``runner``).

    Raises:
        ValueError: an invalid or already registered name (unless ``overwrite``).
        FileNotFoundError: no such config file.
    """
    REGISTRY.register(name, config, display, overwrite)


def available_methods() -> list[str]:
    """Names of the registered methods."""
    return REGISTRY.names()


def method_config(name: str, bundle: str | os.PathLike | None = None) -> MethodConfig:
    """The :class:`MethodConfig` of method ``name`` (``bundle``: another bundle folder for bundle methods)."""
    return REGISTRY.get(name, bundle)


def _read_configs(files: Sequence[Path]) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for f in files:
        try:
            merged.update(json.loads(Path(f).read_text()))
        except json.JSONDecodeError as err:
            raise ValueError(f"{f} is not valid JSON ({err})") from err
    return merged


def method_options(name: str, bundle: str | os.PathLike | None = None) -> dict[str, Any]:
    """The options of a method (its config's settable top-level keys) with their defaults."""
    spec = method_config(name, bundle)
    config = _read_configs([spec.config])
    return {k: v for k, v in config.items() if k not in _WIRING_KEYS and k not in COMMON_KEYS}


def config_error_message(err: BaseException) -> str:
    """The innermost, meaningful message of an error raised while parsing a MONAI config.

    MONAI wraps a failing ``$`` expression or component in a ``RuntimeError`` whose text is the
    whole expression and a traceback; the user needs the original error's message.
    """
    seen = set()
    inner: BaseException = err
    while id(inner) not in seen:
        seen.add(id(inner))
        nxt = inner.__cause__ or inner.__context__
        if nxt is None:
            break
        inner = nxt
    text = str(inner).strip()
    if not text:
        text = type(inner).__name__
    first = text.splitlines()[0]
    if isinstance(inner, ValueError | OSError | KeyError | TypeError | ImportError):
        return first
    return f"{type(inner).__name__}: {first}"


def build_run(
    name: str,
    overrides: Mapping[str, Any] | None = None,
    bundle: str | os.PathLike | None = None,
    extra_configs: Iterable[str | os.PathLike] = (),
) -> Any:
    """Parse method ``name``'s config with ``overrides`` and build its runner.

    Args:
        name: a registered method.
        overrides: config keys to set (``dataset_dir``, ``output_dir``, options); unknown keys
            are a ``ValueError`` that lists the valid ones.
        bundle: another bundle folder for the bundle methods (``--bundle DIR``).
        extra_configs: JSON files merged over the config (e.g. ``inference_fast.json``).

    Returns:
        the :class:`~mrf_monai.pipeline.SubjectRunner`.

    Raises:
        ValueError: unknown option keys, or an error while building the components (its message
            is the original error's, without the config-expression traceback).
    """
    from monai.bundle import ConfigParser

    spec = method_config(name, bundle)
    files = [spec.config, *(Path(f) for f in extra_configs)]
    for f in files:
        if not f.is_file():
            raise FileNotFoundError(f"config file {f} not found")
    config = _read_configs(files)
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(config))
    if unknown:  # the options of the method; the common keys are set by reconstruct's own flags
        valid = sorted(k for k in config if k not in _WIRING_KEYS and k not in COMMON_KEYS)
        close = sorted({m for k in unknown for m in difflib.get_close_matches(k, valid, n=1)})
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise ValueError(
            f"unknown option(s) {', '.join(unknown)} for method {name!r}; valid: {', '.join(valid)}{hint}"
        )
    parser = ConfigParser()
    parser.read_config([os.fspath(f) for f in files])
    if spec.bundle is not None:  # (the metadata is not read: no component refers to it)
        parser["bundle_root"] = str(spec.bundle)
    for key, value in overrides.items():
        parser[key] = value
    try:
        return parser.get_parsed_content("runner")
    except Exception as err:
        culprits = _culprits(err, config, {k: v for k, v in overrides.items() if k not in COMMON_KEYS})
        where = ""
        if culprits:
            named = ", ".join(_describe_option(k, overrides[k], config.get(k)) for k in culprits)
            where = f"option{'s' if len(culprits) > 1 else ''} {named}: "
        raise ValueError(f"method {name!r}: {where}{config_error_message(err)}") from err


_INSTANTIATE_RE = re.compile(r"Failed to instantiate component '([^']+)' with keywords: ([\w,]*)")
_REFERENCE_RE = re.compile(r"@([A-Za-z_]\w*)|__local_refs\[['\"]([A-Za-z_]\w*)")


def _references(value: Any) -> set[str]:
    """The top-level keys that the ``@key`` references in ``value`` point to."""
    if isinstance(value, str):
        return {a or b for a, b in _REFERENCE_RE.findall(value)}
    if isinstance(value, Mapping):
        return set().union(*(_references(v) for k, v in value.items() if not str(k).startswith("_")), set())
    if isinstance(value, list | tuple):
        return set().union(*(_references(v) for v in value), set())
    return set()


def _components(value: Any) -> Iterable[Mapping[str, Any]]:
    """Every component (a mapping with ``_target_``) in a config, depth first."""
    if isinstance(value, Mapping):
        if "_target_" in value:
            yield value
        for v in value.values():
            yield from _components(v)
    elif isinstance(value, list | tuple):
        for v in value:
            yield from _components(v)


def _failing_arguments(err: BaseException, config: Mapping[str, Any]) -> dict[str, set[str]]:
    """``{argument: config keys it refers to}`` of the innermost component or expression that failed.

    MONAI's wrapper errors name the failing component (``Failed to instantiate component 'X' with
    keywords: a,b``: its ``_target_`` and argument names, looked up in ``config``) or quote the
    failing expression (``Failed to evaluate ConfigExpression: ...``, argument ``""``).
    """
    found: dict[str, set[str]] = {}
    seen: set[int] = set()
    inner: BaseException | None = err
    while inner is not None and id(inner) not in seen:
        seen.add(id(inner))
        text = str(inner)
        match = _INSTANTIATE_RE.search(text)
        if match:
            target = match[1].rsplit(".", 1)[-1]
            keywords = {k for k in match[2].split(",") if k}
            found = {}
            for item in _components(config):
                args = {k for k in item if not str(k).startswith("_")}
                if str(item["_target_"]).rsplit(".", 1)[-1] == target and args == keywords:
                    for arg in args:
                        if not isinstance(item[arg], Mapping):
                            found.setdefault(arg, set()).update(_references(item[arg]))
        elif text.lstrip().startswith("Failed to evaluate"):
            found = {"": _references(text)}
        inner = inner.__cause__ or inner.__context__
    return found


def _culprits(err: BaseException, config: Mapping[str, Any], options: Mapping[str, Any]) -> list[str]:
    """The options set in ``options`` that most likely made building fail with ``err``.

    Among the options the failing component or expression refers to: those whose argument the
    error message names (``n_steps must be in [1, 1000]``), else those whose value has another
    type than their default (``n_iter="abc"`` for 30), else those without a literal default,
    else all of them.
    """
    arguments = _failing_arguments(err, config)
    used = {arg: refs & set(options) for arg, refs in arguments.items() if refs & set(options)}
    if not used:
        return []
    message = config_error_message(err)
    named = set().union(
        *(refs for arg, refs in used.items() if arg and re.search(rf"\b{re.escape(arg)}\b", message)), set()
    )
    if named:
        return sorted(named)
    candidates = set().union(*used.values())
    mistyped = {k for k in candidates if _other_type(options[k], config.get(k))}
    untyped = {k for k in candidates if not _is_literal(config.get(k))}
    return sorted(mistyped or untyped or candidates)


def _is_literal(default: Any) -> bool:
    """A default with a type to compare with (not ``null``, not a ``$``/``@``/``%`` expression)."""
    return default is not None and not (isinstance(default, str) and default.startswith(("$", "@", "%")))


def _other_type(value: Any, default: Any) -> bool:
    """``value`` is of another kind than a literal ``default`` (numbers are one kind)."""
    if not _is_literal(default):
        return False
    kinds = ((bool,), (int, float), (str,), (list, tuple), (dict,))
    for kind in kinds:
        if isinstance(default, kind) and not (kind == (int, float) and isinstance(default, bool)):
            return not isinstance(value, kind) or (kind == (int, float) and isinstance(value, bool))
    return False


def _describe_option(key: str, value: Any, default: Any) -> str:
    shown = f"{key}={json.dumps(value) if _is_json(value) else repr(value)}"
    if not _is_literal(default):
        return shown
    return f"{shown} (default {json.dumps(default)})"


def _is_json(value: Any) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


def parse_options(pairs: Iterable[str] | None) -> dict[str, Any]:
    """``["steps=50", "mean=true", "name=x", "size=[32,32]"]`` -> ``{"steps": 50, "mean": True, ...}``.

    Values are read as JSON when they parse (numbers, ``true``/``false``/``null``, lists), with
    ``none``/``True``/``False`` accepted too; anything else is a string.
    """
    options: dict[str, Any] = {}
    for pair in pairs or ():
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"options are KEY=VALUE; got {pair!r}")
        low = value.strip().lower()
        if low in ("true", "false"):
            options[key] = low == "true"
        elif low in ("none", "null"):
            options[key] = None
        else:
            try:
                options[key] = json.loads(value)
            except json.JSONDecodeError:
                options[key] = value
    return options
