# Copyright (c) mrf_monai developers.
# Licensed under the Apache License, Version 2.0.
"""Few-step ODE solvers (DPM-Solver++(2M), UniPC) against the exact probability-flow ODE of
Gaussian data, and their use in the sampler and the inferer."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from mrf_monai.diffusion.inferer import DiffusionSamplingInferer
from mrf_monai.diffusion.model import build_model, predict_eps_and_var
from mrf_monai.diffusion.sampling import ReverseProcess, alphas_cumprod_from, sample
from mrf_monai.diffusion.solvers import MultistepSolver

ABAR = alphas_cumprod_from()  # linear 1e-4 .. 0.02, T = 1000, float64
# per-channel data x0 ~ N(mu, s^2): scales from 0.05 to 2 (fine structure decided at low noise
# levels, coarse structure at high ones)
MU = torch.tensor([0.5, -1.0, 2.0, 0.0, 0.3, 0.0], dtype=torch.float64)
S = torch.tensor([0.3, 1.0, 0.5, 2.0, 0.1, 0.05], dtype=torch.float64)


def _view(v: torch.Tensor) -> torch.Tensor:
    return v.view(1, -1, 1, 1)


def posterior_mean(x_t: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """``E[x0 | x_t]`` for independent Gaussian pixels, ``a = abar_t`` ``(B, 1, 1, 1)``."""
    mu, s = _view(MU).to(x_t), _view(S).to(x_t)
    return mu + a.sqrt() * s**2 / (a * s**2 + 1 - a) * (x_t - a.sqrt() * mu)


class GaussianDenoiser(nn.Module):
    """The exact network for Gaussian data: ``eps`` (or ``[eps, v]`` with a constant variance
    block, or the ``v``-prediction target) of ``x0_hat = g(E[x0 | x_t])`` for an affine ``g``."""

    def __init__(
        self, prediction: str = "epsilon", learn_sigma: bool = False, gain: float = 1.0, shift: float = 0.0
    ):
        super().__init__()
        self.prediction_type, self.learn_sigma, self.gain, self.shift = prediction, learn_sigma, gain, shift

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        c = x.shape[1] // 2
        x_t = x[:, :c]
        a = ABAR.to(x.device)[timesteps].to(x.dtype).view(-1, 1, 1, 1)
        x0 = self.gain * posterior_mean(x_t, a) + self.shift
        eps = (x_t - a.sqrt() * x0) / (1 - a).sqrt()
        out = eps if self.prediction_type == "epsilon" else a.sqrt() * eps - (1 - a).sqrt() * x0
        return torch.cat([out, torch.full_like(out, 0.3)], dim=1) if self.learn_sigma else out


def initial_noise(seed: int = 0) -> torch.Tensor:
    return torch.randn(
        2, MU.numel(), 8, 8, generator=torch.Generator().manual_seed(seed), dtype=torch.float64
    )


def exact_output(x_T: torch.Tensor) -> torch.Tensor:
    """What an exact solver returns: along the probability-flow ODE of Gaussian data the
    standardised ``(x_t - alpha_t mu) / sqrt(abar_t s^2 + 1 - abar_t)`` is constant; a sampler
    returns ``x0_hat`` at the last visited timestep ``t = 0``."""
    mu, s = _view(MU), _view(S)
    a_T, a_0 = ABAR[-1], ABAR[0]
    z = (x_T - a_T.sqrt() * mu) / (a_T * s**2 + 1 - a_T).sqrt()
    x_0 = a_0.sqrt() * mu + (a_0 * s**2 + 1 - a_0).sqrt() * z
    return posterior_mean(x_0, a_0.view(1, 1, 1, 1))


def solver_error(method: str, n_steps: int, spacing: str, channels: slice = slice(None)) -> float:
    """RMS error of a sampler's output relative to the data's spread (over ``channels``: the
    pixels are independent, so a subset of channels is a smaller problem of its own)."""
    x_T = initial_noise()
    out = sample(
        GaussianDenoiser(), torch.zeros_like(x_T), n_steps=n_steps, method=method, x_T=x_T, spacing=spacing
    )
    return float(((out - exact_output(x_T)) / _view(S))[:, channels].pow(2).mean().sqrt())


def test_exact_solution_is_the_limit_of_fine_ddim():
    """The oracle itself: DDIM with every training step is within 2 % of the exact endpoint
    (relative to the data's spread), 4 times closer than with every fourth step."""
    fine = solver_error("ddim", 1000, "linspace")
    assert fine < 0.02 and fine < 0.3 * solver_error("ddim", 250, "linspace")


@pytest.mark.parametrize("method,order", [("ddim", 1.0), ("dpmpp2m", 2.0), ("unipc", 3.0)])
def test_error_falls_at_the_expected_order(method, order):
    """On the channels whose ODE is smooth at the resolution of the integer timesteps
    (``s >= 0.3``; finer ones are decided between t = 0 and 3), with even log-SNR steps: DDIM is
    first order, DPM-Solver++(2M) second, UniPC-2 (predictor + corrector) third."""
    errors = [solver_error(method, n, "logsnr", slice(0, 4)) for n in (20, 40, 80)]
    observed = [math.log2(errors[k] / errors[k + 1]) for k in range(2)]
    assert all(o > order - 0.35 for o in observed), (errors, observed)


@pytest.mark.parametrize("method", ["dpmpp2m", "unipc"])
@pytest.mark.parametrize("spacing", ["linspace", "logsnr"])
def test_beats_ddim_at_equal_steps(method, spacing):
    factor = 0.5 if spacing == "logsnr" else 0.9
    for n in (5, 10, 20):
        assert solver_error(method, n, spacing) < factor * solver_error("ddim", n, spacing), n
    # 8 solver steps on log-SNR spacing beat 20 DDIM steps on either spacing by a factor of 2
    ddim_20 = min(solver_error("ddim", 20, sp) for sp in ("linspace", "logsnr"))
    assert solver_error(method, 8, "logsnr") < 0.5 * ddim_20


@pytest.mark.parametrize("method", ["dpmpp2m", "unipc"])
def test_v_prediction_and_learned_variance_do_not_change_the_solution(method):
    x_T = initial_noise(1)
    ref = sample(GaussianDenoiser(), torch.zeros_like(x_T), n_steps=9, method=method, x_T=x_T)
    learned = sample(
        GaussianDenoiser(learn_sigma=True), torch.zeros_like(x_T), n_steps=9, method=method, x_T=x_T
    )
    assert torch.equal(learned, ref)
    # predict_eps_and_var converts v to eps in single precision
    v_pred = sample(GaussianDenoiser("v"), torch.zeros_like(x_T), n_steps=9, method=method, x_T=x_T)
    torch.testing.assert_close(v_pred, ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("method", ["dpmpp2m", "unipc"])
def test_x0_transform_is_applied_and_kept_in_the_history(method):
    """A solver with ``x0_transform = g`` is the solver of the network whose estimate is ``g(x0_hat)``
    (every step, the multistep history included); its output is the transformed estimate."""
    gain, shift = 0.7, 0.25
    x_T = initial_noise(2)
    calls = []

    def g(x0: torch.Tensor, i: int) -> torch.Tensor:
        calls.append(i)
        return gain * x0 + shift

    cond = torch.zeros_like(x_T)
    out = sample(
        GaussianDenoiser(), cond, n_steps=6, method=method, x_T=x_T, x0_transform=g, spacing="logsnr"
    )
    ref = sample(
        GaussianDenoiser(gain=gain, shift=shift), cond, n_steps=6, method=method, x_T=x_T, spacing="logsnr"
    )
    assert calls == list(range(6))
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
    plain = sample(GaussianDenoiser(), cond, n_steps=6, method=method, x_T=x_T, spacing="logsnr")
    assert float((plain - ref).abs().max()) > 0.1  # the transform matters
    const = sample(
        GaussianDenoiser(), cond, n_steps=6, method=method, x_T=x_T, x0_transform=lambda x0, i: x0 * 0 + 3.0
    )
    assert torch.equal(const, torch.full_like(const, 3.0))


def _reference_ddim(model: nn.Module, cond: torch.Tensor, x_T: torch.Tensor, n_steps: int) -> torch.Tensor:
    """The DDIM (eta 0) loop as it was before the solvers were added, written out."""
    ts = torch.round(torch.linspace(999, 0, n_steps, dtype=torch.float64)).long()
    x = x_T
    for i, t in enumerate(ts.tolist()):
        a_t = float(ABAR[t])
        a_s = float(ABAR[ts[i + 1]]) if i + 1 < n_steps else 1.0
        eps, _ = predict_eps_and_var(model, x, t, cond, ABAR)
        eps = eps.to(x.dtype)
        x0 = (x - math.sqrt(1.0 - a_t) * eps) / math.sqrt(a_t)
        x = math.sqrt(a_s) * x0 + math.sqrt(max(1.0 - a_s, 0.0)) * eps
    return x


@pytest.fixture(scope="module")
def tiny_model() -> nn.Module:
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = build_model(
        rank=1,
        channels=(8, 8),
        attention_levels=(False, True),
        num_res_blocks=1,
        num_head_channels=8,
        norm_num_groups=8,
        prediction_type="v",
    ).eval()
    yield model
    torch.set_num_threads(n)


@torch.no_grad()
def test_ddim_is_unchanged(tiny_model):
    g = torch.Generator().manual_seed(5)
    cond, x_T = torch.randn(2, 2, 16, 16, generator=g), torch.randn(2, 2, 16, 16, generator=g)
    out = sample(tiny_model, cond, n_steps=7, method="ddim", x_T=x_T)
    assert torch.equal(out, _reference_ddim(tiny_model, cond, x_T, 7))


@torch.no_grad()
@pytest.mark.parametrize("method", ["dpmpp2m", "unipc"])
@pytest.mark.parametrize(
    "kwargs", [{"mode": "whole"}, {"mode": "patch"}, {"mode": "patch", "blend_every_step": True}]
)
def test_inferer_is_deterministic(tiny_model, method, kwargs):
    cond = torch.randn(2, 40, 40, generator=torch.Generator().manual_seed(6))
    inferer = DiffusionSamplingInferer(
        n_samples=2, n_steps=4, method=method, roi_size=32, overlap=0.25, spacing="logsnr", seed=3, **kwargs
    )
    a = inferer(cond, tiny_model, slice_index=1)
    b = inferer(cond, tiny_model, slice_index=1)
    assert a.shape == (2, 2, 40, 40) and bool(torch.isfinite(a).all())
    assert torch.equal(a, b)
    assert not torch.equal(a, inferer(cond, tiny_model, slice_index=2))
    ddim = DiffusionSamplingInferer(
        n_samples=2, n_steps=4, roi_size=32, overlap=0.25, spacing="logsnr", seed=3, **kwargs
    )
    assert not torch.equal(a, ddim(cond, tiny_model, slice_index=1))


def test_invalid_use():
    with pytest.raises(ValueError, match="eta must be 0"):
        ReverseProcess(ABAR, n_steps=5, method="unipc", eta=0.5)
    process = ReverseProcess(ABAR, n_steps=5, method="dpmpp2m")
    x = torch.zeros(1, 2, 4, 4)
    with pytest.raises(ValueError, match="state"):
        process.step(x, 0, x)
    state = process.new_state()
    process.step(x, 0, x, state=state)
    with pytest.raises(ValueError, match="out of order"):
        process.step(x, 2, x, state=state)
    assert ReverseProcess(ABAR, n_steps=5).new_state() is None
    with pytest.raises(ValueError, match="increase"):
        MultistepSolver(torch.tensor([0.5, 0.4]))
    with pytest.raises(ValueError, match="method"):
        MultistepSolver(torch.tensor([0.4, 0.5]), "heun")
