"""Scanner conditions of simulated subjects: correlated receiver noise, noise scans and B1+ fields.

:func:`~mrf_monai.simulation.subjects.simulate_subject` uses these when asked (its defaults give
white noise, no noise scan and no B1 field: the subjects of earlier versions, bit for bit).

Receiver noise: with a channel covariance ``Psi`` (``"realistic"``:
:func:`mrf_monai.acquisition.coils.realistic_noise_covariance`, neighbour correlation 0.3 and
variances 0.7-1.3; or any ``(C, C)`` matrix) the noise of every k-space sample is ``L w`` with
``Psi = L L^H`` and ``w`` the simulator's white complex Gaussian noise (``E|w|^2 = sigma^2``
per channel): ``E[n n^H] = sigma^2 Psi``. A noise scan (ISMRMRD ``ACQ_IS_NOISE_MEASUREMENT``,
data contract section 5) holds ``M`` noise-only samples per channel drawn the same way, scaled
for its sampling bandwidth: at dwell time ``d_n`` against the imaging dwell ``d`` its noise
power is ``sigma^2 (d / d_n) rnb`` (``rnb`` the relative receiver noise bandwidth, 1 unless
given), exactly the convention that :mod:`mrf_monai.acquisition.prewhitening` undoes, so the
whitened imaging noise has unit variance. With a noise scan the subject has one noise level for
all its slices (the mean of the slices' ``sigma``), as on a scanner.

B1+ fields (``b1_field``): a smooth, centre-bright relative transmit field, as at 3 T:

    B1(x, y, z) = 1 + a (1 - 2 min(rho^2, 1)),
    rho^2 = ((x - cx) / rx)^2 + ((y - cy) / ry)^2 + ((z - cz) / rz)^2,

``1 + a`` at the centre and ``1 - a`` at the edge of the brain and beyond; ``(cx, cy)`` and
``(rx, ry)`` the centre and half-extent of the slice's brain mask, moved by up to 5 % and
scaled by 0.9-1.1 per subject; ``cz = 10 mm`` (MNI z), ``rz = 90 mm`` (the field also falls
towards the top and bottom of the head). The amplitude ``a`` is given, or drawn per subject
from :data:`B1_AMPLITUDE_RANGE` (``"random"``). The EPG of every voxel then uses its flip
angles times its B1 (:func:`mrf_monai.physics.epg.simulate_fisp` with ``b1``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch

from mrf_monai.acquisition.coils import realistic_noise_covariance
from mrf_monai.phantoms.augment import subject_generator

__all__ = [
    "B1_AMPLITUDE_RANGE",
    "DEFAULT_DWELL_US",
    "NOISE_COVARIANCES",
    "B1FieldParameters",
    "draw_b1_field",
    "b1_field",
    "noise_covariance_matrix",
    "ScannerConditions",
    "white_noise",
    "correlate",
    "noise_scan_generator",
]

#: Amplitude range of random B1+ fields (1 +- a over the brain; 10-25 % at 3 T).
B1_AMPLITUDE_RANGE = (0.10, 0.25)
#: Imaging dwell time (us) written with a simulated noise scan when none is given.
DEFAULT_DWELL_US = 2.5
#: Named noise covariances of :func:`noise_covariance`.
NOISE_COVARIANCES = ("white", "realistic")
#: Sub-streams of :func:`mrf_monai.phantoms.augment.subject_generator` (3 is the imaging noise).
_NOISE_SCAN_STREAM, _B1_STREAM = 4, 5
_B1_Z_CENTRE_MM, _B1_Z_RADIUS_MM = 10.0, 90.0


@dataclass(frozen=True)
class B1FieldParameters:
    """One subject's B1+ field (module notes): amplitude, centre shift and radius scales."""

    amplitude: float
    centre_shift: tuple[float, float]  # fractions of the brain's half-extent
    radius_scale: tuple[float, float]
    z_centre_mm: float = _B1_Z_CENTRE_MM
    z_radius_mm: float = _B1_Z_RADIUS_MM

    def to_dict(self) -> dict:
        return asdict(self)


def draw_b1_field(seed: int, split: str, amplitude: float | str) -> B1FieldParameters:
    """The B1+ field of subject ``seed``: ``amplitude`` a number (``a``) or ``"random"``."""
    rng = subject_generator(seed, split, _B1_STREAM)
    if amplitude == "random":
        a = float(rng.uniform(*B1_AMPLITUDE_RANGE))
    else:
        a = float(amplitude)
        if not 0 <= a < 1:
            raise ValueError(f"the B1 amplitude must lie in [0, 1) (B1 = 1 +- a), got {amplitude}")
    shift = rng.uniform(-0.05, 0.05, 2)
    scale = rng.uniform(0.9, 1.1, 2)
    return B1FieldParameters(a, (float(shift[0]), float(shift[1])), (float(scale[0]), float(scale[1])))


def b1_field(mask: np.ndarray, z_mm: float, params: B1FieldParameters) -> np.ndarray:
    """Relative B1+ ``(Nx, Ny)`` float32 of one slice (module notes), centred on ``mask``'s brain.

    Args:
        mask: ``(Nx, Ny)`` brain mask of the slice (its centre and half-extent place the field;
            an empty mask centres it in the image).
        z_mm: the slice's z position (LPS/MNI mm).
        params: :func:`draw_b1_field`.
    """
    m = np.asarray(mask) != 0
    nx, ny = m.shape
    if m.any():
        i, j = np.nonzero(m)
        ci, cj = i.mean(), j.mean()
        ri, rj = max(np.abs(i - ci).max(), 1.0), max(np.abs(j - cj).max(), 1.0)
    else:
        ci, cj, ri, rj = (nx - 1) / 2, (ny - 1) / 2, nx / 2, ny / 2
    ci, cj = ci + params.centre_shift[0] * ri, cj + params.centre_shift[1] * rj
    ri, rj = ri * params.radius_scale[0], rj * params.radius_scale[1]
    ii, jj = np.meshgrid(np.arange(nx, dtype=np.float64), np.arange(ny, dtype=np.float64), indexing="ij")
    rho2 = ((ii - ci) / ri) ** 2 + ((jj - cj) / rj) ** 2
    rho2 = rho2 + ((float(z_mm) - params.z_centre_mm) / params.z_radius_mm) ** 2
    return (1.0 + params.amplitude * (1.0 - 2.0 * np.minimum(rho2, 1.0))).astype(np.float32)


def noise_covariance_matrix(
    spec: str | np.ndarray | torch.Tensor | None, n_coils: int, seed: int = 0
) -> np.ndarray | None:
    """The ``(C, C)`` channel noise covariance asked for, or ``None`` for white noise.

    Args:
        spec: ``None`` or ``"white"`` (independent channels of equal variance), ``"realistic"``
            (:func:`~mrf_monai.acquisition.coils.realistic_noise_covariance` of ``seed``), or a
            ``(C, C)`` Hermitian positive definite matrix.
        n_coils: ``C``.
        seed: seed of the realistic covariance.
    """
    if spec is None or (isinstance(spec, str) and spec == "white"):
        return None
    if isinstance(spec, str):
        if spec != "realistic":
            raise ValueError(
                f"unknown noise covariance {spec!r}; use one of {list(NOISE_COVARIANCES)} or a matrix"
            )
        return realistic_noise_covariance(n_coils, seed).numpy()
    cov = np.asarray(spec.detach().cpu() if isinstance(spec, torch.Tensor) else spec).astype(np.complex128)
    if cov.shape != (n_coils, n_coils):
        raise ValueError(
            f"the noise covariance must be ({n_coils}, {n_coils}) for {n_coils} coils, got {cov.shape}"
        )
    if not np.allclose(cov, cov.conj().T, atol=1e-8 * max(1.0, float(np.abs(cov).max()))):
        raise ValueError("the noise covariance must be Hermitian")
    if np.linalg.eigvalsh(cov).min() <= 0:
        raise ValueError("the noise covariance must be positive definite")
    return cov


def white_noise(rng: np.random.Generator, shape: tuple[int, ...], sigma: float) -> np.ndarray:
    """Complex64 white Gaussian noise with ``E|n|^2 = sigma^2`` (the simulator's own draw)."""
    n = rng.standard_normal((2, *shape), dtype=np.float32) * np.float32(sigma / math.sqrt(2.0))
    return n[0] + 1j * n[1]


def correlate(noise: np.ndarray, covariance: np.ndarray | None) -> np.ndarray:
    """``L noise`` over the channel axis 0 (``covariance = L L^H``); unchanged for ``None``."""
    if covariance is None:
        return noise
    chol = np.linalg.cholesky(covariance).astype(np.complex64)
    c = noise.shape[0]
    return (chol @ noise.reshape(c, -1)).reshape(noise.shape).astype(np.complex64)


def noise_scan_generator(seed: int, split: str) -> np.random.Generator:
    """The random stream of a subject's noise scan (separate from the imaging noise)."""
    return subject_generator(seed, split, _NOISE_SCAN_STREAM)


@dataclass
class ScannerConditions:
    """The scanner conditions of one simulated subject, and what they produced (module notes).

    Made by :meth:`create`; :func:`~mrf_monai.simulation.subjects.simulate_subject` asks it for
    each slice's B1 field (:meth:`slice_b1`) and imaging noise (:meth:`slice_noise`), then for the
    subject's noise (:meth:`finish`: the noise scan and the ``RawSubject`` fields) and its
    ``sim.json`` entries (:meth:`card`).
    """

    n_coils: int
    coil_layout: str = "ring"
    covariance_kind: str | None = None
    covariance: np.ndarray | None = None
    noise_scan_samples: int = 0
    dwell_us: float | None = None
    noise_dwell_us: float | None = None
    relative_noise_bandwidth: float | None = None
    b1: B1FieldParameters | None = None
    seed: int = 0
    split: str = "test"
    b1_maps: list[np.ndarray] | None = None
    subject_sigma: float | None = None
    noise_scan: np.ndarray | None = None

    @classmethod
    def create(
        cls,
        seed: int,
        split: str,
        n_coils: int,
        coil_layout: str = "ring",
        noise_covariance: str | np.ndarray | torch.Tensor | None = None,
        noise_scan_samples: int = 0,
        dwell_us: float | None = None,
        noise_dwell_us: float | None = None,
        relative_noise_bandwidth: float | None = None,
        b1: float | str | None = None,
    ) -> ScannerConditions:
        """Check and resolve the options of ``simulate_subject`` (see its docstring)."""
        if int(noise_scan_samples) < 0:
            raise ValueError(f"noise_scan_samples must be >= 0, got {noise_scan_samples}")
        for name, value in (
            ("dwell_us", dwell_us),
            ("noise_dwell_us", noise_dwell_us),
            ("relative_noise_bandwidth", relative_noise_bandwidth),
        ):
            if value is not None and not float(value) > 0:
                raise ValueError(f"{name} must be positive, got {value}")
        if noise_scan_samples and dwell_us is None:
            dwell_us = DEFAULT_DWELL_US
        if noise_scan_samples and noise_dwell_us is None:
            noise_dwell_us = dwell_us
        kind = noise_covariance if isinstance(noise_covariance, str) or noise_covariance is None else "given"
        return cls(
            n_coils=int(n_coils),
            coil_layout=coil_layout,
            covariance_kind=kind,
            covariance=noise_covariance_matrix(noise_covariance, int(n_coils), seed),
            noise_scan_samples=int(noise_scan_samples),
            dwell_us=dwell_us,
            noise_dwell_us=noise_dwell_us if noise_scan_samples else None,
            relative_noise_bandwidth=relative_noise_bandwidth,
            b1=None if b1 is None else draw_b1_field(seed, split, b1),
            seed=int(seed),
            split=split,
            b1_maps=[],
        )

    @property
    def noise_per_subject(self) -> bool:
        """With a noise scan the imaging noise is added once per subject, by :meth:`finish`."""
        return self.noise_scan_samples > 0

    def slice_b1(self, mask: np.ndarray, z_mm: float) -> np.ndarray | None:
        """The B1 field of the next slice (kept for the maps), or ``None`` without a field."""
        if self.b1 is None:
            return None
        field = b1_field(mask, z_mm, self.b1)
        self.b1_maps.append(field)
        return field

    def slice_noise(self, rng: np.random.Generator, shape: tuple[int, ...], sigma: float) -> np.ndarray:
        """Imaging noise of one slice ``(C, T, S)``: white (the simulator's draw) times ``L``."""
        return correlate(white_noise(rng, shape, sigma), self.covariance)

    def finish(self, kspace: np.ndarray, sigmas: list[float], rng: np.random.Generator) -> dict:
        """Add the subject's noise (with a noise scan) in place; the ``RawSubject`` noise fields."""
        if self.noise_per_subject:
            self.subject_sigma = float(np.mean(sigmas))
            if self.subject_sigma > 0:
                for s in range(kspace.shape[0]):
                    kspace[s] += self.slice_noise(rng, kspace.shape[1:], self.subject_sigma)
            rnb = 1.0 if self.relative_noise_bandwidth is None else float(self.relative_noise_bandwidth)
            power = (float(self.dwell_us) / float(self.noise_dwell_us)) * rnb
            sigma = (self.subject_sigma if self.subject_sigma > 0 else 1.0) * math.sqrt(power)
            shape = (self.n_coils, self.noise_scan_samples)
            self.noise_scan = correlate(
                white_noise(noise_scan_generator(self.seed, self.split), shape, sigma), self.covariance
            )
        return {
            "noise": self.noise_scan,
            "dwell_us": self.dwell_us,
            "noise_dwell_us": self.noise_dwell_us,
            "relative_noise_bandwidth": self.relative_noise_bandwidth,
        }

    def card(self, masks: list[np.ndarray], b1_map_written: bool) -> dict:
        """The ``sim.json`` entries of the conditions that were asked for (none by default)."""
        card: dict = {}
        if self.n_coils > 1 and self.coil_layout != "ring":
            card["coil_layout"] = self.coil_layout
        if self.covariance is not None:
            card["noise_covariance"] = {
                "kind": self.covariance_kind,
                "definition": "E[n n^H] = sigma^2 Psi: the white noise times the Cholesky factor of Psi",
                "psi_real": np.real(self.covariance).tolist(),
                "psi_imag": np.imag(self.covariance).tolist(),
            }
        if self.noise_per_subject:
            card["noise_scan"] = {
                "samples_per_channel": self.noise_scan_samples,
                "subject_sigma": self.subject_sigma,
                "dwell_us": self.dwell_us,
                "noise_dwell_us": self.noise_dwell_us,
                "relative_noise_bandwidth": self.relative_noise_bandwidth,
                "definition": "ISMRMRD ACQ_IS_NOISE_MEASUREMENT acquisitions; noise power sigma^2 x "
                "(dwell_us / noise_dwell_us) x relative_noise_bandwidth; one sigma for all slices "
                "(the mean of the slices')",
            }
        if self.b1 is not None:
            brain = np.concatenate([f[np.asarray(m) != 0] for f, m in zip(self.b1_maps, masks)])
            card["b1"] = {
                **self.b1.to_dict(),
                "model": "B1 = 1 + a (1 - 2 min(rho^2, 1)), rho^2 over the slice's brain extent and z "
                "(mrf_monai.simulation.scanner); flip angles scaled by B1 in the EPG",
                "brain_range": [float(brain.min()), float(brain.max())] if brain.size else None,
                "ref_map": "ref/sub-<label>_TB1map.nii.gz",
                "b1_map": "b1/sub-<label>_TB1map.nii.gz" if b1_map_written else None,
            }
        return card
