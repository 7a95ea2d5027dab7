# Copyright (c) mrf_monai developers.
# Licensed under the Apache License, Version 2.0.
"""The training configs of ``bundles/mrf_iddpm`` through ``monai.bundle`` (tiny config, CPU)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigParser, run

from mrf_monai.diffusion.model import load_checkpoint, load_checkpoint_model
from mrf_monai.diffusion.training import find_last_checkpoint

CONFIGS = Path(__file__).resolve().parents[2] / "bundles" / "mrf_iddpm" / "configs"
META = str(CONFIGS / "metadata.json")
TINY = [str(CONFIGS / "train.json"), str(CONFIGS / "train_tiny.json")]


def _run(out: Path, **override):
    run(
        "training",
        meta_file=META,
        config_file=TINY,
        logging_file=str(CONFIGS / "logging.conf"),
        output_dir=str(out / "run"),
        cache_dir=str(out / "cache"),
        **override,
    )


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bundle")
    n = torch.get_num_threads()
    try:
        _run(out, max_steps=2)
        # resume: same output folder, more steps
        _run(out, max_steps=3, val_every=0)
    finally:
        torch.set_num_threads(n)
    return out


def test_tiny_training_runs_resumes_and_exports(tiny_run):
    ckpts = tiny_run / "run" / "checkpoints"
    last = find_last_checkpoint(ckpts)
    assert last is not None and last.name == "checkpoint_00000003.pt"
    assert (ckpts / "checkpoint_00000002.pt").is_file()
    assert list((tiny_run / "run" / "tensorboard").iterdir())
    ckpt = torch.load(last, weights_only=False)
    assert ckpt["step"] == 3
    hp = ckpt["hyper_parameters"]
    assert hp["model"]["channels"] == [16, 16] and hp["model"]["rank"] == 2
    assert hp["loss"]["loss_type"] == "hybrid"
    assert tuple(hp["data"]["basis"].shape) == (20, 2) and hp["data"]["basis"].is_complex()
    assert isinstance(hp["data"]["sequence_key"], str) and hp["data"]["patch_size"] == [16, 16]
    assert len(ckpt["history"]) == 1  # validation at step 2 only (val_every=0 in the resumed run)
    assert {"t1_mape", "t2_mape", "metric"} <= set(ckpt["history"][0])
    # best model (exported at the validation of step 2) loads without any config
    best = load_checkpoint(tiny_run / "run" / "model.pt")
    assert best["step"] == 2
    net = load_checkpoint_model(tiny_run / "run" / "model.pt")
    assert net.in_channels == 8 and net.out_channels == 8


def test_default_config_parses_and_overrides():
    parser = ConfigParser()
    parser.read_config(str(CONFIGS / "train.json"))
    parser.read_meta(META)
    parser.update({"channels": [32, 64], "attention_levels": [False, True], "lr": 2e-4})
    assert parser.get_parsed_content("model_kwargs")["channels"] == [32, 64]
    assert parser["trainer"]["lr"] == "@lr"
    assert parser.get_parsed_content("lr") == 2e-4
    net = parser.get_parsed_content("network_def")
    assert net.in_channels == 20 and net.out_channels == 20
    sched = parser.get_parsed_content("scheduler_kwargs")
    assert sched == {
        "num_train_timesteps": 1000,
        "beta_start": 1e-4,
        "beta_end": 0.02,
        "schedule": "linear_beta",
    }
    assert parser.get_parsed_content("output_dir") == "runs/mrf_iddpm"
    assert parser.get_parsed_content("model_path") == "bundles/mrf_iddpm/models/model.pt"

    multi = ConfigParser()
    multi.read_config([str(CONFIGS / "train.json"), str(CONFIGS / "multi_gpu_train.json")])
    assert multi.get_parsed_content("amp") is True
    assert multi.get_parsed_content("data_seed") == multi.get_parsed_content("seed")  # RANK unset: rank 0


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory):
    """Tiny subject folders as `mrf-monai simulate` writes them (train_tiny's sequence and size)."""
    from mrf_monai.simulation import simulate_subject

    root = tmp_path_factory.mktemp("subjects")
    tiny = dict(n_frames=20, matrix=32, n_samples=64)
    simulate_subject(root / "train", "01", seed=1, n_slices=2, split="train", **tiny)
    simulate_subject(root / "train", "02", seed=2, n_slices=1, split="train", **tiny)
    simulate_subject(root / "val", "01", seed=3, n_slices=1, split="val", **tiny)
    return root


def test_tiny_training_from_a_dataset_folder(tiny_dataset, tmp_path):
    n = torch.get_num_threads()
    try:
        _run(tmp_path, max_steps=2, train_dir=str(tiny_dataset / "train"), val_dir=str(tiny_dataset / "val"))
    finally:
        torch.set_num_threads(n)
    ckpt = torch.load(find_last_checkpoint(tmp_path / "run" / "checkpoints"), weights_only=False)
    assert ckpt["step"] == 2
    data = ckpt["hyper_parameters"]["data"]
    assert data["source"] == "subjects" and data["train_dir"] == str(tiny_dataset / "train")
    assert data["val_dir"] == str(tiny_dataset / "val")
    assert tuple(data["basis"].shape) == (20, 2)
    assert len(ckpt["history"]) == 1 and {"t1_mape", "t2_mape"} <= set(ckpt["history"][0])


def test_dataset_folder_config_selects_subject_pairs(tiny_dataset):
    from mrf_monai.simulation import SimulatedPairDataset, SubjectPairDataset

    parser = ConfigParser()
    parser.read_config(TINY)
    parser.read_meta(META)
    parser.update({"train_dir": str(tiny_dataset / "train"), "cache_dir": None})
    train = parser.get_parsed_content("train_pairs")
    assert isinstance(train, SubjectPairDataset) and len(train) == 3
    assert parser.get_parsed_content("simulated_train") is None  # never simulated
    assert isinstance(parser.get_parsed_content("val_dataset"), SimulatedPairDataset)  # val_dir unset
    assert parser.get_parsed_content("sequence") == train.sequence
    default = ConfigParser()
    default.read_config(str(CONFIGS / "train.json"))
    assert (
        default.get_parsed_content("train_dir") is None
        and default.get_parsed_content("subject_train") is None
    )
