"""The shipped bundles are found from any working directory and after a regular (non-editable) install."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mrf_monai.resources import BUNDLE_NAMES, bundle_dir, bundle_file

ROOT = Path(__file__).resolve().parents[1]

PROBE = """
import json, sys
import mrf_monai
from mrf_monai.io.weights import load_hyper_parameters
from mrf_monai.pipeline.methods import method_config
from mrf_monai.resources import bundle_file
spec = method_config("iddpm")
hp = load_hyper_parameters(bundle_file("mrf_iddpm", "models/model.pt"))
print(json.dumps({"package": mrf_monai.__file__, "config": str(spec.config), "rank": hp["model"]["rank"]}))
"""


def test_bundles_are_found_by_name_and_path(tmp_path, monkeypatch):
    for name in BUNDLE_NAMES:
        folder = bundle_dir(name)
        assert (folder / "configs" / "inference.json").is_file() and folder.is_absolute()
        assert (
            bundle_file(name, "models/model.pt").is_file()
            and bundle_file(name, "models/model.json").is_file()
        )
    with pytest.raises(FileNotFoundError, match="shipped bundles: mrf_iddpm, unet_baseline"):
        bundle_dir("nope")
    copy = tmp_path / "my_bundle"
    shutil.copytree(bundle_dir("mrf_iddpm") / "configs", copy / "configs")
    assert bundle_dir(copy) == copy.resolve()
    with pytest.raises(FileNotFoundError, match="no configs"):
        bundle_dir(tmp_path)
    with pytest.raises(FileNotFoundError, match="has no models/model.pt"):
        bundle_file(copy, "models/model.pt")
    monkeypatch.setenv("MRF_MONAI_BUNDLES", str(tmp_path))
    assert bundle_dir("my_bundle") == copy.resolve()


def test_cli_from_another_folder_and_another_bundle(tmp_path):
    """``mrf-monai reconstruct --list-options`` resolves the bundles without the checkout as cwd."""
    cli = [sys.executable, "-m", "mrf_monai.cli", "reconstruct", "--list-options", "iddpm"]
    out = subprocess.run(cli, cwd=tmp_path, capture_output=True, text=True, check=True).stdout
    assert "n_samples = 10" in out and "model_path" in out
    other = tmp_path / "other"
    shutil.copytree(bundle_dir("mrf_iddpm"), other)
    config = other / "configs" / "inference.json"
    config.write_text(config.read_text().replace('"n_samples": 10', '"n_samples": 3'))
    out = subprocess.run(
        [*cli, "--bundle", str(other)], cwd=tmp_path, capture_output=True, text=True, check=True
    )
    assert "n_samples = 3" in out.stdout


@pytest.mark.slow
def test_a_non_editable_install_carries_the_bundles(tmp_path):
    """Build the wheel, install it into a plain folder, import it from there (not the checkout)."""
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    src = tmp_path / "src"
    shutil.copytree(
        ROOT,
        src,
        ignore=shutil.ignore_patterns(
            ".venv", ".git", "runs", "demo_output", "*.egg-info", "build", "__pycache__", "tests"
        ),
    )
    subprocess.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "dist"), str(src)],
        check=True,
        capture_output=True,
    )
    wheel = next((tmp_path / "dist").glob("mrf_monai-*.whl"))
    site = tmp_path / "site"
    subprocess.run(
        [*pip, "install", "--no-deps", "--target", str(site), str(wheel)], check=True, capture_output=True
    )
    shutil.rmtree(src)  # nothing may come from the source tree
    env = {"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"}
    run = subprocess.run([sys.executable, "-c", PROBE], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    import json

    found = json.loads(run.stdout.strip().splitlines()[-1])
    assert found["package"].startswith(str(site)) and found["config"].startswith(str(site))
    assert found["rank"] == 5
