"""Power iteration on operators with a known spectrum."""

from __future__ import annotations

import torch

from mrf_monai.algorithms import power_iteration


def test_power_iteration_on_a_known_real_spectrum():
    eigenvalues = torch.cat([torch.tensor([3.0]), torch.linspace(0.0, 1.5, 30)]).double()
    q, _ = torch.linalg.qr(
        torch.randn(31, 31, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    )
    mat = q @ torch.diag(eigenvalues) @ q.T
    eig = power_iteration(lambda v: mat @ v, torch.zeros(31, dtype=torch.float64), n_iter=60)
    # gap ratio 1.5 / 3: the Rayleigh quotient error falls like 0.25 ** n_iter
    assert abs(eig - 3.0) < 1e-10


def test_power_iteration_on_a_complex_hermitian_operator_and_reproducibility():
    g = torch.Generator().manual_seed(1)
    a = torch.randn(20, 20, dtype=torch.complex128, generator=g)
    mat = a.mH @ a
    top = float(torch.linalg.eigvalsh(mat).max())
    x0 = torch.zeros(4, 5, dtype=torch.complex128)  # the operator acts on (4, 5) tensors

    def normal(v: torch.Tensor) -> torch.Tensor:
        return (mat @ v.reshape(-1)).reshape(4, 5)

    eig = power_iteration(normal, x0, n_iter=500, generator=torch.Generator().manual_seed(2))
    assert abs(eig - top) < 1e-6 * top
    # monotone lower bound, and the same seed gives the same estimate
    few = power_iteration(normal, x0, n_iter=5, generator=torch.Generator().manual_seed(2))
    assert few <= eig + 1e-9
    assert few == power_iteration(normal, x0, n_iter=5, generator=torch.Generator().manual_seed(2))


def test_power_iteration_of_the_zero_operator_is_zero():
    assert power_iteration(lambda v: 0 * v, torch.zeros(5), n_iter=3) == 0.0
