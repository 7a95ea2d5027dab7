"""Phantom world: a figure of every ingredient and the generation time per slice.

Writes ``docs/figures/phantom_world.png`` (T1, T2, |PD| and PD phase of one slice per
ingredient of :class:`mrf_monai.phantoms.recipe.PhantomRecipe`, each switched on alone, plus
the fully synthetic styles, the proposed wide training recipe and the two
out-of-distribution validation kinds) and prints the time to generate one 230 x 230 slice
with each of them against today's default phantom, measured in the same run.

Run (one thread, as the training data loader workers do)::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_phantoms.py [--repeats 5] [--no-figure]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from mrf_monai.phantoms import load_mni_templates, sample_subject_maps, split_slices
from mrf_monai.phantoms.recipe import PhantomRecipe, validation_seed

FIGURE = Path(__file__).resolve().parents[1] / "docs" / "figures" / "phantom_world.png"

#: (row title, recipe, or the name of a validation kind)
ROWS: list[tuple[str, PhantomRecipe | str | None]] = [
    ("today's default", None),
    ("strong deformation", PhantomRecipe(deformation_probability=1.0, deformation_mm=(8.0, 8.0))),
    ("tissue ranges", PhantomRecipe(tissue_range_probability=1.0)),
    ("cortical folding", PhantomRecipe(folding_probability=1.0)),
    ("sulci + PVS", PhantomRecipe(csf_space_probability=1.0)),
    ("vessels", PhantomRecipe(vessel_probability=1.0)),
    ("3 mm slab", PhantomRecipe(slab_probability=1.0)),
    ("varied lesions", PhantomRecipe(lesion_probability=1.0, varied_lesion_probability=1.0)),
    ("strong PD phase", PhantomRecipe(phase_probability=1.0)),
    ("synthetic: fields", PhantomRecipe(synthetic_fraction=1.0, synthetic_styles=("fields",))),
    ("synthetic: voronoi", PhantomRecipe(synthetic_fraction=1.0, synthetic_styles=("voronoi",))),
    ("wide training recipe", PhantomRecipe.wide(synthetic_fraction=0.0)),
    ("validation: deformed", "deformed"),
    ("validation: synthetic", "synthetic"),
]


def _maps(entry, index: int, slice_index: int, split: str, matrix: int = 230) -> dict:
    if isinstance(entry, str):
        return sample_subject_maps(validation_seed(entry, index), slice_index, matrix, "val")
    return sample_subject_maps(index, slice_index, matrix, split, recipe=entry)


def _time(entry, repeats: int) -> float:
    """Median seconds per 230 x 230 slice over ``repeats`` subjects (each a new seed)."""
    val = split_slices("val")
    train = split_slices("train")
    times = []
    for r in range(repeats):
        z = int(val[r % len(val)]) if isinstance(entry, str) else int(train[(7 * r) % len(train)])
        t0 = time.perf_counter()
        _maps(entry, 100 + r, z, "val" if isinstance(entry, str) else "train")
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def figure(path: Path) -> None:
    """Two blocks of rows (one row per entry of :data:`ROWS`): T1, T2, |PD| and PD phase."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    z_train = 78  # a train slice through the ventricles
    z_val = int(split_slices("val")[4])
    n_rows = (len(ROWS) + 1) // 2
    fig, axes = plt.subplots(n_rows, 8, figsize=(16.0, 2.05 * n_rows), squeeze=False)
    for ax in axes.ravel():
        ax.set_axis_off()
    for r, (title, entry) in enumerate(ROWS):
        seed = {"varied lesions": 8, "vessels": 2}.get(title, 3)
        z = z_train
        if title == "varied lesions":  # a slice through the subject's largest lesion
            from mrf_monai.phantoms import sample_subject_parameters

            p = sample_subject_parameters(seed, "train", recipe=entry)
            z = int(round(max(p.lesions, key=lambda les: les.radii_mm[0]).centre[2]))
        if isinstance(entry, str):
            m = _maps(entry, 0 if entry == "deformed" else 1, z_val, "val")
        else:
            m = sample_subject_maps(seed, z, 230, "train", recipe=entry, check_split=False)
        pd = m["pd"]
        images = [
            (m["t1_s"], "T1 (s)", 0.0, 4.0, "magma"),
            (m["t2_s"], "T2 (s)", 0.0, 0.3, "viridis"),
            (np.abs(pd), "|PD|", 0.0, 1.0, "gray"),
            (np.where(np.abs(pd) > 0.05, np.angle(pd), np.nan), "PD phase (rad)", -np.pi, np.pi, "twilight"),
        ]
        row, block = r % n_rows, r // n_rows
        for c, (img, name, lo, hi, cmap) in enumerate(images):
            ax = axes[row, 4 * block + c]
            im = ax.imshow(img.T, cmap=cmap, vmin=lo, vmax=hi, origin="upper", interpolation="nearest")
            if c == 0:
                ax.text(2, 12, title, color="white", fontsize=9, va="top")
            if row == n_rows - 1 or (block == 1 and r == len(ROWS) - 1):
                fig.colorbar(im, ax=ax, orientation="horizontal", fraction=0.05, pad=0.02).set_label(
                    name, fontsize=8
                )
    fig.suptitle(
        "mrf_monai phantom world: each ingredient alone (train slice 78), the wide training recipe and "
        "the two out-of-distribution validation kinds (val slice)",
        fontsize=10,
        y=0.995,
    )
    fig.tight_layout(pad=0.3, rect=(0.0, 0.0, 1.0, 0.98))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=64)
    plt.close(fig)
    print(f"wrote {path}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5, help="subjects timed per row (median)")
    ap.add_argument("--no-figure", action="store_true", help="only the timings")
    args = ap.parse_args()
    torch.set_num_threads(1)
    load_mni_templates()  # not timed: loaded once per process
    sample_subject_maps(0, 78, 230, "train")  # warm-up
    base = _time(None, args.repeats)
    print(f"time per 230 x 230 slice, median of {args.repeats} subjects (one thread)")
    print(f"{'ingredient':<24} {'ms':>8} {'x default':>10}")
    for title, entry in ROWS:
        t = base if entry is None else _time(entry, args.repeats)
        print(f"{title:<24} {1e3 * t:8.0f} {t / base:10.2f}")
    if not args.no_figure:
        figure(FIGURE)


if __name__ == "__main__":
    main()
