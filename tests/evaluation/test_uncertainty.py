"""Calibration of std maps: synthetic errors with known std, and the ``evaluate`` columns/figure."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import torch

from mrf_monai.cli import main
from mrf_monai.evaluation.metrics import evaluate_subject
from mrf_monai.evaluation.uncertainty import uncertainty_calibration, uncertainty_metrics
from mrf_monai.io.nifti import write_maps
from mrf_monai.io.subjects import write_reference

N = 40_000  # voxels of the synthetic maps: 10 bins of 4000, RMSE per bin within ~1.1 %
NEW_COLUMNS = [f"{q}_{m}" for q in ("T1", "T2") for m in ("spearman", "RMSE_over_std", "ECE_ms")]


def _synthetic(seed: int = 0, n: int = N):
    """Reference T1 (s), a std map log-uniform in 5-200 ms and errors drawn as N(0, std^2)."""
    rng = np.random.default_rng(seed)
    ref = rng.uniform(0.5, 2.0, n)
    std = np.exp(rng.uniform(np.log(0.005), np.log(0.2), n))
    return ref, std, rng.standard_normal(n)


def test_calibrated_std_gives_identity_curve_and_positive_rank_correlation():
    ref, std, z = _synthetic()
    c = uncertainty_calibration(ref + std * z, std, ref, n_bins=10)
    # |error| = std |z| with log std spread over 3.7 e-folds: rank correlation ~0.67
    assert c["spearman"] > 0.55
    assert c["n_voxels"] == N and c["bin_n_voxels"].tolist() == [N // 10] * 10
    assert np.all(np.diff(c["bin_std_mean_ms"]) > 0)  # bins in increasing std
    # RMSE of a bin of n Gaussian errors has relative standard error 1/sqrt(2n) = 1.1 %: 4 sigma
    tol = 4 / math.sqrt(2 * N / 10)
    np.testing.assert_allclose(c["bin_rmse_ms"], c["bin_std_rms_ms"], rtol=tol)
    assert c["rmse_over_std"] == pytest.approx(1.0, abs=tol)  # the median of the bins' ratios
    assert c["ece_ms"] < tol * float(np.sqrt(np.mean((1000 * std) ** 2)))


def test_std_independent_of_the_error_gives_no_rank_correlation():
    ref, std, z = _synthetic(1)
    c = uncertainty_calibration(ref + 0.05 * z, std, ref)  # every voxel has error sd 50 ms
    assert abs(c["spearman"]) < 4 / math.sqrt(N)  # standard error of rho under independence: 1/sqrt(N)
    # every bin has RMSE ~50 ms whatever its std: the curve is flat
    np.testing.assert_allclose(c["bin_rmse_ms"], 50.0, rtol=4 / math.sqrt(2 * N / 10))


def test_over_and_under_confident_std():
    ref, std, z = _synthetic(2)
    pred = ref + std * z
    over = uncertainty_calibration(pred, std / 2, ref)  # the std claims half the real spread
    under = uncertainty_calibration(pred, std * 2, ref)
    assert over["rmse_over_std"] == pytest.approx(2.0, rel=0.05)
    assert under["rmse_over_std"] == pytest.approx(0.5, rel=0.05)
    assert np.all(over["bin_rmse_ms"] > over["bin_std_rms_ms"])
    assert np.all(under["bin_rmse_ms"] < under["bin_std_rms_ms"])
    # scaling the std changes no rank
    assert over["spearman"] == pytest.approx(under["spearman"], abs=1e-12)
    # ECE: |RMSE - RMS std| weighted by bin size is half the RMS std (over) or the RMS std (under)
    rms = uncertainty_calibration(pred, std, ref)["bin_std_rms_ms"]
    assert over["ece_ms"] == pytest.approx(np.mean(rms) / 2, rel=0.05)
    assert under["ece_ms"] == pytest.approx(np.mean(rms), rel=0.05)


def test_exact_bins_mask_ties_and_tensors():
    # 8 voxels, 4 bins of 2 voxels in std order; errors in ms: 1..8
    std = np.array([8, 1, 7, 2, 6, 3, 5, 4], float) * 1e-3
    err = np.array([8, 1, 7, 2, 6, 3, 5, 4], float) * 1e-3
    ref = np.full(8, 1.0)
    c = uncertainty_calibration(ref + err, std, ref, n_bins=4)
    assert c["spearman"] == pytest.approx(1.0)
    np.testing.assert_allclose(c["bin_std_mean_ms"], [1.5, 3.5, 5.5, 7.5])
    np.testing.assert_allclose(c["bin_std_rms_ms"], np.sqrt([(1 + 4) / 2, (9 + 16) / 2, (25 + 36) / 2, 56.5]))
    np.testing.assert_allclose(c["bin_rmse_ms"], c["bin_std_rms_ms"])
    assert c["ece_ms"] == pytest.approx(0.0, abs=1e-12) and c["rmse_over_std"] == pytest.approx(1.0)
    # the same as tensors in a 2D map whose mask leaves out a garbage voxel
    mask = np.ones((3, 3), bool)
    mask[2, 2] = False
    pad = lambda a, v: torch.tensor(np.append(a, v).reshape(3, 3))  # noqa: E731
    t = uncertainty_calibration(pad(ref + err, 99.0), pad(std, 5.0), pad(ref, 0.0), torch.tensor(mask), 4)
    np.testing.assert_allclose(t["bin_rmse_ms"], c["bin_rmse_ms"])
    # ties are never split: the cut at 2 leaves the five voxels of std 0 (the nearer end of the
    # run), the one at 4 moves to their end (5), the one at 6 stays: bins of 5, 1 and 2 voxels
    tied = np.array([0, 0, 0, 0, 0, 1, 2, 3], float) * 1e-3
    c = uncertainty_calibration(ref + err, tied, ref, n_bins=4)
    assert c["bin_n_voxels"].tolist() == [5, 1, 2]
    np.testing.assert_allclose(c["bin_std_mean_ms"], [0.0, 1.0, 2.5])
    np.testing.assert_allclose(c["bin_rmse_ms"][0], np.sqrt(np.mean(np.array([8, 1, 7, 2, 6]) ** 2.0)))
    # more bins than voxels: one bin per voxel; a constant std has no rank correlation
    assert uncertainty_calibration(ref + err, std, ref, n_bins=50)["bin_n_voxels"].tolist() == [1] * 8
    assert math.isnan(uncertainty_calibration(ref + err, np.full(8, 1e-3), ref)["spearman"])
    assert math.isnan(uncertainty_calibration(ref + err, np.zeros(8), ref)["rmse_over_std"])


def test_bad_input():
    a = np.ones(4)
    with pytest.raises(ValueError, match="must have one shape"):
        uncertainty_calibration(a, np.ones(5), a)
    with pytest.raises(ValueError, match="n_bins must be at least 1"):
        uncertainty_calibration(a, a, a, n_bins=0)
    with pytest.raises(ValueError, match="the mask is empty"):
        uncertainty_calibration(a, a, a, np.zeros(4, bool))
    with pytest.raises(ValueError, match="negative or non-finite"):
        uncertainty_calibration(a, -a, a)


def test_uncertainty_metrics_only_for_quantities_with_std():
    ref, std, z = _synthetic(3, n=1000)
    refs = {"t1_s": ref, "t2_s": ref / 10}
    pred = {"t1_s": ref + std * z, "t2_s": ref / 10}
    assert uncertainty_metrics(pred, refs, None) == {}
    out = uncertainty_metrics({**pred, "t1_std_s": std}, refs, None)
    assert sorted(out) == ["T1_ECE_ms", "T1_RMSE_over_std", "T1_spearman"]
    assert out["T1_spearman"] == uncertainty_calibration(pred["t1_s"], std, ref)["spearman"]


# ----------------------------------------------------------------------------- files and CLI

NX, NY, S = 40, 30, 2
LABELS = ("a", "b")


def _dataset(tmp_path):
    """Two subjects with ``ref/`` maps, a probabilistic prediction folder with calibrated std maps
    (T2 std written in ms) and a deterministic one without std maps."""
    ds, prob, det = tmp_path / "dataset", tmp_path / "prob", tmp_path / "det"
    affine = np.diag([2.0, 2.0, 5.0, 1.0])
    expected = {}
    for n, label in enumerate(LABELS):
        rng = np.random.default_rng(10 + n)
        mask = np.zeros((NX, NY, S), bool)
        mask[2:-2, 2:-2] = True
        t1 = np.where(mask, rng.uniform(0.5, 2.0, mask.shape), 0).astype(np.float32)
        t2 = np.where(mask, rng.uniform(0.04, 0.2, mask.shape), 0).astype(np.float32)
        pd = mask.astype(np.float32)
        write_reference(ds / f"sub-{label}", label, t1, t2, pd, mask.astype(np.uint8), affine)
        (ds / f"sub-{label}" / "raw.h5").write_bytes(b"not read by the evaluation")
        s1 = np.where(mask, np.exp(rng.uniform(np.log(0.005), np.log(0.2), mask.shape)), 0)
        s2 = s1 / 10
        p1 = np.where(mask, t1 + s1 * rng.standard_normal(mask.shape), 0)
        p2 = np.where(mask, t2 + s2 * rng.standard_normal(mask.shape), 0)
        maps = {"T1map": p1, "T2map": p2, "PDmap": pd}
        write_maps(prob / f"sub-{label}", label, {**maps, "desc-std_T1map": s1}, affine, "MRF-IDDPM")
        # the T2 std in ms: the sidecar's Units must be honoured
        write_maps(prob / f"sub-{label}", label, {"desc-std_T2map": s2}, affine, "MRF-IDDPM", units="ms")
        write_maps(det / f"sub-{label}", label, maps, affine, "SVD-MRF")
        # float32 as written to the files
        f32 = {k: np.asarray(v, np.float32).astype(np.float64) for k, v in dict(p1=p1, p2=p2, s1=s1).items()}
        expected[f"sub-{label}"] = {
            "T1": uncertainty_calibration(f32["p1"], f32["s1"], t1, mask),
            "T2": uncertainty_calibration(f32["p2"], np.float32(s2 * 1000) / 1000.0, t2, mask),
        }
    return ds, prob, det, expected


def test_evaluate_subject_reads_std_maps_and_their_units(tmp_path):
    ds, prob, det, expected = _dataset(tmp_path)
    m = evaluate_subject(prob / "sub-a", ds / "sub-a")
    assert list(m)[-6:] == NEW_COLUMNS  # appended after the older columns
    for q in ("T1", "T2"):
        assert m[f"{q}_spearman"] == pytest.approx(expected["sub-a"][q]["spearman"], abs=1e-6)
        assert m[f"{q}_spearman"] > 0.5
        assert m[f"{q}_RMSE_over_std"] == pytest.approx(1.0, abs=0.1)
    assert not set(NEW_COLUMNS) & set(evaluate_subject(det / "sub-a", ds / "sub-a"))


def test_cli_writes_columns_and_one_figure_per_probabilistic_method(tmp_path, capfd):
    ds, prob, det, expected = _dataset(tmp_path)
    out = tmp_path / "report"
    args = ["evaluate", "--pred", str(det), str(prob), "--methods", "SVD-MRF", "MRF-IDDPM"]
    args += ["--ref", str(ds), "--out", str(out), "--no-progress"]
    assert main(args) == 0
    stdout = capfd.readouterr().out
    figure = out / "calibration_MRF-IDDPM.png"
    assert sorted(p.name for p in out.iterdir()) == ["calibration_MRF-IDDPM.png", "metrics.csv", "summary.md"]
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert stdout.strip().splitlines()[-1].endswith(f"and {figure}")
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    assert list(rows[0])[-6:] == NEW_COLUMNS
    for row in rows:
        if row["method"] == "SVD-MRF":
            assert all(row[c] == "" for c in NEW_COLUMNS)  # no std maps: empty cells
            continue
        for q in ("T1", "T2"):
            assert float(row[f"{q}_spearman"]) == pytest.approx(
                expected[row["subject"]][q]["spearman"], abs=1e-5
            )
            assert float(row[f"{q}_ECE_ms"]) == pytest.approx(expected[row["subject"]][q]["ece_ms"], rel=1e-4)
    summary = (out / "summary.md").read_text()
    header = next(line for line in summary.splitlines() if line.startswith("| method"))
    assert "T1 std Spearman" in header and "T2 RMSE/std" in header
    svd_line = next(line for line in summary.splitlines() if line.startswith("| SVD-MRF"))
    assert svd_line.endswith("| - | - | - | - | - | - |")  # mean over subjects only where there are std maps
    mean_rho = np.mean([expected[s]["T1"]["spearman"] for s in expected])
    iddpm_line = next(line for line in summary.splitlines() if line.startswith("| MRF-IDDPM"))
    assert f"{mean_rho:.3f} ± " in iddpm_line


def test_cli_without_std_maps_adds_nothing(tmp_path, capfd):
    ds, _, det, _ = _dataset(tmp_path)
    out = tmp_path / "report"
    assert main(["evaluate", "--pred", str(det), "--ref", str(ds), "--out", str(out), "--no-progress"]) == 0
    assert capfd.readouterr().err == ""
    assert sorted(p.name for p in out.iterdir()) == ["metrics.csv", "summary.md"]
    header = (out / "metrics.csv").read_text().splitlines()[0].split(",")
    assert not set(NEW_COLUMNS) & set(header) and header[-1] == "PD_NRMSE"
    assert "Spearman" not in (out / "summary.md").read_text()
