"""The B1 axis of a dictionary, as the matching sees it: blocks of atoms per B1 value.

A dictionary with a B1 axis (``dictionary.b1``, e.g. ``build_dictionary(..., b1_values=...)``)
holds atoms at a grid of relative transmit fields. With a B1 map, each voxel is matched only
against the atoms of the grid value nearest to its B1 (its *block*); a voxel whose B1 is not a
positive finite number (outside the B1 map's coverage) is matched against every atom (B1 free).
B1 values outside the grid's range take the nearest end of the grid: build the dictionary over
the range the maps span (:func:`b1_coverage` counts the voxels beyond it).
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["b1_blocks", "nearest_b1_block", "b1_coverage"]

#: Voxel block of a voxel whose B1 is unknown: search every atom.
FREE = -1


def b1_blocks(dictionary: Any, device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``(grid (B,) float64 sorted B1 values, atom_block (N,) int64)`` or None without a B1 axis."""
    b1 = getattr(dictionary, "b1", None)
    if b1 is None:
        return None
    b1 = torch.as_tensor(b1).to(device=device, dtype=torch.float64).reshape(-1)
    grid, atom_block = torch.unique(b1, sorted=True, return_inverse=True)
    return grid, atom_block


def nearest_b1_block(b1_map: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """Index into ``grid`` of the nearest value for each B1 in ``b1_map``; :data:`FREE` (-1)
    where the B1 is not a positive finite number. Ties go to the lower value."""
    v = b1_map.to(device=grid.device, dtype=torch.float64).reshape(-1)
    valid = torch.isfinite(v) & (v > 0)
    safe = torch.where(valid, v, torch.ones((), dtype=v.dtype, device=v.device))
    hi = torch.searchsorted(grid, safe).clamp(max=grid.numel() - 1)
    lo = (hi - 1).clamp(min=0)
    nearest = torch.where((safe - grid[lo]).abs() <= (grid[hi] - safe).abs(), lo, hi)
    return torch.where(valid, nearest, torch.full_like(nearest, FREE))


def b1_coverage(b1_map: torch.Tensor, dictionary: Any, mask: torch.Tensor | None = None) -> dict[str, float]:
    """How well the dictionary's B1 grid covers a B1 map (inside ``mask`` when given).

    Returns:
        ``{"n_voxels", "n_unknown" (not positive finite), "n_outside" (beyond the grid's range by
        more than half its largest step), "max_error" (largest distance of a known B1 to its grid
        value)}``.
    """
    blocks = b1_blocks(dictionary, "cpu")
    if blocks is None:
        raise ValueError(
            "the dictionary has no B1 axis; build it with b1_values (physics.dictionary.b1_grid)"
        )
    grid = blocks[0]
    v = torch.as_tensor(b1_map).to(torch.float64).cpu()
    if mask is not None:
        v = v[torch.as_tensor(mask).cpu().to(torch.bool)]
    v = v.reshape(-1)
    block = nearest_b1_block(v, grid)
    known = block != FREE
    err = (v[known] - grid[block[known]]).abs()
    half = 0.5 * float((grid[1:] - grid[:-1]).max()) if grid.numel() > 1 else 0.0
    return {
        "n_voxels": float(v.numel()),
        "n_unknown": float((~known).sum()),
        "n_outside": float((err > half + 1e-9).sum()),
        "max_error": float(err.max()) if err.numel() else 0.0,
    }
