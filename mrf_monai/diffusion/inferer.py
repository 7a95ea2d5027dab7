# Copyright (c) mrf_monai developers.
# Licensed under the Apache License, Version 2.0.
"""Sampling whole slices with a network trained on 64 x 64 patches.

MRF-IDDPM is trained on random 64 x 64 patches of the (normalised) condition and reference.
:class:`SlidingWindowDiffusionSampler` restores a whole slice in one of two ways:

``mode="patch"`` (default, as in the paper): the slice is tiled by MONAI's
:func:`~monai.inferers.sliding_window_inference` and the *whole* reverse process (K DDIM steps)
runs on each batch of windows (the predictor of the sliding-window inferer is a complete
sampler of the condition patch); the finished patches are then blended with a Gaussian
importance map (``sigma_scale * roi``). The initial noise ``x_T`` is drawn once per sample for
the whole slice and cropped per window, so overlapping windows start from the same noise and,
with deterministic DDIM, reach nearly the same result in their overlap; step noise (DDPM, DDIM
with ``eta > 0``) comes from one generator per (sample, window) seeded from ``seed`` and the
window position, so a result does not depend on ``sw_batch_size`` or the order of windows.

Default overlap 0.5, i.e. a stride of 32 pixels for 64-pixel windows (7 x 7 = 49 windows for a
230 x 230 slice): every pixel away from the slice border is covered by 4 windows, so the
Gaussian weights (which fall to ~3e-4 at a window's edge) always have a window whose centre
region covers it, and the seams of independently sampled patches are averaged out. Overlap
0.25 (stride 48, 25 windows) halves the cost with visible seams more likely on an untrained
region; it is the "fast" setting.

The alternative, ``blend_every_step=True`` (MultiDiffusion-style, Bar-Tal et al. 2023), blends
the network outputs (``eps`` and ``v``) of all windows at *every* step and takes the step on
the whole slice, so windows cannot drift apart and there are no seams by construction. It
needs the whole slice's state at each step (all windows of a step before the next), which is
the same arithmetic but many more ``sliding_window_inference`` calls; averaging ``eps`` of
windows that each saw only part of the context is also not what the network was trained for.
Independent per-window sampling with a final blend is what the paper describes and is the
default; the per-step blend is kept as an option for comparison.

``mode="whole"`` runs the network on the whole slice at once (zero-padded to a multiple of
``pad_multiple``, then cropped): the convolutional U-Net generalises to the larger field of
view and it is the fastest option (3.5x fewer pixels than 49 overlapping windows), but
attention and group normalisation see different statistics than in training.

Data consistency is a plug-in (``data_consistency``, e.g.
:class:`mrf_monai.diffusion.consistency.KSpaceDataConsistency`): a correction of the clean-image
estimate ``x0_hat`` of the *whole slice* at every step. It needs the whole slice's state at each
step, so it runs with ``mode="whole"`` and with the per-step blend of the patch mode
(``blend_every_step=True``, which the inferer switches on when a data-consistency step is given);
independently sampled patches never see the measured k-space.

The Bloch (dictionary) projection is a second such plug-in (``projection``, e.g.
:class:`mrf_monai.matching.projection.DictionaryProjectionFactory`; MRF-DiPh): each ``x0_hat``
is replaced by (or blended with) its voxels' best dictionary atoms scaled by their proton
density. With both, the data-consistency step comes first and the projection last, so the
estimate each step continues from lies on the dictionary's manifold. The projection is given
by a factory so that this module does not depend on the matching layer.

Samples: sample ``k`` of a call with ``seed`` uses the seed sequence ``(seed, k)`` (numpy
``SeedSequence``) for its noise, on CPU generators, so results are reproducible across devices
and the first ``K'`` of ``K`` samples equal the samples of a call with ``n_samples=K'``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import nullcontext
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from monai.inferers import Inferer, sliding_window_inference
from torch import nn

from mrf_monai.diffusion.model import predict_eps_and_var
from mrf_monai.diffusion.sampling import ReverseProcess, X0Transform, alphas_cumprod_from

__all__ = [
    "DiffusionSamplingInferer",
    "DataConsistencyFactory",
    "ProjectionFactory",
    "WarmStartFactory",
    "derive_seed",
]

#: ``factory(problem, scale, channel_scale) -> X0Transform``: builds a slice's data-consistency
#: step from its acquisition problem (a ``SliceProblem``), its normalisation scale and the
#: network's per-channel scale (see :mod:`mrf_monai.diffusion.consistency`).
DataConsistencyFactory = Callable[[Any, torch.Tensor, torch.Tensor | None], X0Transform]

#: ``factory(dictionary, clusters=, rotation=, channel_scale=, b1_map=, n_steps=) -> X0Transform | None``:
#: builds a slice's Bloch projection from its dictionary, atom clusters, network-to-dictionary
#: basis rotation and B1 map, the network's per-channel scale and the number of reverse steps
#: (see :mod:`mrf_monai.matching.projection`); ``None``: no projection for this slice.
ProjectionFactory = Callable[..., X0Transform | None]

#: ``factory(problem, scale, channel_scale) -> (1, 2R, Nx, Ny)``: a classical reconstruction of the
#: slice in the network's space (normalised, channel-scaled), the clean-image estimate a warm
#: start begins from (see :class:`mrf_monai.diffusion.warm_start.LRTVWarmStart`).
WarmStartFactory = Callable[[Any, torch.Tensor, torch.Tensor | None], torch.Tensor]


def derive_seed(*entropy: int) -> int:
    """A 63-bit seed derived from a tuple of non-negative integers (numpy ``SeedSequence``)."""
    state = np.random.SeedSequence([int(e) for e in entropy]).generate_state(2, dtype=np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


def _cpu_randn(shape: Sequence[int], seed: int) -> torch.Tensor:
    return torch.randn(tuple(shape), generator=torch.Generator().manual_seed(seed), dtype=torch.float32)


class DiffusionSamplingInferer(Inferer):
    """MONAI inferer that draws restored compressed TSMIs of one slice with a conditional diffusion model.

    ``inferer(inputs, network, slice_index=0, problem=None, scale=None)`` returns ``n_samples``
    samples ``(K, 2R, Nx, Ny)`` of the normalised condition ``inputs`` ``(2R, Nx, Ny)`` (or
    ``(1, 2R, Nx, Ny)``), patch-wise (sliding window) or on the whole slice (see the module notes).

    Args:
        n_samples: samples ``K`` per slice (the paper: 10).
        n_steps: reverse steps per sample (the paper: 50 DDIM steps).
        method: ``"ddim"`` or ``"ddpm"``.
        eta: DDIM stochasticity (0 = deterministic given ``x_T``).
        clip: clamp ``x0_hat`` to ``[-clip, clip]``; ``None`` = off (data are not in [-1, 1]).
        mode: ``"patch"`` (sliding window, the paper's sampler) or ``"whole"`` (whole slice, padded).
        roi_size: window size (the training patch size).
        overlap: fraction of overlap between neighbouring windows (0.5 = stride 32 for 64).
        sw_batch_size: windows per network call (all windows of all samples in a chunk are
            batched together).
        blend: ``"gaussian"`` or ``"constant"`` window weights (MONAI ``BlendMode``).
        sigma_scale: Gaussian window sigma as a fraction of ``roi_size``.
        pad_multiple: in whole-slice mode, pad each side to a multiple of this (the U-Net's
            total down-sampling, 2^(levels - 1); 16 is safe for up to 5 levels).
        blend_every_step: in patch mode, blend network outputs at every step instead of
            blending finished patches (see the module notes); forced on when a
            ``data_consistency`` step is used in patch mode.
        sample_batch_size: samples processed together (their windows share network calls);
            ``None`` = all samples at once.
        scheduler: MONAI scheduler with the training ``betas``; ``None`` = linear 1e-4..0.02, T=1000.
        spacing: timestep spacing (:func:`mrf_monai.diffusion.sampling.sampling_timesteps`).
        seed: base seed; slice ``s`` draws with the seed ``(seed, s)`` and its sample ``k`` with
            ``(seed, s, k)``, so results do not depend on the order of slices or batching.
        data_consistency: a :data:`DataConsistencyFactory` (e.g. ``KSpaceDataConsistency`` with
            its options bound) applied to ``x0_hat`` at every step when the call gets the slice's
            ``problem``; ``None`` = the paper's unconstrained sampling.
        channel_scale: the network's per-channel factors ``(2R,)`` (passed to ``data_consistency``
            and ``projection``, which work on complex images), ``None`` = 1.
        amp: run the network in autocast (float16 on CUDA, bfloat16 on CPU).
        progress: ``tqdm`` bars over samples (and over steps in whole-slice / per-step-blend mode).
        projection: a :data:`ProjectionFactory` (e.g. ``DictionaryProjectionFactory``): the
            Bloch projection of ``x0_hat`` onto the slice's dictionary at every step (after the
            data consistency); the call must then get the slice's ``dictionary``. ``None`` = off.
        warm_start: a :data:`WarmStartFactory` (e.g. :class:`~mrf_monai.diffusion.warm_start.LRTVWarmStart`):
            each sample starts at the training timestep ``start_timestep`` from the slice's
            classical reconstruction plus that timestep's noise, instead of at ``T - 1`` from
            pure noise, and spends its ``n_steps`` between there and 0 (SDEdit; Chung et al.,
            "Come-Closer-Diffuse-Faster", CVPR 2022). Needs the call's ``problem`` and ``scale``;
            whole-slice mode or the per-step blend. ``None`` = off (the paper's sampler).
        start_timestep: the warm start's first timestep ``t0`` (``0 < t0 < T``; smaller keeps more
            of the classical reconstruction). Only with ``warm_start``.
    """

    def __init__(
        self,
        n_samples: int = 10,
        n_steps: int = 50,
        method: str = "ddim",
        eta: float = 0.0,
        clip: float | None = None,
        mode: str = "patch",
        roi_size: Sequence[int] | int = (64, 64),
        overlap: float = 0.5,
        sw_batch_size: int = 16,
        blend: str = "gaussian",
        sigma_scale: float = 0.125,
        pad_multiple: int = 16,
        blend_every_step: bool = False,
        sample_batch_size: int | None = None,
        scheduler: nn.Module | None = None,
        spacing: str = "linspace",
        seed: int = 0,
        data_consistency: DataConsistencyFactory | None = None,
        channel_scale: Sequence[float] | torch.Tensor | None = None,
        amp: bool = False,
        progress: bool = False,
        projection: ProjectionFactory | None = None,
        warm_start: WarmStartFactory | None = None,
        start_timestep: int | None = None,
    ) -> None:
        super().__init__()
        for name, flag in (("blend_every_step", blend_every_step), ("amp", amp), ("progress", progress)):
            if not isinstance(flag, bool):
                raise ValueError(f"{name} must be true or false, got {flag!r}")
        for name, count in (("n_samples", n_samples), ("n_steps", n_steps), ("sw_batch_size", sw_batch_size)):
            if not isinstance(count, int) or isinstance(count, bool):
                raise ValueError(f"{name} must be a whole number, got {count!r}")
        if mode not in ("patch", "whole"):
            raise ValueError(f"mode must be 'patch' or 'whole', got {mode!r}.")
        if not 0.0 <= overlap < 1.0:
            raise ValueError(f"overlap must be in [0, 1), got {overlap}.")
        if sw_batch_size < 1 or pad_multiple < 1:
            raise ValueError("sw_batch_size and pad_multiple must be positive.")
        if sample_batch_size is not None and sample_batch_size < 1:
            raise ValueError("sample_batch_size must be positive or None.")
        if n_samples < 1:
            raise ValueError(f"n_samples must be >= 1, got {n_samples}.")
        if warm_start is None and start_timestep is not None:
            raise ValueError("start_timestep is the first timestep of a warm start: give warm_start too.")
        if warm_start is not None and mode == "patch" and not blend_every_step:
            raise ValueError(
                "a warm start needs the whole slice's state: use mode='whole' or blend_every_step=True."
            )
        if warm_start is not None and start_timestep is None:
            raise ValueError("a warm start needs its first timestep (start_timestep, e.g. 400).")
        self.n_samples = int(n_samples)
        self.roi_size = (int(roi_size),) * 2 if isinstance(roi_size, int) else tuple(int(r) for r in roi_size)
        self.overlap = float(overlap)
        self.sw_batch_size = int(sw_batch_size)
        self.blend = blend
        self.sigma_scale = float(sigma_scale)
        self.mode = mode
        self.pad_multiple = int(pad_multiple)
        plug_in = data_consistency is not None or projection is not None
        self.blend_every_step = bool(blend_every_step) or (plug_in and mode == "patch")
        self.sample_batch_size = sample_batch_size
        self.seed = int(seed)
        self.data_consistency = data_consistency
        self.projection = projection
        self.channel_scale = None if channel_scale is None else torch.as_tensor(channel_scale).float()
        self.amp = bool(amp)
        self.progress = bool(progress)
        self.warm_start = warm_start
        self.process = ReverseProcess(
            alphas_cumprod_from(scheduler), n_steps, method, eta, clip, spacing, start_timestep
        )

    def __repr__(self) -> str:
        dc = "off" if self.data_consistency is None else getattr(self.data_consistency, "__name__", "on")
        projection = "off" if self.projection is None else "on"
        warm = "off" if self.warm_start is None else f"t0={self.process.start_timestep}"
        return (
            f"{type(self).__name__}(n_samples={self.n_samples}, n_steps={self.n_steps}, "
            f"method={self.process.method!r}, mode={self.mode!r}, roi_size={self.roi_size}, "
            f"overlap={self.overlap}, blend_every_step={self.blend_every_step}, data_consistency={dc}, "
            f"projection={projection}, warm_start={warm})"
        )

    def __call__(  # type: ignore[override]
        self,
        inputs: torch.Tensor,
        network: nn.Module,
        slice_index: int = 0,
        problem: Any = None,
        scale: torch.Tensor | float | None = None,
        dictionary: Any = None,
        clusters: Any = None,
        rotation: torch.Tensor | None = None,
        b1_map: Any = None,
    ) -> torch.Tensor:
        """Samples ``(K, 2R, Nx, Ny)`` float32 (on the network's device) of one slice.

        Args:
            inputs: the normalised condition ``(2R, Nx, Ny)`` or ``(1, 2R, Nx, Ny)``.
            network: the conditional network (``predict_eps_and_var`` convention), in eval mode.
            slice_index: the slice's index (its seed is ``(seed, slice_index)``).
            problem: the slice's acquisition problem (``SliceProblem``); with
                ``data_consistency`` every ``x0_hat`` is pulled towards the measured k-space.
            scale: the slice's normalisation scale (``inputs = condition / scale``); required
                with ``problem``.
            dictionary: the slice's ``MRFDictionary`` (required with ``projection``).
            clusters: its atom clusters for the exact clustered search (``None``: brute force).
            rotation: ``Q`` from network to dictionary coefficients (``None``: same basis).
            b1_map: the slice's relative B1 map (restricts each voxel's atoms), or ``None``.
        """
        transform = None
        if self.data_consistency is not None and problem is not None:
            if scale is None:
                raise ValueError("data consistency needs the slice's normalisation scale (scale=...).")
            transform = self.data_consistency(problem, torch.as_tensor(scale), self.channel_scale)
        if self.projection is not None:
            if dictionary is None:
                raise ValueError(
                    "the Bloch projection needs the slice's dictionary (dictionary=...; the bundle passes "
                    "data['dictionary'] through the runner's inferer_kwargs)."
                )
            project = self.projection(
                dictionary,
                clusters=clusters,
                rotation=rotation,
                channel_scale=self.channel_scale,
                b1_map=b1_map,
                n_steps=self.n_steps,
            )
            if project is not None:  # None: nothing to do for this slice (e.g. weight 0)
                transform = project if transform is None else _compose(transform, project)
        x_init = None
        if self.warm_start is not None:
            if problem is None or scale is None:
                raise ValueError(
                    "a warm start needs the slice's problem and scale (GridSubspaced with problem_key)."
                )
            x_init = self.warm_start(problem, torch.as_tensor(scale), self.channel_scale)
        seed = derive_seed(self.seed, int(slice_index))
        device = _model_device(network)
        if self.amp:
            dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
            context = torch.autocast(device.type, dtype=dtype)
        else:
            context = nullcontext()
        with context:
            out = self.sample_slice(network, inputs, self.n_samples, seed, transform, x_init)
        return out.float()

    @property
    def n_steps(self) -> int:
        """Number of reverse steps."""
        return len(self.process)

    def n_windows(self, image_size: Sequence[int]) -> int:
        """Windows per sample that the patch mode runs on a slice of ``image_size``."""
        if self.mode == "whole":
            return 1
        n = 1
        for size, roi in zip(image_size, self.roi_size):
            size = max(int(size), roi)
            stride = max(int(roi * (1 - self.overlap)), 1)
            n *= int(np.ceil(max(size - roi, 0) / stride)) + 1
        return n

    @torch.no_grad()
    def sample_slice(
        self,
        model: nn.Module,
        cond: torch.Tensor,
        n_samples: int = 10,
        seed: int = 0,
        x0_transform: X0Transform | None = None,
        x_init: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Draw ``n_samples`` restored images of one slice.

        Args:
            model: conditional network (``predict_eps_and_var`` convention), in eval mode.
            cond: normalised condition ``(1, 2R, Nx, Ny)`` or ``(2R, Nx, Ny)`` (moved to the
                network's device).
            n_samples: number of samples ``K``.
            seed: base seed; sample ``k`` uses ``(seed, k)``.
            x0_transform: correction of the whole-slice ``x0_hat`` ``(B, 2R, Nx, Ny)`` at every
                step (k-space data consistency); whole-slice mode or patch mode with the per-step
                blend, because it acts on the whole field of view.
            x_init: the warm start's clean-image estimate ``(1, 2R, Nx, Ny)`` (normalised, like
                ``cond``); required when the process starts below ``T - 1``, refused otherwise.

        Returns:
            samples ``(K, 2R, Nx, Ny)`` float32 on the network's device.
        """
        if cond.ndim == 3:
            cond = cond[None]
        if cond.ndim != 4 or cond.shape[0] != 1:
            raise ValueError(f"cond must be (1, 2R, Nx, Ny) or (2R, Nx, Ny), got {tuple(cond.shape)}.")
        if n_samples < 1:
            raise ValueError(f"n_samples must be >= 1, got {n_samples}.")
        if x0_transform is not None and self.mode == "patch" and not self.blend_every_step:
            raise ValueError(
                "an x0_transform (data consistency) acts on the whole slice at every step: use mode='whole' "
                "or blend_every_step=True."
            )
        device = _model_device(model)
        cond = cond.to(device=device, dtype=torch.float32)
        warm = self.process.start_timestep < len(self.process.alphas_cumprod) - 1
        if warm != (x_init is not None):
            raise ValueError(
                "x_init is the warm start's estimate: give it exactly when the process starts below T - 1."
            )
        if x_init is not None:
            x_init = x_init[None] if x_init.ndim == 3 else x_init
            if tuple(x_init.shape) != tuple(cond.shape):
                raise ValueError(
                    f"x_init must have cond's shape {tuple(cond.shape)}, got {tuple(x_init.shape)}."
                )
            x_init = x_init.to(device=device, dtype=torch.float32)
        chunk = self.sample_batch_size or n_samples
        outputs = []
        bar = None
        if self.progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=n_samples, desc=f"samples ({self.mode}, {self.n_steps} steps)", unit="sample")
        try:
            for start in range(0, n_samples, chunk):
                ks = list(range(start, min(start + chunk, n_samples)))
                if self.mode == "whole":
                    out = self._sample_whole(model, cond, ks, seed, x0_transform, x_init)
                elif self.blend_every_step:
                    out = self._sample_blend_every_step(model, cond, ks, seed, x0_transform, x_init)
                else:
                    out = self._sample_patches(model, cond, ks, seed)
                outputs.append(out)
                if bar is not None:
                    bar.update(len(ks))
        finally:
            if bar is not None:
                bar.close()
        return torch.cat(outputs, dim=0)

    # ------------------------------------------------------------------ helpers
    def _initial_noise(
        self, shape: Sequence[int], ks: Sequence[int], seed: int, device: torch.device
    ) -> torch.Tensor:
        return torch.stack([_cpu_randn(shape, derive_seed(seed, k, 0)) for k in ks]).to(device)

    def _sw_kwargs(self) -> dict[str, Any]:
        return {
            "roi_size": self.roi_size,
            "sw_batch_size": self.sw_batch_size,
            "overlap": self.overlap,
            "mode": self.blend,
            "sigma_scale": self.sigma_scale,
            "padding_mode": "constant",
            "cval": 0.0,
        }

    def _sample_patches(
        self, model: nn.Module, cond: torch.Tensor, ks: Sequence[int], seed: int
    ) -> torch.Tensor:
        c = cond.shape[1]
        x_T = self._initial_noise(cond.shape[1:], ks, seed, cond.device)
        inputs = torch.cat([x_T, cond.expand(len(ks), -1, -1, -1)], dim=1)
        process = self.process

        def predictor(win: torch.Tensor, coords: list[list[slice]]) -> torch.Tensor:
            # window b of this batch is sample ks[coords[b][0].start] at spatial slices coords[b][2:]
            win_seeds = [
                derive_seed(seed, ks[s[0].start], 1, *(int(sl.start) for sl in s[2:])) for s in coords
            ]
            gens = [torch.Generator().manual_seed(sd) for sd in win_seeds]

            def noise_fn(shape: Sequence[int]) -> torch.Tensor:
                z = [torch.randn(tuple(shape[1:]), generator=g, dtype=torch.float32) for g in gens]
                return torch.stack(z).to(win.device)

            return process.run(model, win[:, c:], win[:, :c], noise_fn)

        return sliding_window_inference(inputs, predictor=predictor, with_coord=True, **self._sw_kwargs())

    def _sample_blend_every_step(
        self,
        model: nn.Module,
        cond: torch.Tensor,
        ks: Sequence[int],
        seed: int,
        x0_transform: X0Transform | None = None,
        x_init: torch.Tensor | None = None,
    ) -> torch.Tensor:
        c, n = cond.shape[1], len(ks)
        x = self._initial_noise(cond.shape[1:], ks, seed, cond.device)
        if x_init is not None:
            x = self.process.warm_start(x_init, x)
        gens = [torch.Generator().manual_seed(derive_seed(seed, k, 2)) for k in ks]
        condb = cond.expand(n, -1, -1, -1)
        steps = range(len(self.process))
        if self.progress:
            from tqdm.auto import tqdm

            steps = tqdm(steps, desc="steps", leave=False)
        state = self.process.new_state()
        for i in steps:
            t = int(self.process.timesteps[i])

            def predictor(win: torch.Tensor, t: int = t) -> torch.Tensor:
                eps, v = predict_eps_and_var(model, win[:, :c], t, win[:, c:], self.process.alphas_cumprod)
                return eps if v is None else torch.cat([eps, v], dim=1)

            out = sliding_window_inference(
                torch.cat([x, condb], dim=1), predictor=predictor, **self._sw_kwargs()
            )
            eps, v = out[:, :c], (out[:, c:] if out.shape[1] == 2 * c else None)
            noise = None
            if self.process.needs_noise(i):
                noise = torch.stack([torch.randn(tuple(x.shape[1:]), generator=g) for g in gens]).to(x.device)
            x = self.process.step(x, i, eps, v, noise, x0_transform, state)
        return x

    def _sample_whole(
        self,
        model: nn.Module,
        cond: torch.Tensor,
        ks: Sequence[int],
        seed: int,
        x0_transform: X0Transform | None = None,
        x_init: torch.Tensor | None = None,
    ) -> torch.Tensor:
        nx, ny = cond.shape[-2:]
        m = self.pad_multiple
        px, py = (-nx) % m, (-ny) % m
        pad = (py // 2, py - py // 2, px // 2, px - px // 2)
        condp = F.pad(cond, pad, mode="constant", value=0.0)
        x_T = self._initial_noise(condp.shape[1:], ks, seed, cond.device)
        if x_init is not None:
            x_T = self.process.warm_start(F.pad(x_init, pad, mode="constant", value=0.0), x_T)
        gens = [torch.Generator().manual_seed(derive_seed(seed, k, 3)) for k in ks]

        def noise_fn(shape: Sequence[int]) -> torch.Tensor:
            return torch.stack([torch.randn(tuple(shape[1:]), generator=g) for g in gens]).to(cond.device)

        crop = (..., slice(pad[2], pad[2] + nx), slice(pad[0], pad[0] + ny))
        transform = None
        if x0_transform is not None:

            def transform(x0: torch.Tensor, i: int) -> torch.Tensor:
                x0 = x0.clone()
                x0[crop] = x0_transform(x0[crop], i)
                return x0

        out = self.process.run(
            model,
            condp.expand(len(ks), -1, -1, -1),
            x_T,
            noise_fn,
            progress=self.progress,
            x0_transform=transform,
        )
        return out[..., pad[2] : pad[2] + nx, pad[0] : pad[0] + ny]


def _compose(first: X0Transform, second: X0Transform) -> X0Transform:
    """``second(first(x0, i), i)``: data consistency, then the projection."""

    def transform(x0: torch.Tensor, i: int) -> torch.Tensor:
        return second(first(x0, i), i)

    return transform


def _model_device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    for b in model.buffers():
        return b.device
    return torch.device("cpu")
