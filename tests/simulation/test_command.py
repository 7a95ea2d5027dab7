"""``mrf-monai simulate`` writes a dataset folder."""

from __future__ import annotations

import json

from mrf_monai.cli import main
from mrf_monai.io.subjects import find_subjects


def test_simulate_command_writes_subjects_and_card(tmp_path, capsys):
    out = tmp_path / "data"
    rc = main(
        [
            "simulate",
            "--out",
            str(out),
            "--subjects",
            "2",
            "--frames",
            "8",
            "--matrix",
            "32",
            "--samples",
            "64",
            "--seed",
            "10",
            "--noise",
            "0.001",
        ]
    )
    assert rc == 0
    subjects = find_subjects(out)
    assert [p.name for p in subjects] == ["sub-000", "sub-001"]
    card = json.loads((out / "dataset.json").read_text())
    assert card["seeds"] == [10, 11] and card["split"] == "test" and card["n_frames"] == 8
    assert card["samples_per_readout"] == 64 and "n_samples" not in card
    sim = json.loads((out / "sub-001" / "sim.json").read_text())
    assert sim["seed"] == 11 and sim["noise"]["relative"] == 0.001
    assert "wrote 2 subject(s)" in capsys.readouterr().out


def test_simulate_command_rejects_bad_arguments(tmp_path, capsys):
    rc = main(
        [
            "simulate",
            "--out",
            str(tmp_path),
            "--subjects",
            "1",
            "--slices",
            "50",
            "--frames",
            "4",
            "--matrix",
            "32",
            "--samples",
            "64",
        ]
    )
    assert rc == 1
    assert "n_slices must be between" in capsys.readouterr().err


def _protocol_template(tmp_path, coils=2):
    """A raw template of a radial protocol (4 spokes per frame, FOV 200 mm, its own sequence)."""
    import numpy as np

    from mrf_monai.acquisition.protocol import Protocol
    from mrf_monai.acquisition.trajectory import golden_angle_radial
    from mrf_monai.physics.sequence import MRFSequence
    from mrf_monai.simulation import simulate_subject

    seq = MRFSequence("FISP", np.linspace(8, 40, 12), 14.0, 2.2, 30.0)
    traj, index = golden_angle_radial(12, 4, 48)
    prot = Protocol(seq, traj.reshape(12, -1, 2), 4, (24, 24), (200.0, 200.0, 3.0), coils, "radial", index)
    return simulate_subject(tmp_path / "template", "0", 9, noise=0.0, protocol=prot) / "raw.h5", prot


def test_simulate_with_the_protocol_of_a_raw_file(tmp_path, capsys):
    from mrf_monai.acquisition.protocol import Protocol
    from mrf_monai.io.ismrmrd import read_raw, write_raw
    from mrf_monai.io.trajectory_file import write_trajectory_file

    template, prot = _protocol_template(tmp_path)
    out = tmp_path / "data"
    rc = main(["simulate", "--out", str(out), "--subjects", "1", "--protocol", str(template), "--noise", "0"])
    assert rc == 0, capsys.readouterr().err
    raw = read_raw(out / "sub-000" / "raw.h5")
    assert (
        Protocol.from_raw(raw) == prot and raw.readouts_per_frame == 4 and raw.fov_mm == (200.0, 200.0, 3.0)
    )
    card = json.loads((out / "dataset.json").read_text())
    assert (
        card["protocol"]["key"] == prot.key() and card["readouts_per_frame"] == 4 and card["n_frames"] == 12
    )
    # --coils overrides; a template without trajectories takes them from --trajectory
    bare = write_raw(tmp_path / "bare.h5", read_raw(template), include_trajectory=False)
    traj_file = write_trajectory_file(tmp_path / "traj.npy", prot.readouts())
    rc = main(
        ["simulate", "--out", str(tmp_path / "d2"), "--subjects", "1", "--protocol", str(bare)]
        + ["--trajectory", str(traj_file), "--coils", "1"]
    )
    assert rc == 0, capsys.readouterr().err
    raw2 = read_raw(tmp_path / "d2" / "sub-000" / "raw.h5")
    assert Protocol.from_raw(raw2).differences(prot) == ["1 coils vs 2"]
    rc = main(["simulate", "--out", str(tmp_path / "d3"), "--subjects", "1", "--protocol", str(bare)])
    assert rc == 2 and "--trajectory FILE" in capsys.readouterr().err
    rc = main(
        ["simulate", "--out", str(tmp_path / "d3"), "--subjects", "1", "--protocol", str(template)]
        + ["--frames", "8"]
    )
    assert rc == 2 and "--frames cannot be combined with --protocol" in capsys.readouterr().err
    assert not (tmp_path / "d3").exists()


def test_simulate_radial_trajectory_file_and_sequence_options(tmp_path, capsys):
    import numpy as np

    from mrf_monai.acquisition.protocol import Protocol
    from mrf_monai.io.ismrmrd import read_raw
    from mrf_monai.io.trajectory_file import write_trajectory_file
    from mrf_monai.physics.sequence import MRFSequence

    seq = MRFSequence("FISP", np.linspace(5, 45, 10), 11.0, 2.0, None)
    (tmp_path / "seq.json").write_text(seq.to_json())
    args = [
        "simulate",
        "--subjects",
        "1",
        "--matrix",
        "24",
        "--noise",
        "0",
        "--sequence",
        str(tmp_path / "seq.json"),
    ]
    assert main(args + ["--out", str(tmp_path / "r"), "--radial", "3"]) == 0
    raw = read_raw(tmp_path / "r" / "sub-000" / "raw.h5")
    assert raw.readouts_per_frame == 3 and raw.samples_per_readout == 48 and raw.trajectory_type == "radial"
    assert raw.sequence == seq and raw.n_frames == 10
    traj = Protocol.from_raw(raw).readouts()
    assert (
        main(
            args
            + [
                "--out",
                str(tmp_path / "t"),
                "--trajectory",
                str(write_trajectory_file(tmp_path / "t.npz", traj)),
            ]
        )
        == 0
    )
    np.testing.assert_array_equal(read_raw(tmp_path / "t" / "sub-000" / "raw.h5").traj, raw.traj)
    bad = write_trajectory_file(tmp_path / "bad.npy", 10 * traj)
    assert main(args + ["--out", str(tmp_path / "b"), "--trajectory", str(bad)]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "frame 0" in err and "leaves k-space" in err


def test_simulate_on_a_full_disk_leaves_no_partial_subject(tmp_path, capsys, monkeypatch):
    """Issue 18: a write error leaves no empty or half-written sub-000/, and stale temporaries of a
    killed run are removed by the next run."""
    import errno

    import mrf_monai.io.subjects as io_subjects

    out = tmp_path / "data"
    stale = out / ".sub-000.tmp-999999999-abcdef"  # left by a run that was killed
    (stale / "ref").mkdir(parents=True)

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(io_subjects, "write_reference", full_disk)
    args = [
        "simulate",
        "--out",
        str(out),
        "--subjects",
        "2",
        "--frames",
        "4",
        "--matrix",
        "32",
        "--samples",
        "64",
    ]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "No space left on device" in err and "removed .sub-000.tmp-999999999-abcdef" in err
    assert list(out.iterdir()) == []
    monkeypatch.undo()
    assert main(args) == 0
    assert sorted(p.name for p in out.iterdir()) == ["dataset.json", "sub-000", "sub-001"]
