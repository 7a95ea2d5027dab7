"""Quantitative map and TSMI metrics.

Definitions (all computed inside the reference mask, over every slice of a subject):

- ``MAPE`` (%): ``100 * mean(|pred - ref| / ref)`` over mask voxels with ``ref > 0``.
- ``RMSE``: ``sqrt(mean(|pred - ref|^2))``; maps are in seconds, multiplied by ``scale``
  (1000 reports milliseconds: the ``*_RMSE_ms`` columns).
- ``NRMSE``: ``||pred - ref||_2 / ||ref||_2`` over the mask (unitless; 0 is perfect, 1 is
  as large an error as the reference itself). For complex TSMIs the norms are over all
  subspace components of the mask voxels.
- ``SSIM``: MONAI ``SSIMMetric`` (Gaussian window 11, sigma 1.5, smaller windows for tiny
  images) per 2D slice, on images set to 0 outside the mask, with ``data_range`` = the
  reference's largest value inside the mask; averaged over slices.
- ``PSNR``: MONAI ``PSNRMetric`` with ``max_val`` = the reference's largest value in the
  mask, on the mask voxels only (dB).
- TSMI metrics compare complex compressed TSMIs ``(R, Nx, Ny, S)``. The reference PD is a
  magnitude, so each predicted voxel is first rotated by the phase of
  ``sum_r conj(ref_r) pred_r`` (its PD phase). NRMSE is then complex; SSIM and PSNR are on
  the magnitude ``|c_r|`` of each component (data range per component from the
  reference), averaged over components.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from monai.metrics import PSNRMetric, SSIMMetric

__all__ = [
    "mape",
    "rmse",
    "nrmse",
    "ssim",
    "psnr",
    "map_metrics",
    "tsmi_metrics",
    "align_phase",
    "reference_tsmi",
    "read_prediction",
    "evaluate_subject",
    "TSMI_SUFFIX",
]


def _t(a: torch.Tensor | np.ndarray) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(a) if not isinstance(a, torch.Tensor) else a)
    if t.is_complex():
        return t.to(torch.complex128)
    return t.to(torch.float64)


def _mask(mask: torch.Tensor | np.ndarray | None, like: torch.Tensor) -> torch.Tensor:
    if mask is None:
        return torch.ones(like.shape, dtype=torch.bool, device=like.device)
    m = (
        torch.as_tensor(np.asarray(mask) if not isinstance(mask, torch.Tensor) else mask)
        .to(like.device)
        .bool()
    )
    if m.shape != like.shape:
        raise ValueError(f"mask shape {tuple(m.shape)} differs from the image shape {tuple(like.shape)}")
    if not m.any():
        raise ValueError("the mask is empty: there are no voxels to evaluate")
    return m


def _pair(pred, ref) -> tuple[torch.Tensor, torch.Tensor]:
    p, r = _t(pred), _t(ref)
    if p.shape != r.shape:
        raise ValueError(f"prediction shape {tuple(p.shape)} differs from the reference's {tuple(r.shape)}")
    return p, r.to(p.device)


def mape(pred, ref, mask=None) -> float:
    """Mean absolute percentage error (%) inside ``mask`` where ``ref > 0``."""
    p, r = _pair(pred, ref)
    m = _mask(mask, r) & (r.abs() > 0)
    if not m.any():
        raise ValueError("no voxel inside the mask has a non-zero reference value")
    return float(100.0 * ((p[m] - r[m]).abs() / r[m].abs()).mean())


def rmse(pred, ref, mask=None, scale: float = 1.0) -> float:
    """Root mean square error inside ``mask``, times ``scale`` (1000: seconds -> ms)."""
    p, r = _pair(pred, ref)
    m = _mask(mask, r)
    return float(scale * (p[m] - r[m]).abs().square().mean().sqrt())


def nrmse(pred, ref, mask=None) -> float:
    """``||pred - ref|| / ||ref||`` inside ``mask`` (real or complex)."""
    p, r = _pair(pred, ref)
    m = _mask(mask, r)
    den = torch.linalg.vector_norm(r[m])
    if den == 0:
        raise ValueError("the reference is zero inside the mask; NRMSE is undefined")
    return float(torch.linalg.vector_norm(p[m] - r[m]) / den)


def _as_slices(img: torch.Tensor) -> torch.Tensor:
    """(Nx, Ny) or (Nx, Ny, S) -> (S, 1, Nx, Ny)."""
    if img.ndim == 2:
        return img[None, None]
    if img.ndim == 3:
        return img.permute(2, 0, 1)[:, None]
    raise ValueError(f"expected an (Nx, Ny) or (Nx, Ny, S) image; got shape {tuple(img.shape)}")


def ssim(pred, ref, mask=None, data_range: float | None = None) -> float:
    """Mean SSIM over the 2D slices of ``(Nx, Ny[, S])`` real images, zero outside ``mask``."""
    p, r = _pair(pred, ref)
    if p.is_complex():
        raise ValueError("SSIM needs real images; pass magnitudes (e.g. tsmi.abs())")
    m = _mask(mask, r)
    p, r = torch.where(m, p, 0.0), torch.where(m, r, 0.0)
    if data_range is None:
        data_range = float(r[m].max() - min(float(r[m].min()), 0.0))
    if data_range <= 0:
        raise ValueError("the reference is constant zero inside the mask; SSIM is undefined")
    ps, rs = _as_slices(p), _as_slices(r)
    win = min(11, min(ps.shape[-2:]))
    win = win if win % 2 else win - 1
    metric = SSIMMetric(spatial_dims=2, data_range=data_range, win_size=win, kernel_sigma=1.5 * win / 11)
    return float(metric(ps, rs).mean())


def psnr(pred, ref, mask=None, data_range: float | None = None) -> float:
    """PSNR (dB) of the mask voxels with ``max_val`` = the reference's largest mask value."""
    p, r = _pair(pred, ref)
    if p.is_complex():
        raise ValueError("PSNR needs real images; pass magnitudes (e.g. tsmi.abs())")
    m = _mask(mask, r)
    if data_range is None:
        data_range = float(r[m].abs().max())
    if data_range <= 0:
        raise ValueError("the reference is zero inside the mask; PSNR is undefined")
    value = PSNRMetric(max_val=data_range)(p[m][None, None], r[m][None, None])
    value = float(value.reshape(-1)[0])
    return value if math.isfinite(value) else float("inf")


def map_metrics(pred: dict, ref: dict, mask, rmse_scale: float = 1000.0) -> dict[str, float]:
    """Metrics of the ``t1_s`` and ``t2_s`` maps (and ``pd`` NRMSE when both have it).

    Returns keys ``T1_MAPE``, ``T1_RMSE_ms``, ``T1_NRMSE``, ``T1_SSIM``, ``T1_PSNR`` and the
    same for T2 (``*_RMSE_ms`` is in milliseconds for the default ``rmse_scale=1000``).
    """
    unit = "ms" if rmse_scale == 1000.0 else ("s" if rmse_scale == 1.0 else "scaled")
    out: dict[str, float] = {}
    for name, key in (("T1", "t1_s"), ("T2", "t2_s")):
        p, r = pred[key], ref[key]
        out[f"{name}_MAPE"] = mape(p, r, mask)
        out[f"{name}_RMSE_{unit}"] = rmse(p, r, mask, scale=rmse_scale)
        out[f"{name}_NRMSE"] = nrmse(p, r, mask)
        out[f"{name}_SSIM"] = ssim(p, r, mask)
        out[f"{name}_PSNR"] = psnr(p, r, mask)
    if "pd" in pred and "pd" in ref:
        out["PD_NRMSE"] = nrmse(pred["pd"], ref["pd"], mask)
    return out


def align_phase(pred: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Rotate each voxel of ``pred (R, ...)`` by the phase of ``sum_r conj(ref_r) pred_r``."""
    p, r = _pair(pred, ref)
    corr = (r.conj() * p).sum(dim=0)
    phase = torch.where(corr.abs() > 0, corr / corr.abs().clamp_min(1e-300), torch.ones_like(corr))
    return p * phase.conj()[None]


def tsmi_metrics(pred, ref, mask) -> dict[str, float]:
    """``TSMI_NRMSE``, ``TSMI_SSIM``, ``TSMI_PSNR`` of complex ``(R, Nx, Ny[, S])`` TSMIs.

    ``pred`` is phase-aligned to ``ref`` voxel by voxel first (see :func:`align_phase`).
    """
    p = align_phase(pred, ref)
    r = _t(ref)
    m = _mask(mask, r[0])
    mr = m[None].expand_as(r)
    out = {"TSMI_NRMSE": nrmse(p, r, mr)}
    out["TSMI_SSIM"] = float(np.mean([ssim(p[c].abs(), r[c].abs(), m) for c in range(r.shape[0])]))
    out["TSMI_PSNR"] = float(np.mean([psnr(p[c].abs(), r[c].abs(), m) for c in range(r.shape[0])]))
    return out


# ----------------------------------------------------------------------------- subject files

#: BIDS suffix of each map the evaluation reads from a prediction folder.
_MAP_SUFFIXES = {"t1_s": "T1map", "t2_s": "T2map", "pd": "PDmap"}
#: Optional standard-deviation maps of probabilistic methods (seconds, like T1/T2).
_STD_SUFFIXES = {"t1_std_s": "desc-std_T1map", "t2_std_s": "desc-std_T2map"}
_UNIT_SCALE = {"s": 1.0, "second": 1.0, "seconds": 1.0, "ms": 1e-3, "millisecond": 1e-3, "milliseconds": 1e-3}
#: Suffix of the compressed TSMI that ``mrf-monai reconstruct`` writes next to the maps (the
#: pipeline's ``TSMI_SUFFIX``; repeated here because evaluation must not import the pipeline).
TSMI_SUFFIX = "desc-compressed_TSMI"


def _prediction_path(pred_dir, label: str, suffix: str):
    from pathlib import Path

    return Path(pred_dir) / f"sub-{label}_{suffix}.nii.gz"


def _load_nifti(path, what: str = "prediction") -> np.ndarray:
    """The array of a NIfTI file, or a ``ValueError`` naming the file when it cannot be read."""
    import nibabel as nib

    try:
        return np.asarray(nib.load(str(path)).dataobj)
    except Exception as err:  # nibabel, gzip and zlib raise several types for damaged files
        raise ValueError(f"{path}: the {what} cannot be read as NIfTI (truncated or corrupt: {err})") from err


def _read_units(sidecar) -> float:
    """Scale to seconds of a map from its JSON sidecar's ``Units`` (seconds when absent)."""
    import json

    if not sidecar.is_file():
        return 1.0
    try:
        meta = json.loads(sidecar.read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"{sidecar}: the sidecar cannot be read as JSON ({err})") from err
    unit = str(meta.get("Units", "s") if isinstance(meta, dict) else "s").strip().lower()
    if unit not in _UNIT_SCALE:
        raise ValueError(f"{sidecar}: unknown Units {unit!r}; expected 's' or 'ms'")
    return _UNIT_SCALE[unit]


def read_prediction(pred_dir, label: str | None = None) -> dict[str, np.ndarray]:
    """Read the maps of one predicted subject folder (``sub-<label>/``), T1/T2 in seconds.

    Units come from each map's JSON sidecar (``"Units"``: ``s`` or ``ms``; seconds when
    absent). Returns ``t1_s``, ``t2_s`` (and ``pd``, ``t1_std_s``, ``t2_std_s`` in seconds,
    ``tsmi`` ``(R, Nx, Ny, S)`` complex when present) as arrays shaped ``(Nx, Ny, S)``.

    Raises:
        FileNotFoundError: a T1 or T2 map is missing (naming it).
        ValueError: a file cannot be read (naming it), or a sidecar gives unknown units.
    """
    from pathlib import Path

    pred_dir = Path(pred_dir)
    label = label or pred_dir.name.removeprefix("sub-")
    out: dict[str, np.ndarray] = {}
    for key, suffix in {**_MAP_SUFFIXES, **_STD_SUFFIXES}.items():
        path = _prediction_path(pred_dir, label, suffix)
        if not path.is_file():
            if key not in ("t1_s", "t2_s"):
                continue
            raise FileNotFoundError(
                f"{path} is missing: is {pred_dir} the output folder of `mrf-monai reconstruct`?"
            )
        data = _load_nifti(path).astype(np.float32)
        if data.ndim == 2:
            data = data[..., None]
        if key != "pd":
            data = data * _read_units(path.with_name(path.name[: -len(".nii.gz")] + ".json"))
        out[key] = data
    tsmi_path = _prediction_path(pred_dir, label, TSMI_SUFFIX)
    if tsmi_path.is_file():
        tsmi = _load_nifti(tsmi_path, "compressed TSMI")
        if tsmi.ndim == 3:  # one slice: (Nx, Ny, R)
            tsmi = tsmi[:, :, None]
        out["tsmi"] = np.moveaxis(tsmi, -1, 0)
    return out


def _check_shapes(pred: dict, pred_dir, label: str, ref_subject_dir, shape: tuple[int, ...]) -> None:
    """A ``ValueError`` naming both files and both shapes when a prediction is not on the reference grid."""
    from ..io.subjects import reference_path

    for key, suffix in (*_MAP_SUFFIXES.items(), *_STD_SUFFIXES.items(), ("tsmi", TSMI_SUFFIX)):
        if key not in pred:
            continue
        got = tuple(pred[key].shape[1:] if key == "tsmi" else pred[key].shape)
        if got != tuple(shape):
            ref_file = reference_path(ref_subject_dir, suffix if key in _MAP_SUFFIXES else "mask")
            raise ValueError(
                f"{_prediction_path(pred_dir, label, suffix)} has shape {_shape_text(got)} but the reference "
                f"{ref_file} has {_shape_text(shape)} (Nx x Ny x slices): the prediction is not on the "
                "reference grid; was it reconstructed from this subject's raw data?"
            )


def _tsmi_sequence(sidecar, required: bool):
    """The ``MRFSequence`` recorded in the TSMI sidecar (``None`` when absent and not required)."""
    import json

    from ..physics.sequence import MRFSequence

    if not sidecar.is_file() and not required:
        return None
    try:
        side = json.loads(sidecar.read_text())
        if side.get("Sequence") is None and not required:
            return None
        return MRFSequence.from_dict(side["Sequence"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise ValueError(
            f"{sidecar}: cannot read the sequence of the compressed TSMI ({err}); "
            "give --dictionary or re-run `mrf-monai reconstruct`"
        ) from err


def _shape_text(shape) -> str:
    return " x ".join(str(int(n)) for n in shape)


def reference_tsmi(t1_s, t2_s, pd, mask, dictionary) -> np.ndarray:
    """Reference compressed TSMI ``(R, ...)`` from reference maps: ``|PD| * ||f_n|| * v_n`` of
    the atom ``n`` nearest to each voxel's (log T1, log T2), 0 outside ``mask``.

    This is the paper's "nearest dictionary atom x PD" synthesis; the reference PD is a
    magnitude, so the TSMI metrics align the phase of the prediction (:func:`align_phase`).
    """
    from scipy.spatial import cKDTree

    d_t1 = np.asarray(torch.as_tensor(dictionary.t1_s).cpu(), dtype=np.float64)
    d_t2 = np.asarray(torch.as_tensor(dictionary.t2_s).cpu(), dtype=np.float64)
    atoms = np.arange(d_t1.size)
    b1 = getattr(dictionary, "b1", None)
    if b1 is not None:  # use the atoms of nominal transmit field
        b1 = np.asarray(torch.as_tensor(b1).cpu(), dtype=np.float64)
        atoms = atoms[np.abs(b1 - 1.0) == np.abs(b1 - 1.0).min()]
    tree = cKDTree(np.stack([np.log(d_t1[atoms]), np.log(d_t2[atoms])], axis=1))
    m = np.asarray(mask, dtype=bool)
    t1v = np.asarray(t1_s, dtype=np.float64)[m]
    t2v = np.asarray(t2_s, dtype=np.float64)[m]
    if np.any(t1v <= 0) or np.any(t2v <= 0):
        raise ValueError("reference T1/T2 must be positive inside the mask")
    _, nearest = tree.query(np.stack([np.log(t1v), np.log(t2v)], axis=1))
    n = atoms[nearest]
    comp = torch.as_tensor(dictionary.compressed).cpu().numpy()
    norms = torch.as_tensor(dictionary.norms).cpu().numpy()
    out = np.zeros((comp.shape[1], *m.shape), dtype=np.complex128)
    out[:, m] = (comp[n] * (norms[n] * np.abs(np.asarray(pd, dtype=np.float64)[m]))[:, None]).T
    return out


def evaluate_subject(pred_dir, ref_subject_dir, dictionary=None) -> dict[str, float]:
    """All metrics of one predicted subject against its reference.

    Args:
        pred_dir: the prediction's subject folder (``<output>/sub-<label>/``).
        ref_subject_dir: the dataset's subject folder with ``ref/`` maps
            (``io.subjects.read_reference``).
        dictionary: ``MRFDictionary`` used for the TSMI metrics; default: the cached
            dictionary of the sequence recorded next to the predicted TSMI (its rank
            truncated to the TSMI's). TSMI metrics are skipped when there is no TSMI.

    Returns:
        ``map_metrics`` (``T1_MAPE``, ``T1_RMSE_ms``, ...), ``TSMI_*`` when available, the
        std-map calibration (``T1_spearman``, ``T1_RMSE_over_std``, ``T1_ECE_ms``, same for T2;
        :mod:`mrf_monai.evaluation.uncertainty`) when the folder has std maps, and
        ``seconds_per_slice`` when the folder has ``timing.json``.
    """
    import json
    from pathlib import Path

    from ..io.subjects import read_reference
    from .uncertainty import uncertainty_metrics

    pred_dir = Path(pred_dir)
    label = pred_dir.name.removeprefix("sub-")
    ref = read_reference(ref_subject_dir)
    pred = read_prediction(pred_dir)
    mask = np.asarray(ref["mask"]).astype(bool)
    _check_shapes(pred, pred_dir, label, ref_subject_dir, mask.shape)
    ref_maps = {k: np.asarray(ref[k], dtype=np.float64) for k in ("t1_s", "t2_s", "pd")}
    pred_maps = {k: v for k, v in pred.items() if k != "tsmi"}
    out = map_metrics(pred_maps, ref_maps, mask)
    if "tsmi" in pred:
        tsmi = pred["tsmi"]
        sequence = _tsmi_sequence(pred_dir / f"sub-{label}_{TSMI_SUFFIX}.json", required=dictionary is None)
        if dictionary is None:
            from ..io.dictionary import cached_dictionary

            dictionary = cached_dictionary(sequence)
        elif sequence is not None and getattr(dictionary, "sequence", None) not in (None, sequence):
            raise ValueError(
                f"{_prediction_path(pred_dir, label, TSMI_SUFFIX)} was reconstructed with another sequence "
                f"than the dictionary's ({sequence.n_frames} vs {dictionary.sequence.n_frames} frames); give "
                "the dictionary of that sequence, or leave --dictionary out to use the cached one"
            )
        if dictionary.rank < tsmi.shape[0]:
            raise ValueError(
                f"{_prediction_path(pred_dir, label, TSMI_SUFFIX)} has rank {tsmi.shape[0]} but the "
                f"dictionary only {dictionary.rank}; give a dictionary of rank >= {tsmi.shape[0]}"
            )
        if dictionary.rank != tsmi.shape[0]:
            dictionary = dictionary.truncate_rank(tsmi.shape[0])
        ref_tsmi = reference_tsmi(ref_maps["t1_s"], ref_maps["t2_s"], ref_maps["pd"], mask, dictionary)
        out.update(tsmi_metrics(tsmi, ref_tsmi, mask))
    timing = pred_dir / "timing.json"
    if timing.is_file():
        try:
            t = json.loads(timing.read_text())
            seconds = float(t["mean_seconds_per_slice"]) if "mean_seconds_per_slice" in t else None
        except (OSError, ValueError, TypeError) as err:
            raise ValueError(f"{timing}: cannot be read as the timing of a reconstruction ({err})") from err
        if seconds is not None:
            out["seconds_per_slice"] = seconds
    out.update(uncertainty_metrics(pred_maps, ref_maps, mask))  # last: the older columns keep their places
    return out
