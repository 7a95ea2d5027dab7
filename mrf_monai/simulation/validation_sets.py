"""Validation sets that tell the truth: in-distribution held-out subjects and out-of-distribution
sets that training never sees.

Three sets, each a dataset folder of ordinary subject folders written by
:func:`mrf_monai.simulation.subjects.simulate_subject` (``raw.h5``, ``ref/``, ``sim.json``),
plus a manifest ``validation_set.json`` that lists every subject with its seed, phantom kind,
recipe and ingredients:

``"in-distribution"``
    Today's phantoms (MNI152 heads, default recipe) of the held-out slices of ``split``
    (``"val"`` or ``"test"``; :func:`mrf_monai.phantoms.augment.split_slices`), subject seeds
    ``seed, seed + 1, ...``, default noise. The held-out test set of ``docs/results.md`` is
    ``write_validation_set(out, "in-distribution", 4, seed=9000, split="test")``.
``"ood"``
    Out-of-distribution: subjects alternate between strongly deformed MNI152 heads with every
    fine-structure ingredient at the top of its range (validation kind ``"deformed"``) and
    fully synthetic label phantoms (kind ``"synthetic"``). Their subject seeds lie in the
    range reserved for validation (:mod:`mrf_monai.phantoms.recipe`: ``2**52`` onwards,
    refused by every training draw), so no training pair can be one of them; the deformed
    heads are also cut from the held-out slices of ``split``. Subject ``i`` is validation
    index ``seed + i // 2`` of its kind.
``"ood-4x-noise"``
    The same subjects as ``"ood"`` (same seeds, same noise realisation shape) with 4 times the
    default k-space noise.

Labels are ``<prefix><index:03d>`` with the prefix ``id``, ``ood`` or ``oodnoise`` (alphanumeric,
data contract) unless ``label_prefix`` is given.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mrf_monai import __version__
from mrf_monai.io.atomic import atomic_write_path
from mrf_monai.phantoms import sample_subject_parameters
from mrf_monai.phantoms.recipe import VALIDATION_RECIPES, VALIDATION_SEED_START, validation_seed
from mrf_monai.phantoms.world import world_to_dict

from .subjects import DEFAULT_NOISE, simulate_subject

__all__ = [
    "VALIDATION_SETS",
    "ValidationSetSpec",
    "ValidationSubject",
    "validation_set_subjects",
    "write_validation_set",
    "read_validation_set",
]

MANIFEST = "validation_set.json"


@dataclass(frozen=True)
class ValidationSetSpec:
    """What a validation set is made of.

    Attributes:
        phantom_kinds: cycle of phantom kinds of its subjects (``None``: today's phantoms;
            otherwise a validation kind of :data:`mrf_monai.phantoms.recipe.VALIDATION_RECIPES`).
        noise_factor: noise relative to :data:`mrf_monai.simulation.subjects.DEFAULT_NOISE`.
        label_prefix: default prefix of the subject labels.
        description: one line for the manifest.
    """

    phantom_kinds: tuple[str | None, ...]
    noise_factor: float
    label_prefix: str
    description: str


VALIDATION_SETS: dict[str, ValidationSetSpec] = {
    "in-distribution": ValidationSetSpec(
        (None,), 1.0, "id", "held-out slices and seeds of today's MNI152 phantoms, default noise"
    ),
    "ood": ValidationSetSpec(
        ("deformed", "synthetic"),
        1.0,
        "ood",
        "reserved validation seeds: strongly deformed MNI152 heads with fine structure, and fully "
        "synthetic label phantoms, alternating; default noise",
    ),
    "ood-4x-noise": ValidationSetSpec(
        ("deformed", "synthetic"), 4.0, "oodnoise", "the subjects of 'ood' with 4 x the default noise"
    ),
}


@dataclass(frozen=True)
class ValidationSubject:
    """One subject of a validation set: folder label, subject seed and phantom kind."""

    label: str
    seed: int
    phantom: str  # "template" or a validation kind


def _spec(kind: str) -> ValidationSetSpec:
    if kind not in VALIDATION_SETS:
        raise ValueError(f"validation set kind must be one of {sorted(VALIDATION_SETS)}, got {kind!r}")
    return VALIDATION_SETS[kind]


def validation_set_subjects(
    kind: str, n_subjects: int, seed: int = 0, label_prefix: str | None = None
) -> list[ValidationSubject]:
    """The subjects of validation set ``kind`` (module docstring), without writing anything.

    Args:
        kind: ``"in-distribution"``, ``"ood"`` or ``"ood-4x-noise"``.
        n_subjects: number of subjects (>= 1).
        seed: first subject seed (in-distribution) or first validation index (ood sets).
        label_prefix: alphanumeric prefix of the labels (default: the set's own).
    """
    spec = _spec(kind)
    if n_subjects < 1 or seed < 0:
        raise ValueError(f"n_subjects must be >= 1 and seed >= 0, got {n_subjects}, {seed}")
    prefix = spec.label_prefix if label_prefix is None else label_prefix
    if prefix and not prefix.isalnum():
        raise ValueError(f"label_prefix {prefix!r} must be alphanumeric (data contract, section 1)")
    width = max(3, len(str(n_subjects - 1)))
    out = []
    n_kinds = len(spec.phantom_kinds)
    for i in range(n_subjects):
        phantom = spec.phantom_kinds[i % n_kinds]
        if phantom is None:
            s, name = seed + i, "template"
            if s >= VALIDATION_SEED_START:
                raise ValueError(
                    f"in-distribution subject seed {s} lies in the range reserved for the "
                    f"out-of-distribution sets (>= 2**52); use seeds below {VALIDATION_SEED_START}"
                )
        else:
            s, name = validation_seed(phantom, seed + i // n_kinds), phantom
        out.append(ValidationSubject(f"{prefix}{i:0{width}d}", int(s), name))
    return out


def write_validation_set(
    out_dir: str | Path,
    kind: str,
    n_subjects: int,
    seed: int = 0,
    split: str = "val",
    *,
    n_slices: int = 1,
    n_frames: int | None = None,
    matrix: int | None = None,
    samples_per_readout: int | None = None,
    n_coils: int | None = None,
    noise: float | None = None,
    label_prefix: str | None = None,
    skip_existing: bool = False,
    device: str = "cpu",
    **simulate_kwargs: Any,
) -> Path:
    """Write validation set ``kind`` as a dataset folder (module docstring) and its manifest.

    Args:
        out_dir: dataset folder (created if needed).
        kind: ``"in-distribution"``, ``"ood"`` or ``"ood-4x-noise"``.
        n_subjects: number of subjects.
        seed: first subject seed (in-distribution) or first validation index (ood sets).
        split: ``"val"`` (tuning, e.g. LRTV's lambda) or ``"test"`` (reporting); never ``"train"``.
        n_slices, n_frames, matrix, samples_per_readout, n_coils: as :func:`simulate_subject`
            (``None``: its defaults, 200 frames, 230 x 230, 920 samples per readout, 1 coil, or
            a ``protocol``'s).
        noise: relative noise level (default: ``DEFAULT_NOISE`` times the set's noise factor).
        label_prefix: alphanumeric label prefix (default: the set's own).
        skip_existing: keep subject folders whose ``sim.json`` already has the same seed,
            split and noise (resume an interrupted run).
        device: where EPG and NUFFT run.
        **simulate_kwargs: further keyword arguments of :func:`simulate_subject`.

    Returns:
        the dataset folder.
    """
    if split not in ("val", "test"):
        raise ValueError(f"a validation set is drawn from split 'val' or 'test', got {split!r}")
    spec = _spec(kind)
    level = DEFAULT_NOISE * spec.noise_factor if noise is None else float(noise)
    subjects = validation_set_subjects(kind, n_subjects, seed, label_prefix)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    entries = []
    for sub in subjects:
        card = out / f"sub-{sub.label}" / "sim.json"
        if not (skip_existing and _same_subject(card, sub.seed, split, level)):
            simulate_subject(
                out,
                sub.label,
                sub.seed,
                n_slices=n_slices,
                n_frames=n_frames,
                n_coils=n_coils,
                noise=level,
                split=split,
                matrix=matrix,
                samples_per_readout=samples_per_readout,
                device=device,
                **simulate_kwargs,
            )
        params = sample_subject_parameters(sub.seed, split)
        entries.append(
            {
                "subject": f"sub-{sub.label}",
                "seed": sub.seed,
                "phantom": sub.phantom,
                "recipe": None if sub.phantom == "template" else VALIDATION_RECIPES[sub.phantom].to_dict(),
                "ingredients": [] if params.world is None else params.world.ingredients(),
                "world": world_to_dict(params.world),
            }
        )
    first = json.loads((out / f"sub-{subjects[0].label}" / "sim.json").read_text())
    manifest = {
        "software": f"mrf_monai {__version__}",
        "generator": "mrf_monai.simulation.validation_sets.write_validation_set",
        "set": kind,
        "description": spec.description,
        "split": split,
        "first_seed_or_index": int(seed),
        "noise": level,
        "noise_factor": level / DEFAULT_NOISE,
        "slices_per_subject": n_slices,
        # as simulated (sim.json of the first subject)
        "n_frames": first.get("n_frames"),
        "matrix": first.get("matrix"),
        # (subjects kept by skip_existing from before the rename record "n_samples")
        "samples_per_readout": first.get("samples_per_readout", first.get("n_samples")),
        "n_coils": first.get("n_coils"),
        "subjects": entries,
        "docs": "docs/simulation.md, 'Validation sets'",
    }
    with atomic_write_path(out / MANIFEST) as tmp:
        tmp.write_text(json.dumps(manifest, indent=2))
    return out


def _same_subject(card: Path, seed: int, split: str, noise: float) -> bool:
    try:
        c = json.loads(card.read_text())
    except (OSError, ValueError):
        return False
    raw = card.parent / "raw.h5"
    return (
        raw.is_file()
        and c.get("seed") == seed
        and c.get("split") == split
        and abs(float(c.get("noise", {}).get("relative", -1.0)) - noise) <= 1e-12 * max(noise, 1e-30)
    )


def read_validation_set(path: str | Path) -> dict[str, Any]:
    """Read a validation set's manifest and check that its subject folders are there.

    Returns:
        the manifest dict, with ``"subject_dirs"``: the subject folders (``Path``) in order.

    Raises:
        FileNotFoundError: no manifest, or a listed subject folder (named) lacks ``raw.h5``.
        ValueError: the manifest is not valid JSON.
    """
    folder = Path(path)
    file = folder / MANIFEST
    if not file.is_file():
        raise FileNotFoundError(
            f"{file}: no validation-set manifest; write the set with "
            "mrf_monai.simulation.validation_sets.write_validation_set"
        )
    try:
        manifest = json.loads(file.read_text())
    except ValueError as err:
        raise ValueError(f"{file}: not valid JSON ({err}); rewrite the set") from err
    dirs: Sequence[Path] = [folder / e["subject"] for e in manifest.get("subjects", [])]
    missing = [str(d) for d in dirs if not (d / "raw.h5").is_file()]
    if missing:
        raise FileNotFoundError(
            f"{file}: subject folder(s) without raw.h5: {missing}; rerun write_validation_set "
            "(skip_existing=True keeps the finished ones)"
        )
    manifest["subject_dirs"] = list(dirs)
    return manifest
