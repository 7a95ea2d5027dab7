# Copyright (c) mrf_monai developers.
# Licensed under the Apache License, Version 2.0.
"""Reverse diffusion of MRF-IDDPM: DDIM, DDPM ancestral sampling and few-step ODE solvers.

All samplers run on a subsequence of the training timesteps ``0..T-1`` (``T = 1000``, linear
betas ``1e-4 .. 0.02`` by default, see :func:`mrf_monai.diffusion.model.build_scheduler`).
All schedule arithmetic is done in float64 and cast to the data type at each step.

Timestep spacing (:func:`sampling_timesteps`): ``spacing="linspace"`` (default) takes
``round(linspace(T - 1, 0, K))``, i.e. it starts at the last training step ``T - 1`` (pure noise
at training time) and ends at ``t = 0``, evenly spaced in between (the "evenly spaced including
both ends" respacing of improved DDPM). ``"leading"`` is MONAI/diffusers' ``DDIMScheduler``
spacing ``(K - 1 - i) * (T // K)``: it never visits ``t > T - T//K``, so the first step starts
from a slightly less noisy level than the network was trained on for pure noise. ``"logsnr"``
visits ``T - 1``, ``0`` and in between the timesteps nearest to evenly spaced half log-SNR
``lambda_t = log(sqrt(abar_t / (1 - abar_t)))`` (DPM-Solver's "logSNR" spacing): time-even
spacing leaves one step from ``lambda ~ 1.7`` to ``4.6`` at the end of a 20-step run (t = 53 -> 0),
where the fine structure of an image is decided; even steps in ``lambda`` are what the
multistep solvers' error estimates assume.

DDIM (Song et al. 2021), from timestep ``t`` to the previous visited timestep ``s``
(``abar_s = 1`` after the last step)::

    x0_hat = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t)
    sigma  = eta * sqrt((1 - abar_s) / (1 - abar_t)) * sqrt(1 - abar_t / abar_s)
    x_s    = sqrt(abar_s) x0_hat + sqrt(1 - abar_s - sigma^2) eps + sigma z

``eta = 0`` is deterministic given ``x_T``; ``eta = 1`` has the DDPM posterior variance.

DDPM ancestral sampling (Ho et al. 2020; improved DDPM, Nichol & Dhariwal 2021) uses the
respaced betas ``beta = 1 - abar_t / abar_s`` so that ``n_steps = T`` is the original chain::

    mean = sqrt(abar_s) beta / (1 - abar_t) x0_hat + sqrt(1 - beta) (1 - abar_s) / (1 - abar_t) x_t
    log var = (v + 1) / 2 log(beta) + (1 - v) / 2 log(beta_tilde)     (learned variance)
    log var = log(beta_tilde)                                             (otherwise, "fixed small")

with ``beta_tilde = beta (1 - abar_s) / (1 - abar_t)``; as in improved DDPM, ``beta_tilde`` of
the last step (which is 0) is replaced by that of the step before it inside the logarithm, and
no noise is added in the last step.

``"dpmpp2m"`` (DPM-Solver++(2M), Lu et al. 2022) and ``"unipc"`` (UniPC-2, Zhao et al. 2023)
integrate the same probability-flow ODE as DDIM with ``eta = 0`` to second (third) order from the
same one network call per step, reusing the clean-image estimates of earlier steps; they are
deterministic given ``x_T`` and ignore a learned variance (:mod:`mrf_monai.diffusion.solvers`).
Because they carry a history between steps, :meth:`ReverseProcess.step` takes a ``state``
(:meth:`ReverseProcess.new_state`) for them. Use them with ``spacing="logsnr"``: with
``"linspace"`` the last step is several times longer in ``lambda`` than the one before it and
the extrapolation across it fails (shipped model, 10 steps: T1/T2 MAPE 6.2 / 12.7 % against
2.9 / 8.3 %). For the K-sample mean that the pipeline matches, DDIM on ``"logsnr"`` spacing is
the better few-step sampler of this model (``docs/results.md``, "Sampling speed (issue 17)"):
the more exact ODE solutions are more diverse samples, whose mean over few samples is farther
from the truth.

The data are divided by a per-slice scale (see ``docs/interfaces.md``), not mapped to
``[-1, 1]``: clipping ``x0_hat`` is therefore off by default (``clip=None``); ``clip=c`` clamps
``x0_hat`` to ``[-c, c]`` and re-derives ``eps`` from the clamped value.

Random numbers: every draw goes through a ``noise_fn(shape) -> Tensor`` (default: standard
normal from the given ``torch.Generator``, drawn on the generator's device and moved to the
data's device, so a CPU generator gives the same samples on any accelerator).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import nn

from mrf_monai.diffusion.model import predict_eps_and_var
from mrf_monai.diffusion.solvers import SOLVER_METHODS, MultistepSolver, SolverState

__all__ = [
    "SAMPLING_METHODS",
    "SPACINGS",
    "ReverseProcess",
    "alphas_cumprod_from",
    "sampling_timesteps",
    "make_noise_fn",
    "sample",
]

#: supported reverse processes.
SAMPLING_METHODS = ("ddim", "ddpm", *SOLVER_METHODS)

NoiseFn = Callable[[Sequence[int]], torch.Tensor]
#: ``(x0_hat, step index) -> x0_hat``: a correction of the clean-image estimate at every step.
X0Transform = Callable[[torch.Tensor, int], torch.Tensor]


def alphas_cumprod_from(
    scheduler: nn.Module | None = None,
    num_train_timesteps: int = 1000,
    beta_start: float = 1e-4,
    beta_end: float = 0.02,
) -> torch.Tensor:
    """Cumulative products ``abar_t`` (float64, ``(T,)``) of the training noise schedule.

    Args:
        scheduler: a MONAI scheduler (``DDPMScheduler``/``DDIMScheduler``) whose ``betas`` define the
            schedule; when ``None`` the linear schedule ``linspace(beta_start, beta_end, T)``.
        num_train_timesteps: ``T`` when ``scheduler`` is ``None``.
        beta_start: first beta when ``scheduler`` is ``None``.
        beta_end: last beta when ``scheduler`` is ``None``.
    """
    if scheduler is not None:
        betas = torch.as_tensor(scheduler.betas).detach().to(device="cpu", dtype=torch.float64)
    else:
        betas = torch.linspace(beta_start, beta_end, int(num_train_timesteps), dtype=torch.float64)
    if betas.ndim != 1 or betas.numel() < 2 or bool(((betas <= 0) | (betas >= 1)).any()):
        raise ValueError("betas must be a 1-D schedule of at least 2 values in (0, 1).")
    return torch.cumprod(1.0 - betas, dim=0)


#: timestep spacings of :func:`sampling_timesteps`.
SPACINGS = ("linspace", "leading", "logsnr")


def sampling_timesteps(
    n_steps: int,
    num_train_timesteps: int = 1000,
    spacing: str = "linspace",
    alphas_cumprod: torch.Tensor | None = None,
) -> torch.Tensor:
    """The visited training timesteps, in decreasing order (``(K,)`` long, unique).

    Args:
        n_steps: number of reverse steps ``K`` (``1 <= K <= T``).
        num_train_timesteps: ``T``.
        spacing: ``"linspace"`` (``round(linspace(T - 1, 0, K))``, starts at ``T - 1``),
            ``"leading"`` (MONAI ``DDIMScheduler``: ``(K - 1 - i) * (T // K)``) or ``"logsnr"``
            (nearest to evenly spaced half log-SNR from ``T - 1`` to ``0``; see the module notes).
        alphas_cumprod: ``abar_t`` ``(T,)`` of the training schedule, used by ``"logsnr"``
            (``None``: the default linear schedule :func:`alphas_cumprod_from`).
    """
    n_steps, total = int(n_steps), int(num_train_timesteps)
    if not 1 <= n_steps <= total:
        raise ValueError(f"n_steps must be in [1, {total}], got {n_steps}.")
    if spacing not in SPACINGS:
        raise ValueError(f"spacing must be one of {SPACINGS}, got {spacing!r}.")
    if n_steps == 1 and spacing != "leading":
        return torch.tensor([total - 1], dtype=torch.long)
    if spacing == "linspace":
        ts = torch.round(torch.linspace(total - 1, 0, n_steps, dtype=torch.float64)).long()
    elif spacing == "leading":
        ts = torch.arange(n_steps - 1, -1, -1, dtype=torch.long) * (total // n_steps)
    else:
        ts = _logsnr_timesteps(n_steps, total, alphas_cumprod)
    return ts


def _logsnr_timesteps(n_steps: int, total: int, alphas_cumprod: torch.Tensor | None) -> torch.Tensor:
    abar = alphas_cumprod_from(num_train_timesteps=total) if alphas_cumprod is None else alphas_cumprod
    abar = torch.as_tensor(abar, dtype=torch.float64).cpu()
    if abar.shape != (total,):
        raise ValueError(f"alphas_cumprod must have shape ({total},), got {tuple(abar.shape)}.")
    lam = 0.5 * torch.log(abar / (1.0 - abar))  # decreasing in t
    targets = torch.linspace(float(lam[-1]), float(lam[0]), n_steps, dtype=torch.float64)
    ts = (lam[None, :] - targets[:, None]).abs().argmin(dim=1).tolist()
    ts[0], ts[-1] = total - 1, 0
    # where the grid is finer than the timesteps (near t = 0), keep them unique and decreasing
    for k in range(n_steps - 2, -1, -1):
        ts[k] = max(ts[k], ts[k + 1] + 1)
    ts[0] = total - 1
    for k in range(1, n_steps):
        ts[k] = min(ts[k], ts[k - 1] - 1)
    return torch.tensor(ts, dtype=torch.long)


def make_noise_fn(generator: torch.Generator | None, device: torch.device, dtype: torch.dtype) -> NoiseFn:
    """A ``noise_fn(shape)`` drawing standard normal noise from ``generator`` on its own device
    (the default CPU generator when ``None``) and moving it to ``device``/``dtype``."""
    gen_device = generator.device if generator is not None else torch.device("cpu")

    def noise_fn(shape: Sequence[int]) -> torch.Tensor:
        z = torch.randn(tuple(shape), generator=generator, device=gen_device, dtype=torch.float32)
        return z.to(device=device, dtype=dtype)

    return noise_fn


class ReverseProcess:
    """One reverse process (DDIM, DDPM or a multistep ODE solver) on a subsequence of the training timesteps.

    The object holds the per-step coefficients; :meth:`step` applies one step given the network
    output, and :meth:`run` loops over all steps with a model. Splitting the two lets a caller
    blend network outputs of overlapping windows before each step
    (:class:`mrf_monai.diffusion.inferer.SlidingWindowDiffusionSampler` with
    ``blend_every_step=True``).

    Args:
        alphas_cumprod: ``abar_t`` of the training schedule, ``(T,)``.
        n_steps: number of reverse steps ``K``.
        method: ``"ddim"``, ``"ddpm"``, ``"dpmpp2m"`` or ``"unipc"`` (see the module notes).
        eta: DDIM stochasticity (0 = deterministic); ignored by DDPM; the ODE solvers need 0.
        clip: clamp ``x0_hat`` to ``[-clip, clip]`` at each step; ``None`` = no clipping.
        spacing: timestep spacing, see :func:`sampling_timesteps`.
        start_timestep: the first visited timestep (``None``: ``T - 1``, pure noise). A warm
            start (SDEdit / "come closer, diffuse faster") begins at an intermediate ``t0`` from
            ``x_t0 = sqrt(abar_t0) x_init + sqrt(1 - abar_t0) z`` (:meth:`warm_start`); the
            ``n_steps`` are then spread over ``t0 .. 0`` with the same ``spacing``.
    """

    def __init__(
        self,
        alphas_cumprod: torch.Tensor,
        n_steps: int = 50,
        method: str = "ddim",
        eta: float = 0.0,
        clip: float | None = None,
        spacing: str = "linspace",
        start_timestep: int | None = None,
    ) -> None:
        method = method.lower()
        if method not in SAMPLING_METHODS:
            raise ValueError(f"method must be one of {SAMPLING_METHODS}, got {method!r}.")
        if eta < 0:
            raise ValueError(f"eta must be >= 0, got {eta}.")
        if method in SOLVER_METHODS and eta != 0:
            raise ValueError(f"method {method!r} is a deterministic ODE solver: eta must be 0, got {eta}.")
        if clip is not None and clip <= 0:
            raise ValueError(f"clip must be positive or None, got {clip}.")
        abar = torch.as_tensor(alphas_cumprod, dtype=torch.float64).cpu()
        self.alphas_cumprod = abar  # the full training schedule (converts v-prediction outputs)
        self.method = method
        self.eta = float(eta)
        self.clip = None if clip is None else float(clip)
        total = abar.numel()
        start = total - 1 if start_timestep is None else int(start_timestep)
        if not 0 <= start <= total - 1:
            raise ValueError(f"start_timestep must be in [0, {total - 1}], got {start_timestep}.")
        if n_steps > start + 1:
            raise ValueError(
                f"{n_steps} steps do not fit between timestep {start} and 0: use at most {start + 1}."
            )
        self.start_timestep = start
        self.timesteps = sampling_timesteps(n_steps, start + 1, spacing, abar[: start + 1])
        a_t = abar[self.timesteps]
        a_s = torch.cat([abar[self.timesteps[1:]], torch.ones(1, dtype=torch.float64)])
        beta = 1.0 - a_t / a_s
        beta_tilde = beta * (1.0 - a_s) / (1.0 - a_t)
        # improved DDPM: log(beta_tilde) of the last step (0) is replaced by the one before it
        bt_log = beta_tilde.clone()
        if bt_log.numel() > 1:
            bt_log[-1] = bt_log[-2]
        else:
            bt_log[-1] = beta[-1]
        self._a_t, self._a_s = a_t, a_s
        self._log_beta = torch.log(beta)
        self._log_beta_tilde = torch.log(bt_log)
        self._coef_x0 = torch.sqrt(a_s) * beta / (1.0 - a_t)
        self._coef_xt = torch.sqrt(1.0 - beta) * (1.0 - a_s) / (1.0 - a_t)
        self._ddim_sigma = self.eta * torch.sqrt((1.0 - a_s) / (1.0 - a_t) * beta)
        self._solver = MultistepSolver(a_t, method) if method in SOLVER_METHODS else None

    def __len__(self) -> int:
        return int(self.timesteps.numel())

    def warm_start(self, x_init: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """The first state ``x_t0 = sqrt(abar_t0) x_init + sqrt(1 - abar_t0) noise`` of a run that
        starts from an estimate ``x_init`` of the clean image at ``t0 = start_timestep`` (the
        forward process of training applied to ``x_init``)."""
        a0 = float(self.alphas_cumprod[self.start_timestep])
        return math.sqrt(a0) * x_init.to(noise.dtype) + math.sqrt(1.0 - a0) * noise

    def needs_noise(self, i: int) -> bool:
        """Whether step ``i`` draws random numbers (never the last step, never DDIM with eta 0
        or the ODE solvers)."""
        if i == len(self) - 1 or self._solver is not None:
            return False
        return self.method == "ddpm" or self.eta > 0

    def new_state(self) -> SolverState | None:
        """The history a multistep solver carries between :meth:`step` calls of one run
        (``None`` for DDIM and DDPM, which need none); start every run with a new one."""
        return None if self._solver is None else self._solver.new_state()

    def predict_x0(
        self,
        x_t: torch.Tensor,
        i: int,
        eps: torch.Tensor,
        x0_transform: X0Transform | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x0_hat, eps)`` at step ``i``.

        With ``clip`` the clamped ``x0_hat``; with ``x0_transform`` (e.g. k-space data
        consistency, see :class:`mrf_monai.diffusion.consistency.KSpaceDataConsistency`) the
        transformed one; ``eps`` is then recomputed so that the step stays on the DDIM path.
        """
        a_t = float(self._a_t[i])
        x0 = (x_t - math.sqrt(1.0 - a_t) * eps) / math.sqrt(a_t)
        changed = False
        if self.clip is not None:
            x0 = x0.clamp(-self.clip, self.clip)
            changed = True
        if x0_transform is not None:
            x0 = x0_transform(x0, i)
            changed = True
        if changed:
            eps = (x_t - math.sqrt(a_t) * x0) / math.sqrt(1.0 - a_t)
        return x0, eps

    def step(
        self,
        x_t: torch.Tensor,
        i: int,
        eps: torch.Tensor,
        v: torch.Tensor | None = None,
        noise: torch.Tensor | None = None,
        x0_transform: X0Transform | None = None,
        state: SolverState | None = None,
    ) -> torch.Tensor:
        """Apply reverse step ``i`` (from ``timesteps[i]`` to the next visited timestep).

        Args:
            x_t: current sample.
            i: step index ``0..K-1``.
            eps: predicted noise, same shape as ``x_t``.
            v: learned-variance interpolation (DDPM only; ``None`` = fixed small variance).
            noise: standard normal noise like ``x_t``; required when :meth:`needs_noise`.
            x0_transform: applied to ``x0_hat`` before the step (see :meth:`predict_x0`); a
                multistep solver keeps the transformed estimate in its history.
            state: the run's history (:meth:`new_state`), required by the multistep solvers.
        """
        x0, eps = self.predict_x0(x_t, i, eps, x0_transform)
        if self._solver is not None:
            if state is None:
                raise ValueError(f"method {self.method!r} is multistep: pass state=process.new_state().")
            return self._solver.step(x_t, i, x0, state)
        a_s = float(self._a_s[i])
        if self.method == "ddim":
            sigma = float(self._ddim_sigma[i])
            x_prev = math.sqrt(a_s) * x0 + math.sqrt(max(1.0 - a_s - sigma**2, 0.0)) * eps
            if self.needs_noise(i):
                x_prev = x_prev + sigma * _require(noise, x_t)
            return x_prev
        mean = float(self._coef_x0[i]) * x0 + float(self._coef_xt[i]) * x_t
        if not self.needs_noise(i):
            return mean
        if v is None:
            std: torch.Tensor | float = math.exp(0.5 * float(self._log_beta_tilde[i]))
        else:
            frac = (v + 1.0) / 2.0
            log_var = frac * float(self._log_beta[i]) + (1.0 - frac) * float(self._log_beta_tilde[i])
            std = torch.exp(0.5 * log_var)
        return mean + std * _require(noise, x_t)

    def run(
        self,
        model: nn.Module,
        cond: torch.Tensor,
        x_T: torch.Tensor,
        noise_fn: NoiseFn | None = None,
        progress: bool = False,
        x0_transform: X0Transform | None = None,
    ) -> torch.Tensor:
        """Run all steps from ``x_T`` with the conditional network (via ``predict_eps_and_var``).

        Args:
            model: conditional noise-prediction network.
            cond: condition ``(B, 2R, H, W)``.
            x_T: initial noise ``(B, 2R, H, W)``.
            noise_fn: draws the per-step noise; required for stochastic processes.
            progress: show a ``tqdm`` bar over the steps.
            x0_transform: applied to ``x0_hat`` at every step (see :meth:`predict_x0`).
        """
        x = x_T
        steps = range(len(self))
        if progress:
            from tqdm.auto import tqdm

            steps = tqdm(steps, desc=f"{self.method} steps", leave=False)
        state = self.new_state()
        for i in steps:
            t = int(self.timesteps[i])
            eps, v = predict_eps_and_var(model, x, t, cond, self.alphas_cumprod)
            eps = eps.to(x.dtype)
            v = None if v is None else v.to(x.dtype)
            noise = None
            if self.needs_noise(i):
                if noise_fn is None:
                    raise ValueError("a stochastic reverse process needs a noise_fn.")
                noise = noise_fn(x.shape)
            x = self.step(x, i, eps, v, noise, x0_transform, state)
        return x


def _require(noise: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    if noise is None:
        raise ValueError("this reverse step is stochastic: pass noise.")
    if noise.shape != like.shape:
        raise ValueError(f"noise shape {tuple(noise.shape)} != sample shape {tuple(like.shape)}.")
    return noise.to(device=like.device, dtype=like.dtype)


@torch.no_grad()
def sample(
    model: nn.Module,
    cond: torch.Tensor,
    n_steps: int = 50,
    method: str = "ddim",
    eta: float = 0.0,
    generator: torch.Generator | None = None,
    clip: float | None = None,
    scheduler: nn.Module | None = None,
    spacing: str = "linspace",
    x_T: torch.Tensor | None = None,
    noise_fn: NoiseFn | None = None,
    progress: bool = False,
    x0_transform: X0Transform | None = None,
) -> torch.Tensor:
    """Draw one restored compressed TSMI per condition with DDIM, DDPM or an ODE solver.

    Args:
        model: conditional network (``predict_eps_and_var`` convention: input
            ``cat([x_t, cond])``, output ``eps`` or ``[eps, v]``), on the device of ``cond``.
        cond: normalised condition ``(B, 2R, H, W)`` (``H, W`` acceptable to the network).
        n_steps: reverse steps ``K`` (DDPM with ``K = T`` is the original ancestral chain).
        method: ``"ddim"``, ``"ddpm"``, ``"dpmpp2m"`` or ``"unipc"``.
        eta: DDIM stochasticity.
        generator: source of ``x_T`` and of the step noise (a CPU generator makes results
            independent of the device); ignored where ``x_T``/``noise_fn`` are given.
        clip: clamp ``x0_hat`` to ``[-clip, clip]``; ``None`` (default) = no clipping.
        scheduler: MONAI scheduler holding the training ``betas``; ``None`` = linear
            ``1e-4 .. 0.02`` over 1000 steps.
        spacing: timestep spacing (:func:`sampling_timesteps`).
        x_T: initial noise; drawn from ``generator`` when ``None``.
        noise_fn: draws step noise; defaults to ``generator``.
        progress: ``tqdm`` bar over the steps.
        x0_transform: correction of ``x0_hat`` at every step (see :meth:`ReverseProcess.predict_x0`).

    Returns:
        the samples ``(B, 2R, H, W)`` (same dtype and device as ``cond``).
    """
    if cond.ndim != 4:
        raise ValueError(f"cond must be (B, 2R, H, W), got shape {tuple(cond.shape)}.")
    process = ReverseProcess(alphas_cumprod_from(scheduler), n_steps, method, eta, clip, spacing)
    default_noise = make_noise_fn(generator, cond.device, cond.dtype)
    if x_T is None:
        x_T = default_noise(cond.shape)
    elif x_T.shape != cond.shape:
        raise ValueError(f"x_T shape {tuple(x_T.shape)} != cond shape {tuple(cond.shape)}.")
    x_T = x_T.to(device=cond.device, dtype=cond.dtype)
    noise_fn = noise_fn or default_noise
    return process.run(model, cond, x_T, noise_fn, progress=progress, x0_transform=x0_transform)
