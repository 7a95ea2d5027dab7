"""MRFSequence: validation, truncation, JSON round trip and the Jiang-2015 preset."""

import numpy as np
import pytest

from mrf_monai.physics.sequence import MRFSequence, fisp_mrf_jiang2015


def test_json_round_trip_keeps_physics_and_key():
    seq = MRFSequence("FISP", [10.0, 20.0, 30.0], [10.0, 11.0, 12.0], 2.0, 18.0, name="x")
    back = MRFSequence.from_json(seq.to_json())
    assert back == seq
    np.testing.assert_array_equal(back.tr_ms, [10.0, 11.0, 12.0])
    assert back.ti_ms == 18.0 and back.name == "x"
    assert back.key() == seq.key()


def test_constant_tr_is_stored_as_one_value_and_broadcast():
    seq = MRFSequence("FISP", [5.0, 6.0], 10.0, 1.0)
    assert seq.to_dict()["tr_ms"] == 10.0
    np.testing.assert_array_equal(MRFSequence.from_dict(seq.to_dict()).tr_ms, [10.0, 10.0])
    assert seq.ti_ms is None


def test_key_depends_on_physics_not_name():
    a = MRFSequence("FISP", [10.0, 20.0], 10.0, 2.0, 18.0, name="a")
    assert a.key() == MRFSequence("FISP", [10.0, 20.0], 10.0, 2.0, 18.0, name="b").key()
    assert a.key() != MRFSequence("FISP", [10.0, 21.0], 10.0, 2.0, 18.0).key()
    assert a.key() != MRFSequence("FISP", [10.0, 20.0], 10.0, 2.0, None).key()


def test_truncate_keeps_leading_frames():
    seq = fisp_mrf_jiang2015()
    short = seq.truncate(200)
    assert short.n_frames == len(short) == 200
    np.testing.assert_array_equal(short.flip_angle_deg, seq.flip_angle_deg[:200])
    assert (short.te_ms, short.ti_ms) == (seq.te_ms, seq.ti_ms)
    assert fisp_mrf_jiang2015(200) == short
    with pytest.raises(ValueError, match="cannot keep"):
        seq.truncate(0)
    with pytest.raises(ValueError, match="cannot keep"):
        seq.truncate(1001)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(sequence_type="bSSFP"), "unknown MRF sequence type"),
        (dict(flip_angle_deg=[]), "at least one flip angle"),
        (dict(tr_ms=[10.0, 10.0]), "one TR"),
        (dict(tr_ms=[10.0, -1.0, 10.0]), "positive"),
        (dict(te_ms=20.0), "TE"),
        (dict(ti_ms=-5.0), "TI"),
        (dict(flip_angle_deg=[1.0, np.nan, 2.0]), "finite"),
    ],
)
def test_validation_errors_say_what_is_wrong(kwargs, message):
    args = dict(sequence_type="FISP", flip_angle_deg=[10.0, 20.0, 30.0], tr_ms=10.0, te_ms=2.0, ti_ms=None)
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        MRFSequence(**args)


def test_from_dict_names_missing_field():
    with pytest.raises(ValueError, match="te_ms"):
        MRFSequence.from_dict({"sequence_type": "FISP", "flip_angle_deg": [1.0], "tr_ms": 10.0})


def test_ti_zero_means_no_inversion():
    assert MRFSequence("FISP", [10.0], 10.0, 2.0, 0.0).ti_ms is None


def test_jiang2015_preset_properties():
    seq = fisp_mrf_jiang2015()
    assert seq.sequence_type == "FISP" and seq.n_frames == 1000
    np.testing.assert_array_equal(seq.tr_ms, np.full(1000, 10.0))
    assert seq.te_ms == pytest.approx(1.908) and seq.ti_ms == pytest.approx(18.0)
    lobes = seq.flip_angle_deg.reshape(5, 200)
    np.testing.assert_allclose(lobes.max(axis=1), [35.0, 43.0, 70.0, 45.0, 27.0], atol=0.01)
    assert seq.flip_angle_deg.min() >= 5.0 - 1e-9
    # each lobe rises then falls (half sine): its peak lies in the middle
    assert np.all(np.abs(lobes.argmax(axis=1) - 99.5) <= 0.5)
    assert not seq.flip_angle_deg.flags.writeable
