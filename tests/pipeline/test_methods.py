"""Method configs: registry, options, and errors before any subject is read."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from mrf_monai.pipeline.methods import (
    available_methods,
    build_run,
    config_error_message,
    method_config,
    method_options,
    parse_options,
    register_method,
)


def test_builtin_methods_and_their_configs():
    assert {"svdmrf", "lrtv", "unet", "iddpm"} <= set(available_methods())
    for name in ("svdmrf", "lrtv", "unet", "iddpm"):
        spec = method_config(name)
        config = json.loads(spec.config.read_text())
        assert "runner" in config and "run" in config, name
        assert (spec.bundle is None) == (name in ("svdmrf", "lrtv"))
    assert method_options("lrtv")["lam"] == 0.01
    assert method_options("iddpm")["n_samples"] == 10
    with pytest.raises(ValueError, match="unknown reconstruction method 'nope'; available"):
        method_config("nope")


def test_unknown_options_are_refused_with_the_valid_ones(tmp_path):
    with pytest.raises(
        ValueError, match=r"unknown option\(s\) n_sampels for method 'iddpm'; valid: .*n_samples"
    ):
        build_run("iddpm", {"n_sampels": 3, "dataset_dir": str(tmp_path)})


def test_setting_errors_carry_the_original_message_not_the_expression(tmp_path):
    (tmp_path / "sub-01").mkdir()  # no raw.h5: not a subject
    with pytest.raises(ValueError) as info:
        build_run("svdmrf", {"dataset_dir": str(tmp_path), "output_dir": str(tmp_path / "out")})
    text = str(info.value)
    assert text.startswith("method 'svdmrf': no subjects") and "\n" not in text and "$" not in text


def test_register_a_method_config(tmp_path, monkeypatch):
    from mrf_monai.pipeline import methods

    monkeypatch.setattr(methods, "REGISTRY", methods.MethodRegistry())  # this test's registrations stay here
    config = tmp_path / "mine.json"
    config.write_text(json.dumps({"runner": None, "run": "$None"}))
    register_method("mine", config, display="Mine")
    assert "mine" in available_methods() and method_config("mine").config == config.resolve()
    with pytest.raises(ValueError, match="already registered"):
        register_method("mine", config)
    with pytest.raises(ValueError, match="alphanumeric"):
        register_method("no spaces", config)
    with pytest.raises(FileNotFoundError):
        register_method("other", tmp_path / "missing.json")


def test_config_error_message_unwraps_the_cause():
    try:
        try:
            raise FileNotFoundError("no MRF-IDDPM weights at x.pt")
        except FileNotFoundError as inner:
            raise RuntimeError("Failed to evaluate ConfigExpression ...\nlong traceback") from inner
    except RuntimeError as err:
        assert config_error_message(err) == "no MRF-IDDPM weights at x.pt"


def test_parse_options():
    assert parse_options(
        ["n=3", "x=0.5", "flag=true", "off=False", "none=null", "name=abc", "roi=[32, 32]"]
    ) == {
        "n": 3,
        "x": 0.5,
        "flag": True,
        "off": False,
        "none": None,
        "name": "abc",
        "roi": [32, 32],
    }
    with pytest.raises(ValueError, match="KEY=VALUE"):
        parse_options(["novalue"])


def test_cli_help_imports_neither_torch_nor_monai():
    code = (
        "import sys, contextlib, io\n"
        "from mrf_monai.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    assert main([]) == 2\n"
        "    try:\n"
        "        main(['--help'])\n"
        "    except SystemExit:\n"
        "        pass\n"
        "heavy = sorted(m for m in ('torch', 'monai', 'numpy') if m in sys.modules)\n"
        "print(heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
