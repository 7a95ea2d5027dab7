"""Conjugate gradient: exact solutions of small SPD systems, batching, start vector, tolerance."""

from __future__ import annotations

import pytest
import torch

from mrf_monai.algorithms import conjugate_gradient


def _spd(batch: int, n: int, dtype: torch.dtype, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(batch, n, n, dtype=dtype, generator=g)
    return a.mH @ a + 0.5 * torch.eye(n, dtype=dtype)


@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128])
def test_cg_solves_spd_systems_like_linalg_solve(dtype):
    n = 12
    mats = _spd(3, n, dtype, seed=0)
    b = torch.randn(3, n, dtype=dtype, generator=torch.Generator().manual_seed(1))

    def operator(x: torch.Tensor) -> torch.Tensor:  # item k is multiplied by its own matrix
        return (mats @ x[..., None])[..., 0]

    x = conjugate_gradient(operator, b, n_iter=3 * n, batch_dims=1)
    torch.testing.assert_close(x, torch.linalg.solve(mats, b), rtol=1e-9, atol=1e-9)


def test_batched_items_are_solved_as_if_alone():
    """Per-item inner products: each item of a batch follows its own CG iterates."""
    n = 9
    mat = _spd(1, n, torch.float64, seed=2)[0]
    b = torch.randn(4, 3, n, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    b[1] *= 1e3  # very different scales must not interact
    x0 = torch.randn(4, 3, n, dtype=torch.float64, generator=torch.Generator().manual_seed(4))

    def operator(x: torch.Tensor) -> torch.Tensor:
        return x @ mat.T

    batched = conjugate_gradient(operator, b, x0=x0, n_iter=4, batch_dims=1)
    for k in range(4):
        alone = conjugate_gradient(operator, b[k], x0=x0[k], n_iter=4)
        torch.testing.assert_close(batched[k], alone, rtol=1e-12, atol=1e-12 * float(b[k].abs().max()))


def test_start_vector_and_zero_iterations():
    n = 6
    mat = _spd(1, n, torch.float64, seed=5)[0]
    b = torch.randn(n, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    x0 = torch.randn(n, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    assert torch.equal(conjugate_gradient(lambda v: mat @ v, b, x0=x0, n_iter=0), x0)
    exact = torch.linalg.solve(mat, b)
    # started at the solution, CG stays there (zero residual, zero steps, no NaN)
    torch.testing.assert_close(conjugate_gradient(lambda v: mat @ v, b, x0=exact, n_iter=5), exact)
    # one iteration from x0 is the exact line search along the residual
    r = b - mat @ x0
    alpha = (r @ r) / (r @ (mat @ r))
    torch.testing.assert_close(conjugate_gradient(lambda v: mat @ v, b, x0=x0, n_iter=1), x0 + alpha * r)


def test_tolerance_stops_early():
    n = 40
    mat = torch.diag(torch.linspace(1.0, 2.0, n, dtype=torch.float64))
    b = torch.ones(n, dtype=torch.float64)
    calls = []

    def operator(v: torch.Tensor) -> torch.Tensor:
        calls.append(1)
        return mat @ v

    x = conjugate_gradient(operator, b, n_iter=40, tolerance=1e-6)
    assert len(calls) < 20  # condition number 2: about 10 iterations reach 1e-6
    assert float((mat @ x - b).norm() / b.norm()) <= 1e-6


def test_bad_arguments_are_clear_errors():
    b = torch.ones(3, 4)
    with pytest.raises(ValueError, match="batch_dims"):
        conjugate_gradient(lambda v: v, b, batch_dims=2)
    with pytest.raises(ValueError, match="x0"):
        conjugate_gradient(lambda v: v, b, x0=torch.ones(4))
