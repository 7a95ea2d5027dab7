"""Phantom recipes and the seeds reserved for the validation sets."""

from __future__ import annotations

import json

import pytest

from mrf_monai.phantoms import sample_subject_maps, sample_subject_parameters, split_slices
from mrf_monai.phantoms.recipe import (
    VALIDATION_RECIPES,
    VALIDATION_SEED_BLOCKS,
    VALIDATION_SEED_START,
    VALIDATION_SEED_STOP,
    PhantomRecipe,
    check_training_seed,
    check_training_seeds,
    is_validation_seed,
    recipe_for_seed,
    validation_kind_of_seed,
    validation_seed,
)

Z_TRAIN = int(split_slices("train")[20])
Z_VAL = int(split_slices("val")[3])


def test_default_recipe_and_json_round_trip():
    assert PhantomRecipe().is_default
    wide = PhantomRecipe.wide()
    assert not wide.is_default
    for recipe in (PhantomRecipe(), wide, *VALIDATION_RECIPES.values()):
        text = json.dumps(recipe.to_dict())
        assert PhantomRecipe.from_dict(json.loads(text)) == recipe
    # missing keys take the defaults; lists become tuples
    r = PhantomRecipe.from_dict({"vessel_probability": 0.5, "deformation_mm": [1, 2]})
    assert r.vessel_probability == 0.5 and r.deformation_mm == (1.0, 2.0) and r.folding_probability == 0.0


def test_bad_recipes_are_clear_errors():
    with pytest.raises(ValueError, match=r"unknown phantom recipe key\(s\) \['vesels'\]"):
        PhantomRecipe.from_dict({"vesels": 0.5})
    with pytest.raises(ValueError, match="vessel_probability must be a probability"):
        PhantomRecipe(vessel_probability=1.5)
    with pytest.raises(ValueError, match="synthetic_styles"):
        PhantomRecipe(synthetic_styles=("checkerboard",))
    with pytest.raises(ValueError, match="deformation_mm"):
        PhantomRecipe(deformation_mm=(5.0, 2.0))


def test_validation_seed_blocks():
    assert validation_seed("deformed", 0) == VALIDATION_SEED_START == 2**52
    assert validation_seed("synthetic", 3) == 2**52 + 2**32 + 3
    assert VALIDATION_SEED_STOP < 2**53  # exact in JSON doubles
    for kind, (start, stop) in VALIDATION_SEED_BLOCKS.items():
        assert validation_kind_of_seed(start) == kind and validation_kind_of_seed(stop - 1) == kind
        assert VALIDATION_SEED_START <= start < stop <= VALIDATION_SEED_STOP
    assert validation_kind_of_seed(VALIDATION_SEED_START - 1) is None
    assert not is_validation_seed(VALIDATION_SEED_START - 1) and is_validation_seed(VALIDATION_SEED_STOP - 1)
    assert not is_validation_seed(VALIDATION_SEED_STOP)
    with pytest.raises(ValueError, match="validation kind must be one of"):
        validation_seed("unseen", 0)


def test_training_draws_refuse_the_validation_range():
    for seed in (VALIDATION_SEED_START, validation_seed("synthetic", 7), VALIDATION_SEED_STOP - 1):
        with pytest.raises(ValueError, match="reserved for the out-of-distribution validation sets"):
            check_training_seed(seed, "train")
        with pytest.raises(ValueError, match="reserved"):
            sample_subject_parameters(seed, "train")
        with pytest.raises(ValueError, match="reserved"):
            sample_subject_maps(seed, Z_TRAIN, 48, "train", recipe=PhantomRecipe.wide())
        check_training_seed(seed, "val")  # validation draws may use them
    # precomputed parameters do not get around the check
    p = sample_subject_parameters(validation_seed("deformed", 0), "val")
    with pytest.raises(ValueError, match="reserved"):
        sample_subject_maps(validation_seed("deformed", 0), Z_TRAIN, 48, "train", parameters=p)
    # the largest training seeds below the range and above it are fine
    check_training_seed(VALIDATION_SEED_START - 1, "train")
    check_training_seed(VALIDATION_SEED_STOP, "train")
    # SimulatedPairDataset(seed=k) uses subject seeds k * 2**32 + i: k = 2**20 is reserved
    with pytest.raises(ValueError, match="reserved"):
        check_training_seed(2**20 * 2**32 + 5, "train")
    # a whole block of seeds (a dataset) is checked before any item is drawn
    with pytest.raises(ValueError, match="reserved"):
        check_training_seeds(VALIDATION_SEED_START - 10, 11, "train")
    check_training_seeds(VALIDATION_SEED_START - 10, 10, "train")
    check_training_seeds(VALIDATION_SEED_STOP, 10, "train")
    check_training_seeds(VALIDATION_SEED_START, 10, "val")


def test_validation_seeds_use_their_fixed_recipe():
    seed = validation_seed("synthetic", 0)
    assert recipe_for_seed(seed, "val", None) == VALIDATION_RECIPES["synthetic"]
    assert recipe_for_seed(seed, "val", VALIDATION_RECIPES["synthetic"]) == VALIDATION_RECIPES["synthetic"]
    with pytest.raises(ValueError, match="recipe is fixed"):
        recipe_for_seed(seed, "val", PhantomRecipe.wide())
    assert recipe_for_seed(5, "train", None) is None
    p = sample_subject_parameters(seed, "val")
    assert p.world is not None and p.world.synthetic
    d = sample_subject_parameters(validation_seed("deformed", 0), "val")
    assert d.world.deformation is not None and not d.world.synthetic
    m = sample_subject_maps(seed, Z_VAL, 48, "val")
    assert m["labels"].max() >= 16  # synthetic region labels
