"""Network weights and training checkpoints that load without running code.

A pickled Python object can run arbitrary code when it is loaded, so every file of this
module is read with ``torch.load(..., weights_only=True)`` (only tensors and plain
containers) and JSON:

* **Weights** (what inference loads, e.g. ``bundles/mrf_iddpm/models/model.pt``): the
  ``.pt`` file is a *plain* ``state_dict`` (``dict[str, Tensor]``, what MONAI bundles and
  ``python -m monai.bundle ckpt_export`` expect), and the file beside it with the suffix
  ``.json`` (``models/model.json``) holds the hyper-parameters needed to rebuild the network
  (its keyword arguments, the training subspace basis, the sequence, provenance). Tensors in
  the hyper-parameters are written losslessly as
  ``{"__tensor__": "complex64", "shape": [...], "real": [...], "imag": [...]}`` (real
  tensors: ``"data"`` instead of ``"real"``/``"imag"``); non-finite floats as
  ``{"__float__": "inf"}``. See :func:`save_weights`, :func:`load_weights`,
  :func:`load_hyper_parameters`.
* **Training checkpoints** (``checkpoints/checkpoint_<step>.pt``): one dictionary of tensors,
  numbers, strings, lists and dictionaries (optimiser, EMA and gradient-scaler states, RNG
  states converted to tensors, history). See :func:`save_training_checkpoint`,
  :func:`load_training_checkpoint`.

Both are written atomically (temporary name in the same folder, then ``os.replace``).
"""

from __future__ import annotations

import json
import math
import os
import pickle
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from .atomic import atomic_write_path

__all__ = [
    "WeightsFileError",
    "save_weights",
    "load_weights",
    "load_hyper_parameters",
    "load_network",
    "hyper_parameters_path",
    "save_training_checkpoint",
    "load_training_checkpoint",
    "read_model_file",
    "convert_legacy_checkpoint",
    "encode_json",
    "decode_json",
]

#: keys of the single pickled dictionary that older mrf_monai releases wrote as weights.
_LEGACY_KEYS = ("format", "hyper_parameters", "state_dict")

_COMPLEX_PARTS = {torch.complex64: torch.float32, torch.complex128: torch.float64}


class WeightsFileError(ValueError):
    """A weights or checkpoint file that cannot be used (the message names the file and the problem)."""


# ---------------------------------------------------------------------------- JSON encoding
def encode_json(obj: Any, where: str = "hyper_parameters") -> Any:
    """``obj`` as plain JSON values: tensors and non-finite floats become tagged dictionaries.

    Args:
        obj: nested dictionaries (``str`` keys), lists, tuples (written as lists), strings,
            numbers, booleans, ``None`` and tensors (any dtype, any device).
        where: name of ``obj`` in error messages (keys are appended: ``data.basis``).

    Raises:
        TypeError: for any other type, or a non-string dictionary key (named by its path).
    """
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu()
        out: dict[str, Any] = {"__tensor__": str(t.dtype).removeprefix("torch."), "shape": list(t.shape)}
        if t.is_complex():
            out["real"] = [encode_json(v, where) for v in t.real.flatten().tolist()]
            out["imag"] = [encode_json(v, where) for v in t.imag.flatten().tolist()]
        else:
            out["data"] = [encode_json(v, where) for v in t.flatten().tolist()]
        return out
    if isinstance(obj, bool) or obj is None or isinstance(obj, (int, str)):
        return obj
    if isinstance(obj, float):
        if math.isfinite(obj):
            return obj
        return {"__float__": "nan" if math.isnan(obj) else ("inf" if obj > 0 else "-inf")}
    if isinstance(obj, Mapping):
        out = {}
        for k, v in obj.items():
            if not isinstance(k, str):
                raise TypeError(f"{where}: key {k!r} is not a string; JSON keys must be strings")
            out[k] = encode_json(v, f"{where}.{k}")
        return out
    if isinstance(obj, (list, tuple)):
        return [encode_json(v, f"{where}[{i}]") for i, v in enumerate(obj)]
    if hasattr(obj, "item") and getattr(obj, "ndim", None) == 0:  # numpy scalars
        return encode_json(obj.item(), where)
    raise TypeError(
        f"{where}: cannot write a {type(obj).__name__} to JSON; use numbers, strings, lists, "
        "dictionaries or tensors"
    )


def decode_json(obj: Any) -> Any:
    """Inverse of :func:`encode_json` (tagged dictionaries back to tensors and floats)."""
    if isinstance(obj, list):
        return [decode_json(v) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if "__tensor__" in obj:
        dtype = getattr(torch, str(obj["__tensor__"]), None)
        if not isinstance(dtype, torch.dtype):
            raise ValueError(f"unknown tensor dtype {obj['__tensor__']!r} in a hyper-parameter file")
        shape = [int(s) for s in obj["shape"]]
        if dtype in _COMPLEX_PARTS:
            part = _COMPLEX_PARTS[dtype]
            re = torch.tensor([decode_json(v) for v in obj["real"]], dtype=part)
            im = torch.tensor([decode_json(v) for v in obj["imag"]], dtype=part)
            return torch.complex(re, im).reshape(shape)
        return torch.tensor([decode_json(v) for v in obj["data"]], dtype=dtype).reshape(shape)
    if set(obj) == {"__float__"}:
        return float(obj["__float__"])
    return {k: decode_json(v) for k, v in obj.items()}


def _dumps(obj: Any, indent: str = "") -> str:
    """JSON with one key per line and lists of numbers or strings on one line (readable, strict)."""
    inner = indent + "  "
    if isinstance(obj, dict):
        if not obj:
            return "{}"
        items = [f"{inner}{json.dumps(k)}: {_dumps(v, inner)}" for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + "\n" + indent + "}"
    if isinstance(obj, list) and any(isinstance(v, (dict, list)) for v in obj):
        return "[\n" + ",\n".join(inner + _dumps(v, inner) for v in obj) + "\n" + indent + "]"
    return json.dumps(obj, allow_nan=False)


# ---------------------------------------------------------------------------- weights
def hyper_parameters_path(path: str | os.PathLike) -> Path:
    """The hyper-parameter file beside a weights file: ``models/model.pt`` -> ``models/model.json``."""
    return Path(path).with_suffix(".json")


def save_weights(
    path: str | os.PathLike, state_dict: Mapping[str, torch.Tensor], hyper_parameters: Mapping[str, Any]
) -> Path:
    """Write a plain ``state_dict`` to ``path`` and its hyper-parameters to ``path.with_suffix(".json")``.

    Both files are written atomically; the JSON first, so a reader that sees the new weights
    also sees their hyper-parameters.

    Args:
        path: weights file (``.pt``), e.g. ``models/model.pt``.
        state_dict: ``dict[str, Tensor]`` (moved to the CPU; values are not changed).
        hyper_parameters: JSON-compatible dictionary; tensors (e.g. the complex ``(T, R)``
            training basis) are encoded losslessly (see :func:`encode_json`).

    Returns:
        ``path``.
    """
    path = Path(path)
    if path.suffix == ".json":
        raise ValueError(f"{path}: the weights file needs another suffix than .json (e.g. model.pt)")
    weights: OrderedDict[str, torch.Tensor] = OrderedDict()
    for k, v in state_dict.items():
        if not isinstance(k, str) or not isinstance(v, torch.Tensor):
            raise TypeError(f"writing {path}: state_dict entry {k!r} is not a str -> Tensor pair")
        weights[k] = v.detach().cpu()
    text = _dumps(encode_json(dict(hyper_parameters)))
    with atomic_write_path(hyper_parameters_path(path)) as tmp:
        tmp.write_text(text + "\n", encoding="utf-8")
    with atomic_write_path(path) as tmp:
        torch.save(weights, tmp)
    return path


def load_hyper_parameters(path: str | os.PathLike) -> dict[str, Any]:
    """The hyper-parameters beside the weights file ``path`` (the ``.json`` of the same name).

    Raises:
        FileNotFoundError: the weights file, or the JSON file beside it, is missing (the message says
            what it should be).
        WeightsFileError: it is not valid JSON or not a JSON object.
    """
    json_path = hyper_parameters_path(path)
    if not Path(path).is_file():
        raise FileNotFoundError(f"weights file {path} does not exist")
    if not json_path.is_file():
        raise FileNotFoundError(
            f"weights {path}: no hyper-parameter file {json_path} beside it. mrf_monai weights are a "
            "plain state_dict (model.pt) plus its hyper-parameters (model.json), written together by "
            "mrf_monai.io.weights.save_weights (the trainers' export); copy both files."
        )
    try:
        obj = json.loads(json_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise WeightsFileError(f"hyper-parameter file {json_path} is not valid JSON: {err}") from err
    if not isinstance(obj, dict):
        raise WeightsFileError(
            f"hyper-parameter file {json_path} must hold a JSON object, got {type(obj).__name__}"
        )
    return decode_json(obj)


def _safe_load(path: Path, map_location: str | torch.device, what: str) -> Any:
    """``torch.load(weights_only=True)`` with errors that name the file."""
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} does not exist")
    try:
        return torch.load(os.fspath(path), map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        raise WeightsFileError(
            f"{what} {path} was refused: it holds Python objects other than tensors and plain containers "
            "(loading it could run code, so it is read with torch.load(weights_only=True) only). "
            "If it comes from an older mrf_monai release, re-export it with the project's trainer. "
            f"Detail: {str(err).splitlines()[0] if str(err) else type(err).__name__}"
        ) from err
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        raise WeightsFileError(f"{what} {path} cannot be read by torch.load: {err}") from err


def load_weights(
    path: str | os.PathLike, map_location: str | torch.device = "cpu"
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read the weights written by :func:`save_weights`: ``(state_dict, hyper_parameters)``.

    The ``.pt`` file is loaded with ``torch.load(..., weights_only=True)``: a file holding
    other objects is refused, nothing in it runs.

    Raises:
        FileNotFoundError: the weights or their ``.json`` file is missing.
        WeightsFileError: the file is not a plain state dict (e.g. a pickled checkpoint of an
            older release, which must be re-exported by the project's trainer, or a file
            holding arbitrary Python objects).
    """
    path = Path(path)
    state = _safe_load(path, map_location, "weights file")
    _check_state_dict(state, path)
    return dict(state), load_hyper_parameters(path)


def load_network(network: torch.nn.Module, path: str | os.PathLike, strict: bool = True) -> torch.nn.Module:
    """Load the weights file ``path`` (:func:`save_weights`) into ``network`` and return it.

    What a bundle's inference config calls on its ``network_def``: the network is built from
    the config (or from ``model.json``), the weights are read with ``weights_only=True``.

    Raises:
        FileNotFoundError, WeightsFileError: as :func:`load_weights`.
        WeightsFileError: the weights do not fit ``network`` (names the file and the first
            missing or unexpected keys, or the shape that differs).
    """
    path = Path(path)
    state = _safe_load(path, "cpu", "weights file")
    _check_state_dict(state, path)
    try:
        network.load_state_dict(state, strict=strict)
    except RuntimeError as err:
        raise WeightsFileError(
            f"weights {path} do not fit the network built from the config: {str(err).splitlines()[0]}; "
            "the network's settings must be those of the weights' model.json"
        ) from err
    return network


def _check_state_dict(state: Any, path: Path) -> None:
    if isinstance(state, Mapping) and all(k in state for k in _LEGACY_KEYS):
        raise WeightsFileError(
            f"{path} is a pickled checkpoint of an older mrf_monai release (one dictionary with "
            f"{', '.join(_LEGACY_KEYS)}), not a plain state_dict. Re-export it with the project's trainer "
            "(its export writes model.pt + model.json), or convert it with "
            "mrf_monai.io.weights.convert_legacy_checkpoint(path)."
        )
    if not isinstance(state, Mapping):
        raise WeightsFileError(
            f"{path} is not a state dict (dict of tensors): it holds a {type(state).__name__}"
        )
    bad = [k for k, v in state.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise WeightsFileError(
            f"{path} is not a state dict (dict of str -> Tensor): entries {bad[:5]} are not tensors; "
            "a training checkpoint (checkpoints/checkpoint_<step>.pt) is read with load_training_checkpoint"
        )


# ---------------------------------------------------------------------------- training checkpoints
_SAFE_SCALARS = (bool, int, float, str, type(None), torch.Tensor)


def _check_safe(obj: Any, where: str) -> None:
    """Raise if ``obj`` holds something that ``torch.load(weights_only=True)`` would refuse."""
    if isinstance(obj, _SAFE_SCALARS):
        return
    if isinstance(obj, Mapping):
        for k, v in obj.items():
            if not isinstance(k, (str, int)):
                raise TypeError(f"{where}: key {k!r} of type {type(k).__name__} cannot be saved safely")
            _check_safe(v, f"{where}.{k}")
        return
    if isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            _check_safe(v, f"{where}[{i}]")
        return
    raise TypeError(
        f"{where}: a {type(obj).__name__} cannot be stored in a checkpoint that loads with "
        "weights_only=True; convert it to tensors, numbers, strings, lists or dictionaries"
    )


def save_training_checkpoint(path: str | os.PathLike, checkpoint: Mapping[str, Any]) -> Path:
    """Write a training checkpoint (one dictionary) atomically; it loads with ``weights_only=True``.

    Raises:
        TypeError: ``checkpoint`` holds an object that a safe load would refuse (the key path
            is named), so the problem shows when saving, not when resuming.
    """
    path = Path(path)
    _check_safe(checkpoint, "checkpoint")
    with atomic_write_path(path) as tmp:
        torch.save(dict(checkpoint), tmp)
    return path


def load_training_checkpoint(
    path: str | os.PathLike, map_location: str | torch.device = "cpu"
) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_training_checkpoint` (``torch.load(weights_only=True)``).

    Raises:
        FileNotFoundError: no such file.
        WeightsFileError: the file holds objects other than tensors and plain containers (nothing
            in it runs), or it is not a dictionary with ``"hyper_parameters"``.
    """
    path = Path(path)
    ckpt = _safe_load(path, map_location, "training checkpoint")
    if not isinstance(ckpt, Mapping) or "hyper_parameters" not in ckpt:
        raise WeightsFileError(
            f"{path} is not an mrf_monai training checkpoint (a dictionary with 'hyper_parameters'); "
            "weights files (model.pt + model.json) are read with load_weights"
        )
    return dict(ckpt)


def read_model_file(
    path: str | os.PathLike,
    map_location: str | torch.device = "cpu",
    expected_format: str | None = None,
    name: str = "model",
) -> dict[str, Any]:
    """Weights (``.pt`` + ``.json``) or a training checkpoint, as one dictionary.

    Args:
        path: a weights file with its ``.json`` beside it, or a training checkpoint
            (``checkpoints/checkpoint_<step>.pt``, no ``.json``).
        map_location: device of the loaded tensors.
        expected_format: the ``"format"`` tag the file must have (``None``: any).
        name: what the file should be, for error messages (e.g. ``"MRF-IDDPM model"``).

    Returns:
        ``"format"``, ``"hyper_parameters"``, ``"state_dict"`` (the weights inference uses),
        ``"step"``, ``"best_metric"``; a training checkpoint also has its other entries
        (optimiser, RNG, ...). For weights, ``"hyper_parameters"`` is the whole JSON document.

    Raises:
        FileNotFoundError: missing file (or the ``.json`` of a weights file).
        WeightsFileError: a file that a safe load refuses, or one of another format (an older
            release's tag gets a hint to re-export or convert it).
    """
    path = Path(path)
    if hyper_parameters_path(path).is_file():
        state, hp = load_weights(path, map_location=map_location)
        ckpt: dict[str, Any] = {
            "format": hp.get("format"),
            "hyper_parameters": hp,
            "state_dict": state,
            "step": hp.get("step"),
            "best_metric": hp.get("best_metric"),
        }
    else:
        try:
            ckpt = load_training_checkpoint(path, map_location=map_location)
        except WeightsFileError:
            load_weights(path)  # a plain state dict without its JSON: say so
            raise
    found = ckpt.get("format")
    if expected_format is not None and found != expected_format:
        hint = ""
        if isinstance(found, str) and found.split("/")[0] == expected_format.split("/")[0]:
            hint = (
                " It was written by an older mrf_monai release: re-export it with the project's trainer, "
                "or convert it with mrf_monai.io.weights.convert_legacy_checkpoint(path, "
                f"format={expected_format!r})."
            )
        raise WeightsFileError(
            f"{path} is not an {name}: format {found!r}, expected {expected_format!r}.{hint}"
        )
    return ckpt


def convert_legacy_checkpoint(
    path: str | os.PathLike, out_path: str | os.PathLike | None = None, format: str | None = None
) -> Path:
    """Rewrite weights of an older release (one pickled dictionary) as ``state_dict`` + JSON.

    The old file is read with ``weights_only=True`` too, so nothing in it runs; its
    ``"state_dict"`` becomes the new ``.pt`` and its ``"hyper_parameters"``, together with the
    other top-level entries (``"format"``, ``"step"``, ``"best_metric"``), the ``.json``.

    Args:
        path: the old weights file.
        out_path: the new weights file (default: ``path``, replaced in place).
        format: new format tag written as ``hyper_parameters["format"]`` (default: the old one).

    Returns:
        the new weights path.
    """
    path = Path(path)
    old = _safe_load(path, "cpu", "legacy weights file")
    if not isinstance(old, Mapping) or not all(k in old for k in _LEGACY_KEYS):
        raise WeightsFileError(
            f"{path} is not a legacy mrf_monai checkpoint (keys {', '.join(_LEGACY_KEYS)})"
        )
    if any(k in old for k in ("optimizer", "rng")):
        raise WeightsFileError(
            f"{path} is a training checkpoint; only exported weights (model.pt, best.pt) are converted"
        )
    hyper_parameters = {
        "format": old["format"] if format is None else format,
        **dict(old["hyper_parameters"]),
    }
    for key, value in old.items():
        if key not in ("format", "hyper_parameters", "state_dict"):
            hyper_parameters[key] = value
    return save_weights(path if out_path is None else out_path, old["state_dict"], hyper_parameters)
