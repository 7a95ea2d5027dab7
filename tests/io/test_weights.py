"""Safe weights and training checkpoints (:mod:`mrf_monai.io.weights`)."""

from __future__ import annotations

import json
import math
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from mrf_monai.io.weights import (
    WeightsFileError,
    convert_legacy_checkpoint,
    decode_json,
    encode_json,
    load_hyper_parameters,
    load_training_checkpoint,
    load_weights,
    read_model_file,
    save_training_checkpoint,
    save_weights,
)

REPO = Path(__file__).resolve().parents[2]


def _state(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"conv.weight": torch.randn(4, 3, 3, 3, generator=g), "conv.bias": torch.randn(4, generator=g)}


def _hyper_parameters() -> dict:
    g = torch.Generator().manual_seed(1)
    q, _ = torch.linalg.qr(torch.randn(20, 3, dtype=torch.complex64, generator=g))
    return {
        "format": "test/1",
        "model": {"rank": 3, "channels": [8, 16], "act": ["PRELU", {"init": 0.2}], "norm": None},
        "data": {"basis": q, "channel_scale": [1.5, 2.25], "counts": torch.arange(6).reshape(2, 3)},
        "flags": torch.tensor([True, False]),
        "best_metric": math.inf,
        "worst": -math.inf,
        "undefined": math.nan,
        "step": 7,
        "tuple": (1, 2),
    }


class Payload:
    """An object whose unpickling runs code (writes a file), as a malicious weights file would."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('ran')",))


def test_round_trip_is_exact_and_the_json_is_strict(tmp_path):
    state, hp = _state(), _hyper_parameters()
    path = save_weights(tmp_path / "models" / "model.pt", state, hp)
    assert path == tmp_path / "models" / "model.pt"
    assert sorted(p.name for p in path.parent.iterdir()) == [
        "model.json",
        "model.pt",
    ]  # no temporary files left
    # the weights file is a plain state dict, loadable by anything that loads state dicts safely
    plain = torch.load(path, weights_only=True)
    assert plain.keys() == state.keys() and all(torch.equal(plain[k], v) for k, v in state.items())
    # strict JSON (no NaN/Infinity literals), tensors tagged and lossless
    doc = json.loads((tmp_path / "models" / "model.json").read_text(), parse_constant=lambda c: 1 / 0)
    assert doc["data"]["basis"]["__tensor__"] == "complex64" and doc["data"]["basis"]["shape"] == [20, 3]
    loaded_state, loaded = load_weights(path)
    assert all(torch.equal(loaded_state[k], v) for k, v in state.items())
    basis = loaded["data"]["basis"]
    assert basis.dtype == torch.complex64 and torch.equal(basis, hp["data"]["basis"])
    assert (
        torch.equal(loaded["data"]["counts"], hp["data"]["counts"])
        and loaded["data"]["counts"].dtype == torch.int64
    )
    assert torch.equal(loaded["flags"], hp["flags"])
    assert (
        loaded["best_metric"] == math.inf and loaded["worst"] == -math.inf and math.isnan(loaded["undefined"])
    )
    assert loaded["model"] == hp["model"] and loaded["step"] == 7 and loaded["tuple"] == [1, 2]
    assert load_hyper_parameters(path)["model"] == hp["model"]
    view = read_model_file(path, expected_format="test/1")
    assert view["step"] == 7 and view["hyper_parameters"]["format"] == "test/1"
    with pytest.raises(WeightsFileError, match="format 'test/1'"):
        read_model_file(path, expected_format="other/1")


def test_float64_and_complex128_tensors_survive_json():
    x = torch.tensor([1 / 3, math.pi, 1e-300], dtype=torch.float64)
    z = torch.complex(x, -x)
    assert torch.equal(decode_json(json.loads(json.dumps(encode_json(x)))), x)
    assert torch.equal(decode_json(json.loads(json.dumps(encode_json(z)))), z)
    with pytest.raises(TypeError, match="hyper_parameters.a.b"):
        encode_json({"a": {"b": object()}})
    with pytest.raises(TypeError, match="not a string"):
        encode_json({1: 2})


def test_unencodable_hyper_parameters_leave_previous_files_untouched(tmp_path):
    path = save_weights(tmp_path / "model.pt", _state(0), {"step": 1})
    with pytest.raises(TypeError):
        save_weights(path, _state(1), {"step": 2, "bad": {1, 2}})
    state, hp = load_weights(path)
    assert hp["step"] == 1 and torch.equal(state["conv.bias"], _state(0)["conv.bias"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.json", "model.pt"]


def test_clear_errors(tmp_path):
    state = _state()
    torch.save(state, tmp_path / "alone.pt")
    with pytest.raises(FileNotFoundError, match="alone.json"):
        load_weights(tmp_path / "alone.pt")
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_weights(tmp_path / "missing.pt")
    save_weights(tmp_path / "listed.pt", state, {})
    torch.save([1, 2], tmp_path / "listed.pt")
    with pytest.raises(WeightsFileError, match="listed.pt is not a state dict"):
        load_weights(tmp_path / "listed.pt")
    save_weights(tmp_path / "mixed.pt", state, {})
    torch.save({"w": torch.zeros(1), "step": 3}, tmp_path / "mixed.pt")
    with pytest.raises(WeightsFileError, match="not tensors"):
        load_weights(tmp_path / "mixed.pt")
    (tmp_path / "broken.pt").write_bytes(b"not a torch file")
    (tmp_path / "broken.json").write_text("{}")
    with pytest.raises(WeightsFileError, match="broken.pt"):
        load_weights(tmp_path / "broken.pt")
    (tmp_path / "bad_json.json").write_text("{not json")
    torch.save(state, tmp_path / "bad_json.pt")
    with pytest.raises(WeightsFileError, match="bad_json.json is not valid JSON"):
        load_weights(tmp_path / "bad_json.pt")


def test_legacy_pickled_checkpoint_is_refused_and_converts(tmp_path):
    state = _state()
    old = {
        "format": "mrf_monai.diffusion/1",
        "hyper_parameters": {"model": {"rank": 3}, "data": {"basis": torch.eye(3, dtype=torch.complex64)}},
        "state_dict": state,
        "step": 18,
        "best_metric": 1.5,
    }
    torch.save(old, tmp_path / "model.pt")
    with pytest.raises(WeightsFileError, match="older mrf_monai release.*[Rr]e-export"):
        load_weights(tmp_path / "model.pt")
    new = convert_legacy_checkpoint(
        tmp_path / "model.pt", tmp_path / "new" / "model.pt", format="mrf_monai.diffusion/2"
    )
    loaded, hp = load_weights(new)
    assert all(torch.equal(loaded[k], v) for k, v in state.items())
    assert hp["format"] == "mrf_monai.diffusion/2" and hp["step"] == 18 and hp["best_metric"] == 1.5
    assert torch.equal(hp["data"]["basis"], old["hyper_parameters"]["data"]["basis"]) and hp["model"] == {
        "rank": 3
    }


def test_malicious_pickle_is_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / "pwned.txt"
    # the payload is real: an unrestricted unpickler runs it
    pickle.loads(pickle.dumps(Payload(marker)))
    assert marker.read_text() == "ran"
    marker.unlink()
    # as weights (with a JSON beside it, so the .pt is what is read) and as a training checkpoint
    torch.save({"conv.weight": torch.zeros(1), "evil": Payload(marker)}, tmp_path / "model.pt")
    (tmp_path / "model.json").write_text("{}")
    torch.save({"hyper_parameters": {}, "rng": Payload(marker)}, tmp_path / "checkpoint_00000001.pt")
    with pytest.raises(WeightsFileError, match="model.pt was refused"):
        load_weights(tmp_path / "model.pt")
    with pytest.raises(WeightsFileError, match="checkpoint_00000001.pt was refused"):
        load_training_checkpoint(tmp_path / "checkpoint_00000001.pt")
    with pytest.raises(WeightsFileError):
        read_model_file(tmp_path / "checkpoint_00000001.pt")
    with pytest.raises(WeightsFileError):
        convert_legacy_checkpoint(tmp_path / "model.pt")
    assert not marker.exists()


def test_training_checkpoint_round_trip_and_unsafe_entries_fail_when_saving(tmp_path):
    net = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    net(torch.ones(1, 3)).sum().backward()
    opt.step()
    ckpt = {
        "format": "x/1",
        "hyper_parameters": {"model": {"rank": 1}, "basis": torch.ones(2, 1, dtype=torch.complex64)},
        "optimizer": opt.state_dict(),
        "history": [{"step": 1.0, "metric": 0.5}],
        "step": 1,
    }
    path = save_training_checkpoint(tmp_path / "checkpoint_00000001.pt", ckpt)
    loaded = load_training_checkpoint(path)
    assert loaded["step"] == 1 and loaded["history"] == ckpt["history"]
    fresh = torch.optim.Adam(torch.nn.Linear(3, 2).parameters(), lr=1e-3)
    fresh.load_state_dict(loaded["optimizer"])
    assert torch.equal(fresh.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])
    with pytest.raises(TypeError, match=r"checkpoint\.rng\.numpy"):
        save_training_checkpoint(tmp_path / "bad.pt", {"hyper_parameters": {}, "rng": {"numpy": np.zeros(3)}})
    assert not (tmp_path / "bad.pt").exists()
    torch.save(_state(), tmp_path / "plain.pt")
    with pytest.raises(WeightsFileError, match="not an mrf_monai training checkpoint"):
        load_training_checkpoint(tmp_path / "plain.pt")


@pytest.mark.parametrize("bundle", ["mrf_iddpm", "unet_baseline"])
def test_shipped_weights_are_plain_state_dicts_with_json(bundle):
    path = REPO / "bundles" / bundle / "models" / "model.pt"
    assert path.stat().st_size + path.with_suffix(".json").stat().st_size < 25e6
    state = torch.load(path, weights_only=True)
    assert state and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items())
    loaded, hp = load_weights(path)
    assert loaded.keys() == state.keys()
    basis = hp["data"]["basis"]
    assert basis.dtype == torch.complex64 and tuple(basis.shape) == (200, 5)
    gram = basis.conj().T @ basis  # the SVD subspace basis has orthonormal columns
    assert torch.allclose(gram, torch.eye(5, dtype=torch.complex64), atol=1e-5)
    assert isinstance(hp["step"], int)
    # chosen by the trainer's validation (a finite best metric) or, trained without it, by the
    # validation sets, recorded with their scores
    assert math.isfinite(hp["best_metric"]) or set(hp["selection"]["t1_t2_mape_percent"]) == {
        "id",
        "ood",
        "ood_4x_noise",
    }
