"""``bundles/unet_baseline`` through ``monai.bundle``: tiny training, then inference (CPU)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigParser, run

from mrf_monai.baselines.unet import load_model, load_unet_checkpoint
from mrf_monai.io.weights import load_training_checkpoint

CONFIGS = Path(__file__).resolve().parents[2] / "bundles" / "unet_baseline" / "configs"
META = str(CONFIGS / "metadata.json")
TINY = [str(CONFIGS / "train.json"), str(CONFIGS / "train_tiny.json")]
LOGGING = str(CONFIGS / "logging.conf")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("unet_bundle")
    n = torch.get_num_threads()
    try:
        run(
            "training",
            meta_file=META,
            config_file=TINY,
            logging_file=LOGGING,
            output_dir=str(out / "run"),
            cache_dir=str(out / "cache"),
        )
    finally:
        torch.set_num_threads(n)
    return out


def test_metadata_has_the_model_zoo_fields():
    meta = json.loads(Path(META).read_text())
    for key in (
        "schema",
        "version",
        "changelog",
        "monai_version",
        "pytorch_version",
        "numpy_version",
        "required_packages_version",
        "task",
        "description",
        "authors",
        "copyright",
        "network_data_format",
    ):
        assert key in meta, key
    fmt = meta["network_data_format"]
    assert fmt["inputs"]["image"]["num_channels"] == fmt["outputs"]["pred"]["num_channels"] == 10


def test_default_config_parses_and_builds_the_network():
    parser = ConfigParser()
    parser.read_config(str(CONFIGS / "train.json"))
    parser.read_meta(META)
    net = parser.get_parsed_content("network_def")
    assert net.rank == 5 and net.divisor == 8
    assert net.hyper_parameters["channels"] == [32, 64, 128, 256]  # the shipped model's defaults
    assert parser.get_parsed_content("patch_size") == [64, 64]
    assert parser["trainer"]["loss_function"] == "@loss"
    assert isinstance(parser.get_parsed_content("loss"), torch.nn.L1Loss)
    parser["loss"]["_target_"] = "torch.nn.MSELoss"  # the MONAI way to change a component
    assert isinstance(parser.get_parsed_content("loss", lazy=False), torch.nn.MSELoss)
    assert parser["optimizer"]["params"] == "$@network.parameters()"
    x = torch.zeros(1, 10, 64, 64)
    assert net(x).shape == x.shape


@pytest.mark.slow
def test_tiny_training_then_inference_end_to_end(tiny_run, tmp_path):
    from mrf_monai.io.dictionary import cached_dictionary, save_dictionary
    from mrf_monai.physics.sequence import fisp_mrf_jiang2015
    from mrf_monai.simulation.subjects import simulate_subject

    ckpts = tiny_run / "run" / "checkpoints"
    assert (ckpts / "checkpoint_00000002.pt").is_file() and (ckpts / "checkpoint_00000004.pt").is_file()
    model, ckpt = load_unet_checkpoint(tiny_run / "run" / "model.pt")
    hp = ckpt["hyper_parameters"]
    seq = fisp_mrf_jiang2015(20)
    assert hp["model"]["channels"] == [8, 16] and hp["rank"] == 2
    assert hp["data"]["sequence_key"] == seq.key() and tuple(hp["data"]["basis"].shape) == (20, 2)
    assert hp["data"]["patch_size"] == [16, 16] and hp["training"]["loss"] == "l1"
    history = torch.load(ckpts / "checkpoint_00000004.pt", weights_only=True)["history"]
    assert len(history) == 2 and {"t1_mape", "t2_mape", "nrmse"} <= set(history[0])

    # inference on a simulated test subject, through mrf_monai.pipeline.reconstruct_dataset
    data = tmp_path / "data"
    simulate_subject(
        data, "01", seed=3, n_slices=1, n_frames=20, matrix=32, samples_per_readout=64, split="test"
    )
    dictionary = cached_dictionary(seq, cache_dir=tiny_run / "cache", rank=2, step=0.3)  # the training one
    dict_path = save_dictionary(dictionary, tmp_path / "dictionary.h5")
    out = tmp_path / "out"
    run(
        "inference",
        meta_file=META,
        config_file=str(CONFIGS / "inference.json"),
        logging_file=LOGGING,
        dataset_dir=str(data),
        output_dir=str(out),
        model_path=str(tiny_run / "run" / "model.pt"),
        dictionary_path=str(dict_path),
        device="cpu",
        progress=False,
    )
    subject = out / "sub-01"
    for name in ("T1map", "T2map", "PDmap", "desc-compressed_TSMI"):
        assert (subject / f"sub-01_{name}.nii.gz").is_file(), name
    timing = json.loads((subject / "timing.json").read_text())
    assert timing["method"] == "unet" and timing["n_slices"] == 1


def test_recipe_noise_range_and_init_from_keys(tiny_run, tmp_path):
    """The U-Net bundle has the same data and fine-tuning keys as MRF-IDDPM's (a fair comparison)."""
    from mrf_monai.io.weights import load_weights
    from mrf_monai.phantoms.recipe import PhantomRecipe

    default = ConfigParser()
    default.read_config(str(CONFIGS / "train.json"))
    assert [default.get_parsed_content(k) for k in ("recipe", "noise_range", "init_from")] == [None] * 3
    recipe = PhantomRecipe(synthetic_fraction=0.5, tissue_range_probability=1.0).to_dict()
    start = tiny_run / "run" / "model.pt"
    n = torch.get_num_threads()
    try:
        run(
            "training",
            meta_file=META,
            config_file=TINY,
            logging_file=LOGGING,
            output_dir=str(tmp_path / "run"),
            cache_dir=str(tiny_run / "cache"),
            max_steps=2,
            val_every=0,
            recipe=recipe,
            noise_range=[0.5, 5.0],
            init_from=str(start),
        )
    finally:
        torch.set_num_threads(n)
    _, hp = load_weights(tmp_path / "run" / "model_final.pt")
    assert hp["data"]["recipe"] == recipe and hp["data"]["noise_range"] == [0.5, 5.0]
    assert hp["training"]["init_from"]["path"] == str(start) and hp["step"] == 2
    assert hp["data"]["channel_scale"] == load_weights(start)[1]["data"]["channel_scale"]
    # the weights record their training protocol (checked at inference), as MRF-IDDPM's do
    from mrf_monai.acquisition.protocol import Protocol

    assert Protocol.from_dict(hp["data"]["protocol"]) == Protocol.default(20, 32, 64)


def test_tiny_training_from_a_dataset_folder(tmp_path):
    from mrf_monai.simulation import simulate_subject

    tiny = dict(n_frames=20, matrix=32, samples_per_readout=64)
    simulate_subject(tmp_path / "train", "01", seed=1, n_slices=2, split="train", **tiny)
    simulate_subject(tmp_path / "val", "01", seed=3, n_slices=1, split="val", **tiny)
    n = torch.get_num_threads()
    try:
        run(
            "training",
            meta_file=META,
            config_file=TINY,
            logging_file=LOGGING,
            output_dir=str(tmp_path / "run"),
            cache_dir=str(tmp_path / "cache"),
            train_dir=str(tmp_path / "train"),
            val_dir=str(tmp_path / "val"),
            max_steps=2,
        )
    finally:
        torch.set_num_threads(n)
    ckpt = load_training_checkpoint(tmp_path / "run" / "checkpoints" / "checkpoint_00000002.pt")
    data = ckpt["hyper_parameters"]["data"]
    assert data["source"] == "subjects" and data["train_dir"] == str(tmp_path / "train")
    assert tuple(data["basis"].shape) == (20, 2)
    assert len(ckpt["history"]) == 1 and {"t1_mape", "t2_mape", "nrmse"} <= set(ckpt["history"][0])


def test_ckpt_export_of_the_shipped_weights(tmp_path):
    """``python -m monai.bundle ckpt_export network_def`` on the shipped plain state dict: the
    TorchScript module computes exactly what the loaded network computes."""
    import os
    import subprocess
    import sys

    bundle = CONFIGS.parent
    out = tmp_path / "unet.ts"
    cmd = [
        sys.executable,
        "-m",
        "monai.bundle",
        "ckpt_export",
        "network_def",
        "--filepath",
        str(out),
        "--ckpt_file",
        str(bundle / "models" / "model.pt"),
        "--meta_file",
        META,
        "--config_file",
        str(CONFIGS / "train.json"),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run(cmd, cwd=bundle.parents[1], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    scripted = torch.jit.load(str(out))
    net, hp = load_model(bundle / "models" / "model.pt")
    assert hp["format"] == "mrf_monai.baselines.unet/2" and hp["data"]["patch_size"] == [64, 64]
    x = torch.randn(1, 10, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(scripted(x), net(x))
