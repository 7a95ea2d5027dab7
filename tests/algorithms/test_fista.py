"""FISTA on small lasso problems: closed-form and KKT oracles; the quadratic objective."""

from __future__ import annotations

import torch

from mrf_monai.algorithms import fista, quadratic_objective


def soft(v: torch.Tensor, t: float) -> torch.Tensor:
    return torch.sign(v) * (v.abs() - t).clamp(min=0)


def test_fista_lasso_with_diagonal_normal_matches_closed_form():
    d = torch.tensor([1.0, 2.0, 0.5, 4.0, 1.5], dtype=torch.float64)
    b = torch.tensor([0.3, -2.0, 1.0, 0.1, -0.9], dtype=torch.float64)
    lam = 0.25
    # argmin 1/2 d x^2 - b x + lam |x|  =  soft(b, lam) / d
    res = fista(
        lambda v: d * v, b, lambda v, t: soft(v, lam * t), torch.zeros(5, dtype=torch.float64), 0.25, 500
    )
    torch.testing.assert_close(res.x, soft(b, lam) / d, rtol=1e-10, atol=1e-10)


def test_fista_lasso_satisfies_kkt_conditions():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(30, 12, dtype=torch.float64, generator=g)
    y = torch.randn(30, dtype=torch.float64, generator=g)
    normal_mat, b = a.T @ a, a.T @ y
    lam = 2.0
    step = 1.0 / float(torch.linalg.eigvalsh(normal_mat).max())
    res = fista(
        lambda v: normal_mat @ v,
        b,
        lambda v, t: soft(v, lam * t),
        torch.zeros(12, dtype=torch.float64),
        step,
        n_iter=3000,
        regulariser=lambda v: lam * v.abs().sum(),
        track_objective=True,
    )
    x, grad = res.x, normal_mat @ res.x - b
    active = x.abs() > 1e-8
    assert 0 < int(active.sum()) < 12  # a genuinely sparse solution
    # 0 in grad + lam d|x|: grad = -lam sign(x) on the support, |grad| <= lam off it
    torch.testing.assert_close(grad[active], -lam * torch.sign(x[active]), rtol=0, atol=1e-8)
    assert float(grad[~active].abs().max()) <= lam + 1e-8
    # the objective that FISTA tracks is 1/2 ||A x - y||^2 + lam ||x||_1 up to 1/2 ||y||^2
    full = 0.5 * float((a @ x - y).pow(2).sum()) + lam * float(x.abs().sum())
    assert abs(res.objective[-1] + 0.5 * float(y @ y) - full) < 1e-8 * full


def test_quadratic_objective_of_complex_least_squares():
    g = torch.Generator().manual_seed(1)
    a = torch.randn(9, 4, dtype=torch.complex128, generator=g)
    y = torch.randn(9, dtype=torch.complex128, generator=g)
    x = torch.randn(4, dtype=torch.complex128, generator=g)
    value = quadratic_objective(lambda v: a.mH @ (a @ v), a.mH @ y, x)
    expected = 0.5 * (a @ x - y).abs().pow(2).sum() - 0.5 * y.abs().pow(2).sum()
    torch.testing.assert_close(value, expected)
