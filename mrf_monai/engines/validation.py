"""Validation scores shared by the trainers: MAPE of matched maps, TSMI NRMSE, display images."""

from __future__ import annotations

from typing import Any

import torch

from mrf_monai.transforms.complex import channels_to_complex
from mrf_monai.transforms.matching import DictionaryMatch

__all__ = ["mape", "nrmse", "map_errors", "display_image"]


def mape(estimate: torch.Tensor, reference: torch.Tensor, mask: torch.Tensor) -> float:
    """Mean absolute percentage error (%) over ``mask & (reference > 0)`` (``nan`` if that is empty)."""
    m = mask.bool() & (reference > 0)
    if not bool(m.any()):
        return float("nan")
    return float(((estimate[m] - reference[m]).abs() / reference[m]).mean() * 100.0)


def nrmse(estimate: torch.Tensor, reference: torch.Tensor) -> float:
    """``||estimate - reference|| / ||reference||`` over all entries."""
    den = torch.linalg.vector_norm(reference).clamp(min=1e-12)
    return float(torch.linalg.vector_norm(estimate - reference) / den)


def map_errors(
    estimate: torch.Tensor, reference: torch.Tensor, dictionary: Any, condition: torch.Tensor | None = None
) -> dict[str, Any]:
    """T1/T2 MAPE (%) of the dictionary-matched maps of ``estimate`` against those of ``reference``.

    Args:
        estimate, reference: ``(2R, H, W)`` real channels ``[Re, Im]`` of compressed TSMIs.
        dictionary: ``MRFDictionary`` of their subspace.
        condition: the network's input (same layout); its errors are added as ``cond_t1_mape``
            and ``cond_t2_mape`` (what the network improves on).

    Returns:
        ``t1_mape``, ``t2_mape`` (and ``cond_*``), ``metric = t1_mape + t2_mape`` and ``maps``
        (``t1_sample``, ``t1_reference``, ``t2_sample``, ``t2_reference``) inside the
        reference's mask.
    """
    match = DictionaryMatch(dictionary)
    m_ref = match(channels_to_complex(reference.float()))
    mask = m_ref["mask"]
    m_est = match(channels_to_complex(estimate.float()), mask=mask)
    out: dict[str, Any] = {
        "t1_mape": mape(m_est["t1_s"], m_ref["t1_s"], mask),
        "t2_mape": mape(m_est["t2_s"], m_ref["t2_s"], mask),
    }
    if condition is not None:
        m_cond = match(channels_to_complex(condition.float()), mask=mask)
        out["cond_t1_mape"] = mape(m_cond["t1_s"], m_ref["t1_s"], mask)
        out["cond_t2_mape"] = mape(m_cond["t2_s"], m_ref["t2_s"], mask)
    out["metric"] = out["t1_mape"] + out["t2_mape"]
    out["maps"] = {
        "t1_sample": m_est["t1_s"],
        "t1_reference": m_ref["t1_s"],
        "t2_sample": m_est["t2_s"],
        "t2_reference": m_ref["t2_s"],
    }
    return out


def display_image(x: torch.Tensor) -> torch.Tensor:
    """``(H, W)`` -> ``(1, H, W)`` scaled to ``[0, 1]`` by its 99.5th percentile (for TensorBoard)."""
    x = x.detach().float().cpu()
    hi = torch.quantile(x.flatten(), 0.995).clamp(min=1e-12)
    return (x / hi).clamp(0, 1)[None]
