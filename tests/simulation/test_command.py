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
