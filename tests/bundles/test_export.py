# Copyright (c) mrf_monai developers.
# Licensed under the Apache License, Version 2.0.
"""``monai.bundle ckpt_export`` of MRF-IDDPM through ``export_network_def`` (inference.json)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from monai.bundle import ckpt_export
from monai.networks.nets import DiffusionModelUNet
from monai.networks.utils import copy_model_state

from mrf_monai.diffusion.export import (
    TimestepChannelUNet,
    append_timestep_channel,
    build_export_model,
    to_export_model,
)
from mrf_monai.diffusion.model import build_model, load_model, save_model

BUNDLE = Path(__file__).resolve().parents[2] / "bundles" / "mrf_iddpm"
META = str(BUNDLE / "configs" / "metadata.json")
INFERENCE = str(BUNDLE / "configs" / "inference.json")
#: rank 2 (8 network channels, 9 with the timestep), attention at the second level; two
#: channels per normalisation group (with one, the group norms would cancel the timestep embedding).
TINY_NET = {
    "rank": 2,
    "channels": [8, 8],
    "attention_levels": [False, True],
    "num_res_blocks": 1,
    "num_head_channels": 8,
    "norm_num_groups": 4,
    "prediction_type": "v",
}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny networks run fastest on one thread (and the CPUs are shared)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _random_network(seed: int = 0, **changes) -> DiffusionModelUNet:
    """A tiny network with random weights everywhere (MONAI zero-initialises the output
    convolution, so a fresh network returns zeros whatever its input)."""
    network = build_model(**{**TINY_NET, **changes}, init_seed=seed).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in network.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))
    return network


def _tiny_weights(folder: Path, seed: int = 0, **changes) -> tuple[Path, DiffusionModelUNet]:
    network = _random_network(seed, **changes)
    return save_model(folder / "model.pt", network, {"scheduler": {}}), network


def _export(path: Path, ckpt: Path, model_path: Path, input_shape: list[int]) -> None:
    ckpt_export(
        net_id="export_network_def",
        filepath=str(path),
        ckpt_file=str(ckpt),
        meta_file=META,
        config_file=INFERENCE,
        use_trace=True,
        input_shape=input_shape,
        model_path=str(model_path),
    )


def _assert_matches_eager(exported, network, shape, timesteps_pairs) -> None:
    """The exported module equals ``network(x, t)`` and depends on ``t`` (not a traced constant)."""
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(1))
    outputs = []
    with torch.no_grad():
        for timesteps in timesteps_pairs:
            t = torch.tensor(timesteps)
            got = exported(append_timestep_channel(x, t))
            torch.testing.assert_close(got, network(x, t), rtol=1e-5, atol=1e-5)
            outputs.append(got)
    assert (outputs[0] - outputs[1]).abs().max() > 1e-3


def test_export_form_has_exactly_the_state_dict_of_the_network():
    network = build_model(**TINY_NET, init_seed=0)
    export = build_export_model(TINY_NET)
    assert isinstance(export, TimestepChannelUNet) and isinstance(export, DiffusionModelUNet)
    plain, exp = network.state_dict(), export.state_dict()
    assert list(exp) == list(plain)
    assert all(exp[k].shape == plain[k].shape and exp[k].dtype == plain[k].dtype for k in plain)
    # no weights until a complete state dict is loaded
    assert all(torch.isnan(v).all() for v in exp.values() if v.is_floating_point())
    with pytest.raises(RuntimeError, match="no weights yet"):
        export(torch.zeros(1, 9, 16, 16))
    export.load_state_dict(plain)
    assert all(torch.equal(export.state_dict()[k], plain[k]) for k in plain)
    with pytest.raises(ValueError, match=r"\(N, 9, \*spatial\)"):
        export(torch.zeros(1, 8, 16, 16))


def test_export_form_computes_the_network_with_the_timestep_channel():
    network = _random_network(3)
    export = to_export_model(network)
    x = torch.randn(2, 8, 16, 24, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([7, 640])
    inp = append_timestep_channel(x, t)
    assert inp.shape == (2, 9, 16, 24) and torch.equal(inp[:, :8], x)
    assert torch.equal(inp[:, 8], t.float()[:, None, None].expand(2, 16, 24))
    with torch.no_grad():
        assert torch.equal(export(inp), network(x, t))
        assert torch.equal(export(append_timestep_channel(x, 5)), network(x, torch.tensor([5, 5])))
        assert not torch.equal(export(append_timestep_channel(x, 5)), export(inp))
    with pytest.raises(ValueError, match="batch of 2"):
        append_timestep_channel(x, torch.tensor([1, 2, 3]))


def test_an_incomplete_state_dict_is_refused():
    """What MONAI's ckpt_export does without ignite (copy_model_state silently skips keys that
    are missing or of another shape) fails loudly on the export form."""
    export = build_export_model(TINY_NET)
    state = build_model(**TINY_NET, init_seed=0).state_dict()
    dropped = next(iter(state))
    partial = {k: v for k, v in state.items() if k != dropped}
    with pytest.raises(RuntimeError, match="1 of .* variables undefined"):
        copy_model_state(export, partial)
    assert not export.weights_loaded
    other = build_model(**{**TINY_NET, "channels": [16, 16]}, init_seed=0).state_dict()
    fresh = build_export_model(TINY_NET)
    with pytest.raises(RuntimeError, match="undefined"):
        copy_model_state(fresh, other)  # same names, other shapes: nearly all skipped
    assert not fresh.weights_loaded
    copy_model_state(export, state)
    assert export.weights_loaded


def test_ckpt_export_of_tiny_weights_traces_a_general_module(tmp_path):
    ckpt, network = _tiny_weights(tmp_path)
    out = tmp_path / "tiny.ts"
    _export(out, ckpt, ckpt, [1, 9, 16, 16])
    extra = {"metadata.json": "", "inference.json": ""}
    exported = torch.jit.load(str(out), _extra_files=extra)
    meta = json.loads(extra["metadata.json"])
    assert meta["name"] == "MRF-IDDPM" and meta["version"] == json.loads(Path(META).read_text())["version"]
    assert json.loads(extra["inference.json"]) == json.loads(Path(INFERENCE).read_text())
    # another batch size, spatial size and timesteps than the random example of the trace
    _assert_matches_eager(exported, network, (3, 8, 32, 24), ([0, 300, 999], [999, 10, 500]))


def test_ckpt_export_refuses_a_checkpoint_of_other_hyper_parameters(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    ckpt, _ = _tiny_weights(tmp_path / "a", channels=[16, 16])
    model_path, _ = _tiny_weights(tmp_path / "b")
    out = tmp_path / "mixed.ts"
    with pytest.raises(RuntimeError, match="undefined"):
        _export(out, ckpt, model_path, [1, 9, 16, 16])
    assert not out.exists()


def test_ckpt_export_of_the_shipped_weights_on_the_command_line(tmp_path):
    """The command of the bundle's README, on the shipped weights (1.1 M parameters)."""
    import os
    import subprocess
    import sys

    out = tmp_path / "mrf_iddpm.ts"
    cmd = [
        sys.executable,
        "-m",
        "monai.bundle",
        "ckpt_export",
        "export_network_def",
        "--filepath",
        str(out),
        "--ckpt_file",
        str(BUNDLE / "models" / "model.pt"),
        "--meta_file",
        META,
        "--config_file",
        INFERENCE,
        "--use_trace",
        "True",
        "--input_shape",
        "[1, 21, 32, 32]",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run(cmd, cwd=BUNDLE.parents[1], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    network, hp = load_model(BUNDLE / "models" / "model.pt")
    assert hp["model"]["rank"] == 5
    extra = {"metadata.json": ""}
    exported = torch.jit.load(str(out), _extra_files=extra)
    assert json.loads(extra["metadata.json"])["network_data_format"]["inputs"]["image"]["num_channels"] == 20
    _assert_matches_eager(exported, network, (2, 20, 48, 64), ([3, 900], [500, 0]))
