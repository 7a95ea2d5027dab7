"""EPG simulation of FISP against an independent isochromat Bloch simulation and physics limits."""

import dataclasses
import math

import numpy as np
import pytest
import torch

from mrf_monai.physics.epg import default_n_states, simulate, simulate_fisp
from mrf_monai.physics.sequence import MRFSequence, fisp_mrf_jiang2015

# (T1 s, T2 s): white matter, grey matter, CSF, fat
TISSUES = {"WM": (0.85, 0.07), "GM": (1.4, 0.10), "CSF": (4.0, 2.0), "fat": (0.37, 0.13)}


def bloch_isochromats(t1_s, t2_s, seq: MRFSequence, b1=1.0, n_iso=256):
    """Reference: average of ``n_iso`` isochromats whose gradient-induced phase per TR spans
    one full cycle; right-handed rotations about x, exact relaxation, ideal inversion.

    With n_iso > T no dephasing order reached within T frames aliases back onto F0, so the
    average equals the exact (untruncated) FISP signal.
    """
    theta = 2 * np.pi * np.arange(n_iso) / n_iso
    t1 = np.asarray(t1_s, dtype=np.float64)[:, None]
    t2 = np.asarray(t2_s, dtype=np.float64)[:, None]
    mx = np.zeros((t1.shape[0], n_iso))
    my = np.zeros_like(mx)
    mz = np.ones_like(mx)

    def relax(dt_s):
        nonlocal mx, my, mz
        e1, e2 = np.exp(-dt_s / t1), np.exp(-dt_s / t2)
        mx, my, mz = mx * e2, my * e2, mz * e1 + (1 - e1)

    if seq.ti_ms is not None:
        mz = -mz
        relax(seq.ti_ms / 1000)
    signal = np.zeros((t1.shape[0], seq.n_frames), dtype=np.complex128)
    for t in range(seq.n_frames):
        a = np.deg2rad(seq.flip_angle_deg[t]) * b1
        c, s = np.cos(a), np.sin(a)
        my, mz = c * my - s * mz, s * my + c * mz  # rotation matrix R_x(a)
        relax(seq.te_ms / 1000)
        signal[:, t] = (mx + 1j * my).mean(axis=1)
        relax((seq.tr_ms[t] - seq.te_ms) / 1000)
        cp, sp = np.cos(theta), np.sin(theta)
        mx, my = cp * mx - sp * my, sp * mx + cp * my  # precession about z (gradient)
    return signal


def _pairs(names):
    t1 = torch.tensor([TISSUES[n][0] for n in names], dtype=torch.float64)
    t2 = torch.tensor([TISSUES[n][1] for n in names], dtype=torch.float64)
    return t1, t2


@pytest.mark.parametrize("inversion", [True, False])
def test_matches_isochromat_bloch_simulation(inversion):
    seq = fisp_mrf_jiang2015().truncate(100)
    if not inversion:
        seq = dataclasses.replace(seq, ti_ms=None)
    t1, t2 = _pairs(TISSUES)
    epg = simulate_fisp(t1, t2, seq).numpy()  # default state truncation
    ref = bloch_isochromats(t1.numpy(), t2.numpy(), seq)
    assert np.abs(ref).max() > 0.05
    # up to one global phase factor (the conventions here agree, so it is 1)
    phase = np.vdot(epg.ravel(), ref.ravel())
    phase /= abs(phase)
    assert abs(phase - 1) < 1e-9
    np.testing.assert_allclose(epg * phase, ref, rtol=0, atol=1e-4)


def test_variable_tr_b1_and_large_angles_match_bloch():
    rng = np.random.default_rng(0)
    n = 60
    seq = MRFSequence("FISP", rng.uniform(5, 90, n), rng.uniform(8, 14, n), 2.5, 40.0)
    t1, t2 = _pairs(["WM", "CSF"])
    b1 = 0.8
    epg = simulate_fisp(t1, t2, seq, b1=torch.full((2,), b1, dtype=torch.float64)).numpy()
    ref = bloch_isochromats(t1.numpy(), t2.numpy(), seq, b1=b1, n_iso=128)
    np.testing.assert_allclose(epg, ref, rtol=0, atol=1e-4)


def test_default_truncation_is_accurate_over_1000_frames():
    seq = fisp_mrf_jiang2015()
    t2 = torch.tensor([0.02, 0.1, 0.3, 1.0, 3.0], dtype=torch.float64)
    t1 = torch.full_like(t2, 5.0)
    exact = simulate_fisp(t1, t2, seq, n_states=seq.n_frames)
    auto = simulate_fisp(t1, t2, seq, chunk_size=1)  # each atom with its own state count
    assert (auto - exact).abs().max() < 1e-4
    assert default_n_states(0.02, seq) < default_n_states(3.0, seq) <= seq.n_frames


def test_first_frame_signal_and_inversion_sign():
    seq = MRFSequence("FISP", [30.0, 30.0], 10.0, 2.0, None)
    seq_ir = dataclasses.replace(seq, ti_ms=50.0)
    t1 = torch.tensor([1.0], dtype=torch.float64)
    t2 = torch.tensor([0.1], dtype=torch.float64)
    s = simulate_fisp(t1, t2, seq)[0, 0]
    s_ir = simulate_fisp(t1, t2, seq_ir)[0, 0]
    e2 = math.exp(-0.002 / 0.1)
    # right-handed rotation about x: M = +z -> F0 = -i sin(a)
    assert s.item() == pytest.approx(-1j * math.sin(math.radians(30)) * e2, abs=1e-12)
    z_ti = 1 - 2 * math.exp(-0.05 / 1.0)  # inverted, partly recovered, still negative
    assert s_ir.item() == pytest.approx(-1j * math.sin(math.radians(30)) * e2 * z_ti, abs=1e-12)
    assert s.imag < 0 < s_ir.imag


def test_zero_flip_gives_zero_signal():
    seq = MRFSequence("FISP", np.zeros(20), 10.0, 2.0, 18.0)
    out = simulate_fisp(torch.tensor([1.0, 0.1]), torch.tensor([0.1, 0.05]), seq)
    assert out.shape == (2, 20)
    assert torch.count_nonzero(out) == 0


def test_spin_echo_without_t1_effects():
    # 90-180-180 with dephasing between: frame 2 is a spin echo decaying with T2 only,
    # and with no relaxation at all it recovers the full magnetisation.
    seq = MRFSequence("FISP", [90.0, 180.0, 180.0], 10.0, 2.0, None)
    t1 = torch.tensor([1e12, 0.3, 1e12], dtype=torch.float64)
    t2 = torch.tensor([1e12, 0.05, 0.05], dtype=torch.float64)
    out = simulate_fisp(t1, t2, seq)
    assert out[0, 0].item() == pytest.approx(-1j, abs=1e-9)
    assert out[:, 1].abs().max() < 1e-12  # 180 on fully dephased magnetisation: no F0
    assert out[0, 2].item() == pytest.approx(-1j, abs=1e-9)
    echo = math.exp(-(2 * 0.010 + 0.002) / 0.05)
    assert out[1, 2].item() == pytest.approx(-1j * echo, abs=1e-12)
    assert out[2, 2].item() == pytest.approx(-1j * echo, abs=1e-12)


def test_no_relaxation_keeps_signal_bounded_and_long_t1_t2_converge():
    seq = fisp_mrf_jiang2015().truncate(100)
    huge = torch.tensor([1e9], dtype=torch.float64)
    s = simulate_fisp(huge, huge, seq)
    assert s.abs().max() <= 1.0 + 1e-12
    long = simulate_fisp(
        torch.tensor([1e4], dtype=torch.float64), torch.tensor([1e4], dtype=torch.float64), seq
    )
    assert (long - s).abs().max() < 1e-3


def test_float32_matches_float64_and_dtypes_follow_input():
    seq = fisp_mrf_jiang2015().truncate(200)
    t1, t2 = _pairs(TISSUES)
    s64 = simulate_fisp(t1, t2, seq)
    s32 = simulate_fisp(t1.float(), t2.float(), seq)
    assert s64.dtype == torch.complex128 and s32.dtype == torch.complex64
    assert s32.shape == (4, 200)
    assert (s32.to(torch.complex128) - s64).abs().max() < 1e-5


def test_b1_equals_scaled_flip_angles():
    seq = fisp_mrf_jiang2015().truncate(150)
    t1, t2 = _pairs(TISSUES)
    b1 = torch.tensor([0.6, 0.9, 1.1, 1.3], dtype=torch.float64)
    with_b1 = simulate_fisp(t1, t2, seq, b1=b1, n_states=150)  # no truncation: exact
    for i in range(4):
        scaled = dataclasses.replace(seq, flip_angle_deg=seq.flip_angle_deg * float(b1[i]))
        ref = simulate_fisp(t1[i : i + 1], t2[i : i + 1], scaled, n_states=150)
        torch.testing.assert_close(with_b1[i : i + 1], ref, rtol=0, atol=1e-12)
    # a scalar B1 applies to every atom
    torch.testing.assert_close(
        simulate_fisp(t1, t2, seq, b1=0.9), simulate_fisp(t1, t2, seq, b1=torch.full_like(t1, 0.9))
    )


def test_chunking_does_not_change_result():
    seq = fisp_mrf_jiang2015().truncate(60)
    t1 = torch.linspace(0.2, 3.0, 7)
    t2 = torch.linspace(0.01, 0.2, 7)
    torch.testing.assert_close(
        simulate_fisp(t1, t2, seq, chunk_size=3, n_states=60), simulate_fisp(t1, t2, seq, n_states=60)
    )


def test_simulate_dispatches_and_rejects_unknown_types():
    seq = fisp_mrf_jiang2015().truncate(10)
    t1, t2 = torch.tensor([1.0]), torch.tensor([0.1])
    torch.testing.assert_close(simulate(t1, t2, seq), simulate_fisp(t1, t2, seq))
    other = fisp_mrf_jiang2015().truncate(10)
    object.__setattr__(other, "sequence_type", "bSSFP")  # bypass validation: a future type
    with pytest.raises(ValueError, match="only 'FISP'"):
        simulate(t1, t2, other)


def test_bad_inputs_raise_clear_errors():
    seq = fisp_mrf_jiang2015().truncate(10)
    with pytest.raises(ValueError, match="one per atom"):
        simulate_fisp(torch.tensor([1.0, 2.0]), torch.tensor([0.1, 0.2, 0.3]), seq)
    with pytest.raises(ValueError, match="positive"):
        simulate_fisp(torch.tensor([1.0]), torch.tensor([0.0]), seq)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    seq = fisp_mrf_jiang2015().truncate(200)
    t1, t2 = _pairs(TISSUES)
    cpu = simulate_fisp(t1, t2, seq)
    gpu = simulate_fisp(t1.cuda(), t2.cuda(), seq)
    assert gpu.device.type == "cuda" and gpu.dtype == torch.complex128
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=0, atol=1e-10)
