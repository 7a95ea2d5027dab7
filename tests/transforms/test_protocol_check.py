"""CheckProtocold: raw data of another protocol than the network's are refused with what differs."""

from __future__ import annotations

import dataclasses
import logging

import pytest

from mrf_monai.acquisition.protocol import Protocol
from mrf_monai.io.ismrmrd import read_raw
from mrf_monai.simulation.subjects import simulate_subject
from mrf_monai.transforms import CheckProtocold


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    root = tmp_path_factory.mktemp("protocol")
    simulate_subject(
        root, "01", seed=1, n_slices=1, n_frames=24, matrix=32, samples_per_readout=96, split="test"
    )
    return read_raw(root / "sub-01" / "raw.h5")


def test_same_protocol_passes_other_protocol_is_refused(raw, caplog):
    own = Protocol.from_raw(raw)
    data = {"raw": raw, "slice": 0}
    assert CheckProtocold(own.to_dict(), "the weights w.pt")(data)["raw"] is raw
    # other coils and FOV are not compared by default (the condition is coil combined)
    assert CheckProtocold(own.replace(n_coils=8, fov_mm=(200.0, 200.0, 3.0)))(data)["raw"] is raw
    longer = dataclasses.replace(raw.sequence, tr_ms=raw.sequence.tr_ms * 1.05)
    other = own.replace(sequence=longer, matrix=(48, 48))
    with pytest.raises(ValueError) as info:
        CheckProtocold(other, "the weights w.pt")(data)
    text = str(info.value)
    assert text.startswith("the weights w.pt were trained for FISP, 24 frames")
    assert "differ in: TR" in text and "matrix 32 x 32 vs 48 x 48" in text and "--init_from" in text
    with caplog.at_level(logging.WARNING):
        out = CheckProtocold(other, "the weights w.pt", allow_mismatch=True)(data)
    assert out["raw"] is raw and "running anyway" in caplog.text


def test_weights_without_a_protocol_warn_once(raw, caplog):
    check = CheckProtocold(None, "old weights")
    with caplog.at_level(logging.WARNING):
        check({"raw": raw})
        check({"raw": raw})
    assert caplog.text.count("record no training protocol") == 1


def test_the_shipped_weights_record_the_built_in_protocol():
    from mrf_monai.io.weights import load_hyper_parameters
    from mrf_monai.resources import bundle_file

    for bundle in ("mrf_iddpm", "unet_baseline"):
        hp = load_hyper_parameters(bundle_file(bundle, "models/model.pt"))
        recorded = Protocol.from_dict(hp["data"]["protocol"])
        assert recorded == Protocol.default(n_frames=200, matrix=230, samples_per_readout=920)
        assert recorded.sequence.key() == hp["data"]["sequence_key"]
