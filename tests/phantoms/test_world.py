"""The phantom world: recipes drawn per subject, one entry point, today's phantoms unchanged."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from mrf_monai.phantoms import sample_subject_maps, sample_subject_parameters, split_slices
from mrf_monai.phantoms.anatomy import TISSUE_NAMES
from mrf_monai.phantoms.recipe import PhantomRecipe, validation_seed
from mrf_monai.phantoms.tissues import LABELS, T1_RANGE_S, T2_RANGE_S, TISSUE_RANGES, TISSUES
from mrf_monai.phantoms.world import world_to_dict

MATRIX = 64
Z = int(split_slices("train")[25])
KEYS = ("t1_s", "t2_s", "pd", "mask", "labels")

ALONE = {
    "deformation": PhantomRecipe(deformation_probability=1.0),
    "tissue_ranges": PhantomRecipe(tissue_range_probability=1.0),
    "folding": PhantomRecipe(folding_probability=1.0),
    "csf_spaces": PhantomRecipe(csf_space_probability=1.0),
    "vessels": PhantomRecipe(vessel_probability=1.0),
    "slab": PhantomRecipe(slab_probability=1.0),
    "varied_lesions": PhantomRecipe(lesion_probability=1.0, varied_lesion_probability=1.0),
    "phase": PhantomRecipe(phase_probability=1.0),
    "synthetic": PhantomRecipe(synthetic_fraction=1.0),
    "wide": PhantomRecipe.wide(),
}


def _check_physical(m):
    for k in ("t1_s", "t2_s", "pd"):
        assert np.isfinite(m[k]).all(), k
    has = np.abs(m["pd"]) > 0
    t1, t2 = m["t1_s"][has], m["t2_s"][has]
    assert (t2 <= t1).all()
    assert t1.min() >= T1_RANGE_S[0] and t1.max() <= T1_RANGE_S[1]
    assert t2.min() >= T2_RANGE_S[0] and t2.max() <= T2_RANGE_S[1]
    assert (m["t1_s"][~has] == 0).all() and (m["t2_s"][~has] == 0).all()
    assert np.abs(m["pd"]).max() <= 1.3
    assert m["fractions"].min() >= 0.0 and m["fractions"].sum(0).max() <= 1.0 + 1e-5
    assert m["mask"].sum() > 0.05 * MATRIX**2 and has[m["mask"]].all()


def test_default_recipe_gives_todays_maps_exactly():
    for seed in (3, 16):  # subject 16 of train has lesions
        a = sample_subject_maps(seed, Z, MATRIX, "train")
        b = sample_subject_maps(seed, Z, MATRIX, "train", recipe=PhantomRecipe())
        for k in (*KEYS, "fractions"):
            assert np.array_equal(a[k], b[k]), (seed, k)
    assert sample_subject_parameters(16, "train").lesions


@pytest.mark.parametrize("name", sorted(ALONE))
def test_each_ingredient_is_physical_and_deterministic(name):
    recipe = ALONE[name]
    a = sample_subject_maps(7, Z, MATRIX, "train", recipe=recipe)
    b = sample_subject_maps(7, Z, MATRIX, "train", recipe=recipe)
    for k in KEYS:
        assert np.array_equal(a[k], b[k]), k
    _check_physical(a)
    default = sample_subject_maps(7, Z, MATRIX, "train")
    if name == "varied_lesions":
        # the subject's lesions may miss this slice; the draw changed the lesion tissue
        p = sample_subject_parameters(7, "train", recipe=recipe)
        assert p.world.varied_lesions and p.lesion_type.startswith("varied-")
    else:
        assert not np.array_equal(a["t1_s"], default["t1_s"]) or not np.array_equal(a["pd"], default["pd"])
    c = sample_subject_maps(8, Z, MATRIX, "train", recipe=recipe)
    assert not np.array_equal(a["t1_s"], c["t1_s"])


def test_validation_kinds_are_physical():
    z = int(split_slices("val")[2])
    for kind in ("deformed", "synthetic"):
        for i in range(2):
            _check_physical(sample_subject_maps(validation_seed(kind, i), z, MATRIX, "val"))


def test_switching_one_ingredient_off_keeps_the_other_draws():
    wide = PhantomRecipe.wide(synthetic_fraction=0.0)
    no_vessels = dataclasses.replace(wide, vessel_probability=0.0)
    for seed in range(6):
        a = sample_subject_parameters(seed, "train", recipe=wide)
        b = sample_subject_parameters(seed, "train", recipe=no_vessels)
        assert not b.world.vessels
        assert a.world.deformation == b.world.deformation and a.world.phase == b.world.phase
        assert a.tissues == b.tissues and a.lesions == b.lesions and a.augmentation == b.augmentation
        assert dataclasses.replace(a.world, vessels=False, recipe=no_vessels) == b.world


def test_wide_recipe_mixes_its_ingredients_at_the_stated_rates():
    recipe = PhantomRecipe.wide()
    worlds = [sample_subject_parameters(s, "train", recipe=recipe).world for s in range(300)]
    synthetic = np.mean([w.synthetic for w in worlds])
    assert abs(synthetic - recipe.synthetic_fraction) < 0.08
    heads = [w for w in worlds if not w.synthetic]
    assert abs(np.mean([w.vessels for w in heads]) - recipe.vessel_probability) < 0.1
    assert abs(np.mean([w.deformation is not None for w in heads]) - recipe.deformation_probability) < 0.1
    assert {w.synthetic_style for w in worlds if w.synthetic} == {"fields", "voronoi"}


def test_tissue_ranges_span_the_literature_ranges():
    recipe = PhantomRecipe(tissue_range_probability=1.0)
    draws = [sample_subject_parameters(s, "train", recipe=recipe).tissues for s in range(80)]
    for name, ((a1, b1), (a2, b2), (a3, b3)) in TISSUE_RANGES.items():
        t1 = np.array([d[name].t1_s for d in draws])
        t2 = np.array([d[name].t2_s for d in draws])
        pd = np.array([d[name].pd for d in draws])
        assert t1.min() >= a1 and t1.max() <= b1 and pd.min() >= a3 and pd.max() <= b3, name
        assert t2.min() >= a2 * 0.999 and t2.max() <= b2 and (t2 < t1).all(), name
        # spread over most of the range (log-uniform)
        assert np.log(t1.max() / t1.min()) > 0.8 * np.log(b1 / a1), name
    # wider than today's per-subject spread around the nominal WM T1
    today = np.array([sample_subject_parameters(s, "train").tissues["wm"].t1_s for s in range(80)])
    wm = np.array([d["wm"].t1_s for d in draws])
    assert np.std(np.log(wm)) > 0.6 * np.std(np.log(today))
    assert abs(np.mean(np.log(wm)) - np.log(TISSUES["wm"].t1_s)) < 0.15


def test_vessels_are_blood_and_count_as_brain():
    recipe = PhantomRecipe(vessel_probability=1.0, strength=2.0)
    m = sample_subject_maps(3, Z, 230, "train", recipe=recipe)
    vessel = m["fractions"][TISSUE_NAMES.index("vessel")]
    sel = vessel > 0.95
    assert sel.sum() > 10
    assert np.median(m["t1_s"][sel]) > 1.3 and np.median(np.abs(m["pd"])[sel]) > 0.75
    assert (m["labels"] == LABELS["vessel"]).any()
    p = sample_subject_parameters(3, "train", recipe=recipe)
    assert json_ok(world_to_dict(p.world))


def json_ok(d) -> bool:
    import json

    return json.loads(json.dumps(d)) == d and "ingredients" in d


def test_augment_false_drops_the_deformation():
    recipe = PhantomRecipe(deformation_probability=1.0)
    a = sample_subject_maps(2, Z, MATRIX, "train", augment=False, recipe=recipe)
    b = sample_subject_maps(2, Z, MATRIX, "train", augment=False)
    assert np.array_equal(a["t1_s"], b["t1_s"])
