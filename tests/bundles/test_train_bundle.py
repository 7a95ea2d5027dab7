# Copyright (c) mrf_monai developers.
# Licensed under the Apache License, Version 2.0.
"""The training configs of ``bundles/mrf_iddpm`` through ``monai.bundle`` (tiny config, CPU)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigParser, run

from mrf_monai.diffusion.model import load_checkpoint, load_checkpoint_model, load_model
from mrf_monai.engines import find_last_checkpoint
from mrf_monai.io.weights import load_training_checkpoint

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
    ckpt = torch.load(last, weights_only=True)
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
    # model.pt is a plain state dict (what MONAI bundles expect), model.json its hyper-parameters
    plain = torch.load(tiny_run / "run" / "model.pt", weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in plain.values())
    assert all(torch.equal(plain[k], v) for k, v in best["state_dict"].items())
    again, hp = load_model(tiny_run / "run" / "model.pt")
    assert hp["step"] == 2 and hp["data"]["patch_size"] == [16, 16] and hp["model"]["prediction_type"] == "v"
    assert (tiny_run / "run" / "model_final.json").is_file() and (
        tiny_run / "run" / "checkpoints" / "best.json"
    ).is_file()


def test_default_config_parses_and_overrides():
    parser = ConfigParser()
    parser.read_config(str(CONFIGS / "train.json"))
    parser.read_meta(META)
    parser.update({"channels": [32, 64], "attention_levels": [False, True], "lr": 2e-4})
    assert parser.get_parsed_content("network_def").hyper_parameters["channels"] == [32, 64]
    assert parser["optimizer"]["lr"] == "@lr" and parser["trainer"]["optimizer"] == "@optimizer"
    assert parser.get_parsed_content("lr") == 2e-4
    assert parser.get_parsed_content("optimizer").defaults["lr"] == 2e-4
    default = ConfigParser()
    default.read_config(str(CONFIGS / "train.json"))
    net = default.get_parsed_content("network_def")
    assert net.in_channels == 20 and net.out_channels == 20  # the shipped model's defaults
    assert net.hyper_parameters["channels"] == [32, 64, 64] and net.prediction_type == "v"
    assert default.get_parsed_content("patch_size") == [32, 32]
    crop = default.get_parsed_content("train#preprocessing").transforms[0]
    assert type(crop).__name__ == "RandSpatialCropd" and list(crop.cropper.roi_size) == [32, 32]
    sched = parser.get_parsed_content("noise_scheduler").hyper_parameters
    assert sched == {
        "num_train_timesteps": 1000,
        "beta_start": 1e-4,
        "beta_end": 0.02,
        "schedule": "linear_beta",
        "clip_sample": False,
    }
    loss = parser.get_parsed_content("loss")
    assert loss.loss_type == "hybrid" and loss.scheduler is parser.get_parsed_content("noise_scheduler")
    assert parser.get_parsed_content("output_dir") == "runs/mrf_iddpm"
    assert parser.get_parsed_content("model_path") == "bundles/mrf_iddpm/models/model.pt"

    multi = ConfigParser()
    multi.read_config([str(CONFIGS / "train.json"), str(CONFIGS / "multi_gpu_train.json")])
    assert multi.get_parsed_content("amp") is True
    assert multi.get_parsed_content("data_seed") == multi.get_parsed_content("seed")  # RANK unset: rank 0


def test_recipe_noise_range_and_init_from_keys(tiny_run, tmp_path):
    """The phantom world (``recipe``), per-item noise levels (``noise_range``) and fine-tuning from
    exported weights (``init_from``) are bundle keys; the defaults are today's world from scratch."""
    from mrf_monai.io.weights import load_weights
    from mrf_monai.phantoms.recipe import PhantomRecipe

    default = ConfigParser()
    default.read_config(str(CONFIGS / "train.json"))
    assert [default.get_parsed_content(k) for k in ("recipe", "noise_range", "init_from")] == [None] * 3
    assert (
        default["train"]["simulated"]["recipe"] == "@recipe"
        and default["trainer"]["init_from"] == "@init_from"
    )
    wide = PhantomRecipe.wide().to_dict()
    parser = ConfigParser()
    parser.read_config(TINY)
    parser.read_meta(META)
    parser.update({"recipe": wide, "noise_range": [0.5, 5.0], "cache_dir": str(tiny_run / "cache")})
    train = parser.get_parsed_content("train#simulated")
    assert train.recipe == PhantomRecipe.wide() and train.noise_range == (0.5, 5.0)
    val = parser.get_parsed_content("validate#simulated")
    assert val.recipe is None and val.noise_range is None  # validation stays on today's world
    start = tiny_run / "run" / "model.pt"
    n = torch.get_num_threads()
    try:
        _run(tmp_path, max_steps=2, val_every=0, recipe=wide, noise_range=[0.5, 5.0], init_from=str(start))
    finally:
        torch.set_num_threads(n)
    _, hp = load_weights(tmp_path / "run" / "model_final.pt")
    assert hp["data"]["recipe"] == wide and hp["data"]["noise_range"] == [0.5, 5.0]
    assert hp["training"]["init_from"]["path"] == str(start) and hp["training"]["init_from"]["step"] == 2
    assert hp["data"]["channel_scale"] == load_weights(start)[1]["data"]["channel_scale"]


def test_weights_record_the_training_protocol(tiny_run, tmp_path):
    """The trained weights carry the protocol of their pairs (``data.protocol``, checked at
    inference): the built-in one by default, a raw file's with the ``protocol`` key (its sequence,
    radial trajectory with several spokes per frame, matrix and coils; ``matrix``,
    ``samples_per_readout`` and ``n_coils`` then come from the file)."""
    import numpy as np

    from mrf_monai.acquisition.protocol import Protocol
    from mrf_monai.cli import main
    from mrf_monai.io.ismrmrd import read_raw
    from mrf_monai.io.weights import load_weights
    from mrf_monai.physics.sequence import MRFSequence

    _, hp = load_weights(tiny_run / "run" / "model.pt")
    default = Protocol.default(20, 32, 64)
    assert Protocol.from_dict(hp["data"]["protocol"]) == default
    assert hp["data"]["protocol_key"] == default.key()

    seq = MRFSequence("FISP", np.linspace(8, 40, 12), 11.0, 2.0, 18.0)
    (tmp_path / "seq.json").write_text(seq.to_json())
    args = ["simulate", "--subjects", "1", "--matrix", "24", "--radial", "3", "--coils", "2"]
    assert main(args + ["--sequence", str(tmp_path / "seq.json"), "--out", str(tmp_path / "p")]) == 0
    raw_path = tmp_path / "p" / "sub-000" / "raw.h5"
    expected = Protocol.from_raw(read_raw(raw_path))
    n = torch.get_num_threads()
    try:
        _run(tmp_path / "t", max_steps=1, val_every=0, protocol=str(raw_path), patch_size=[16, 16])
    finally:
        torch.set_num_threads(n)
    _, hp = load_weights(tmp_path / "t" / "run" / "model_final.pt")
    recorded = Protocol.from_dict(hp["data"]["protocol"])
    assert recorded == expected and recorded.readouts_per_frame == 3 and recorded.n_coils == 2
    assert (
        hp["data"]["matrix"] == 24 and hp["data"]["n_coils"] == 2 and hp["data"]["samples_per_readout"] == 48
    )
    assert "n_samples" not in hp["data"]  # one meaning: n_samples is the diffusion sample count
    assert hp["data"]["sequence_key"] == seq.key()
    with pytest.raises(Exception, match="trajectory"):
        _run(tmp_path / "u", max_steps=1, trajectory=str(tmp_path / "x.npy"))


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory):
    """Tiny subject folders as `mrf-monai simulate` writes them (train_tiny's sequence and size)."""
    from mrf_monai.simulation import simulate_subject

    root = tmp_path_factory.mktemp("subjects")
    tiny = dict(n_frames=20, matrix=32, samples_per_readout=64)
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
    ckpt = load_training_checkpoint(find_last_checkpoint(tmp_path / "run" / "checkpoints"))
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
    train = parser.get_parsed_content("train#pairs")
    assert isinstance(train, SubjectPairDataset) and len(train) == 3
    assert parser.get_parsed_content("train#simulated") is None  # never simulated
    assert isinstance(parser.get_parsed_content("validate#dataset"), SimulatedPairDataset)  # val_dir unset
    assert parser.get_parsed_content("sequence") == train.sequence
    default = ConfigParser()
    default.read_config(str(CONFIGS / "train.json"))
    assert (
        default.get_parsed_content("train_dir") is None
        and default.get_parsed_content("train#subjects") is None
    )


def test_shipped_weights_load_into_network_def_as_ckpt_export_does():
    """``monai.bundle ckpt_export network_def`` loads ``models/model.pt`` (a plain state dict, read
    with weights_only=True) into ``network_def`` of train.json; every variable is updated.

    The TorchScript step of ckpt_export then fails inside MONAI's DiffusionModelUNet (its
    SpatialAttentionBlock reshapes with ``*shape[:2]``, which TorchScript cannot compile), and
    ``--use_trace`` cannot pass the second input ``timesteps``; tracing with both inputs works.
    """
    from monai.networks.utils import copy_model_state

    parser = ConfigParser()
    parser.read_config(str(CONFIGS / "train.json"))
    parser.read_meta(META)
    net = parser.get_parsed_content("network_def")
    state = torch.load(CONFIGS.parent / "models" / "model.pt", weights_only=True)
    _, updated, unchanged = copy_model_state(net, state)
    assert len(updated) == len(state) == len(net.state_dict()) and not unchanged
    shipped, hp = load_model(CONFIGS.parent / "models" / "model.pt")
    net.eval()
    g = torch.Generator().manual_seed(0)
    x, t = torch.randn(1, 20, 32, 32, generator=g), torch.tensor([500])
    with torch.no_grad():
        assert torch.equal(net(x, t), shipped(x, t))
        traced = torch.jit.trace(net, (x, t))
        x2, t2 = torch.randn(2, 20, 64, 32, generator=g), torch.tensor([3, 900])
        assert torch.equal(traced(x2, t2), shipped(x2, t2))


@pytest.mark.parametrize("bundle", ["mrf_iddpm", "unet_baseline"])
def test_scanner_condition_keys_reach_the_training_pairs(bundle, tmp_path):
    """``b1_field`` and ``noise_covariance`` (default null: today's pairs) go to the simulated
    training pairs only (validation stays in today's world) and into ``data_hyper_parameters``."""
    configs = CONFIGS.parents[1] / bundle / "configs"
    default = ConfigParser()
    default.read_config(str(configs / "train.json"))
    assert [default.get_parsed_content(k) for k in ("b1_field", "noise_covariance")] == [None, None]
    assert default["train"]["simulated"]["b1"] == "@b1_field"
    assert "b1" not in default["validate"]["simulated"]
    parser = ConfigParser()
    parser.read_config([str(configs / "train.json"), str(configs / "train_tiny.json")])
    parser.update(
        {"b1_field": "random", "noise_covariance": "realistic", "n_coils": 2, "cache_dir": str(tmp_path)}
    )
    train = parser.get_parsed_content("train#simulated")
    assert train.b1 == "random" and train.noise_covariance == "realistic" and train.n_coils == 2
    assert train.table.b1_values[0] == 0.75 and train.table.b1_values[-1] == 1.25
    assert train[0]["image"].shape == (4, 32, 32)
    val = parser.get_parsed_content("validate#simulated")
    assert val.b1 is None and val.noise_covariance is None and val.table.b1_axis is None
    data = parser.get_parsed_content("data_hyper_parameters")
    assert data["b1_field"] == "random" and data["noise_covariance"] == "realistic"
