"""Start a new training run from exported weights (``init_from``: fine-tuning).

:class:`mrf_monai.engines.Trainer` takes ``init_from``, the path of a weights file that a
trainer exported (``models/model.pt`` + ``models/model.json``, :func:`mrf_monai.io.weights.save_weights`).
A run that starts from it is a *new* run: step 0, a fresh optimiser and learning-rate schedule,
its own seeds; only the network weights (the exported EMA weights for MRF-IDDPM, hence also its
EMA) and, when the training subspace is the file's, the per-component channel scale come from
the file. The network built from the config must have exactly the file's hyper-parameters
(:func:`check_same_network` names what differs). A run folder that already holds checkpoints
resumes from them instead (bit-exact resuming takes precedence; the file is then not read).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from mrf_monai.io.weights import WeightsFileError, encode_json, load_weights

__all__ = ["read_init_weights", "check_same_network", "same_subspace", "init_description"]


def _plain(obj: Any) -> Any:
    """``obj`` as plain JSON values (tuples as lists, tensors tagged), for comparisons."""
    return json.loads(json.dumps(encode_json(obj)))


def check_same_network(
    file_model: Mapping[str, Any], config_model: Mapping[str, Any], path: str | os.PathLike
) -> None:
    """Refuse weights whose network hyper-parameters differ from the configured network's.

    Raises:
        WeightsFileError: naming the file and every key that differs (file value vs config value).
    """
    a, b = _plain(dict(file_model)), _plain(dict(config_model))
    diff = [
        f"{k}: {a.get(k, '<missing>')!r} in the file, {b.get(k, '<missing>')!r} in the config"
        for k in sorted(set(a) | set(b))
        if a.get(k, "<missing>") != b.get(k, "<missing>")
    ]
    if diff:
        raise WeightsFileError(
            f"init_from {path}: the weights were trained for another network ({'; '.join(diff)}). "
            "Set the network keys of the training config to the values in the file's .json "
            "(hyper_parameters['model']), or start from scratch without init_from."
        )


def read_init_weights(
    path: str | os.PathLike, format_tag: str, model_hyper_parameters: Mapping[str, Any]
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read and check the weights a new run starts from.

    Args:
        path: weights file (``.pt`` plain state dict with its ``.json`` beside it).
        format_tag: the trainer's format (``hyper_parameters["format"]`` must equal it: MRF-IDDPM
            weights cannot start a U-Net and vice versa).
        model_hyper_parameters: the configured network's build arguments.

    Returns:
        ``(state_dict, hyper_parameters)`` of the file.

    Raises:
        FileNotFoundError: the file or its ``.json`` is missing.
        WeightsFileError: another format or another network (:func:`check_same_network`).
    """
    state, hp = load_weights(path, map_location="cpu")
    if hp.get("format") != format_tag:
        raise WeightsFileError(
            f"init_from {path}: weights of format {hp.get('format')!r}, this trainer writes {format_tag!r} "
            "(MRF-IDDPM and U-Net weights are not interchangeable)"
        )
    check_same_network(hp.get("model") or {}, model_hyper_parameters, path)
    return state, hp


def same_subspace(
    file_data: Mapping[str, Any], data: Mapping[str, Any], tolerance: float = 1e-3
) -> tuple[bool, list[str]]:
    """Whether the file's training subspace (``hyper_parameters["data"]``) is this run's, in the
    same coordinates.

    Compares the sequence key and the bases: the same when ``Q = B_file^H B_run`` is the identity
    to ``tolerance`` (bases rebuilt from the same dictionary agree to about 1e-5; the rank is the
    basis's column count). Two descriptions without a basis agree. Returns ``(same, what differs)``;
    a basis that spans the same subspace in other coordinates (e.g. other column phases of the
    SVD) is reported as such, since the network's channels would then mean something else.
    """
    what = []
    if file_data.get("sequence_key") != data.get("sequence_key"):
        what.append(f"sequence {file_data.get('sequence_key')} vs {data.get('sequence_key')}")
    a, b = file_data.get("basis"), data.get("basis")
    if (a is None) != (b is None):
        what.append("basis stored for only one of them")
    elif a is not None:
        a, b = torch.as_tensor(a).to(torch.complex128), torch.as_tensor(b).to(torch.complex128)
        if a.shape != b.shape:
            what.append(f"basis {tuple(a.shape)} vs {tuple(b.shape)} (frames, rank)")
        else:
            q = a.conj().T @ b
            if not torch.allclose(q, torch.eye(q.shape[0], dtype=q.dtype), atol=tolerance):
                cos = float(torch.linalg.svdvals(q).min())
                what.append(
                    "basis: the same subspace in other coordinates (column phases or rotation)"
                    if 1.0 - cos <= tolerance
                    else f"subspace (smallest principal cosine {cos:.4f})"
                )
    return not what, what


def init_description(
    path: str | os.PathLike, hyper_parameters: Mapping[str, Any], channel_scale: str
) -> dict:
    """Provenance of the start weights, stored with the new run's weights
    (``hyper_parameters["training"]["init_from"]``): path, SHA-256 (first 16 hex digits), the
    file's step and best metric, and where the channel scale came from."""
    digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]
    return {
        "path": os.fspath(path),
        "sha256": digest,
        "step": hyper_parameters.get("step"),
        "best_metric": hyper_parameters.get("best_metric"),
        "channel_scale": channel_scale,
    }
