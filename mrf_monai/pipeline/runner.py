"""The reconstruction loop every method shares, written as MONAI components.

For each subject the :class:`SubjectRunner` reads ``raw.h5`` once, then for each slice runs

1. ``preprocessing`` (a MONAI ``Compose`` of dictionary transforms: select the slice, attach the
   dictionary of its sequence, grid the k-space to the aliased compressed TSMI, normalise, ...),
2. ``inferer(data[input_key], network, **{arg: data[key] for arg, key in inferer_kwargs})``
   (a MONAI ``Inferer``: the diffusion sampler, an LRTV solver, a padded U-Net pass, or nothing
   for SVD-MRF), whose output is stored under ``pred_key``,
3. ``postprocessing`` (channels to complex, undo the normalisation, dictionary matching,
   standard-deviation maps over samples, ...),

and hands the per-slice results to the ``writer`` (:class:`~mrf_monai.pipeline.writer.SubjectWriter`),
which publishes ``sub-<label>/`` atomically. All of it is built from a bundle's
``inference.json`` (``mrf-monai reconstruct`` and ``python -m monai.bundle run inference`` run the
same components), so a user changes the pipeline in JSON.

A subject that fails (unreadable raw data, a dictionary of another sequence, an error in a
transform) is reported in one line naming the file and the reason; the loop goes on with the
other subjects. An error that says a *setting* is wrong (its ``stops_run`` attribute is true,
e.g. :class:`~mrf_monai.transforms.b1.B1MapSettingError`: the B1 map file named for the run does
not fit the subject) stops the run instead and is raised (``mrf-monai reconstruct`` exits 2).
An interrupt (Ctrl-C, SIGTERM) stops the loop, removes the unfinished subject's temporary folder
and re-raises; debris of an earlier interrupted run is cleaned up at the start
(:func:`mrf_monai.io.folders.recover_interrupted`).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

__all__ = ["SubjectRunner", "ReconstructionFailed"]


class ReconstructionFailed(RuntimeError):
    """At least one subject failed (raised by ``run(raise_on_failure=True)``, e.g. in bundles)."""


class SubjectRunner:
    """Reconstruct every subject of a dataset with MONAI components (see the module notes).

    Args:
        subjects: subject folders (``sub-<label>/`` with ``raw.h5``), e.g.
            :func:`mrf_monai.pipeline.subjects_for_rank` of a dataset folder.
        preprocessing: callable on the per-slice data dictionary (a MONAI ``Compose``). It gets
            ``raw`` (the ``RawSubject``), ``raw_path``, ``slice``, ``label`` and ``n_slices``.
        writer: called as ``writer(label, slices, affine, timing, sequence=..., raw=...)``.
        postprocessing: callable on the data dictionary after the inferer.
        inferer: a MONAI ``Inferer`` (``inferer(inputs, network, **kwargs)``) or ``None``
            (``pred_key`` is then a copy of ``input_key``).
        network: the network passed to the inferer (``None`` for classical methods).
        input_key: the inferer's input.
        pred_key: where the inferer's output goes.
        inferer_kwargs: ``{argument: data key}`` passed to the inferer besides the input.
        method_name: for messages and ``timing.json``.
        device: recorded in ``timing.json``.
        read_raw: ``path -> RawSubject`` (default :func:`mrf_monai.io.ismrmrd.read_raw`; bind
            a trajectory file here).
        result_keys: the per-slice keys kept for the writer (the rest is dropped after
            postprocessing, so memory does not grow with the number of slices): the maps, the
            TSMI, the matched B1 map of free-B1 matching (``b1_matched``,
            :class:`~mrf_monai.transforms.b1.MatchedB1d`) and the front end's record
            (``acquisition_info``, for the sidecars).
        num_threads: ``torch.set_num_threads`` for the run (``None``: unchanged). Two runs on the
            same cores should split them (``docs/interfaces.md``, "Threads").
        progress: a tqdm bar over subjects (stderr).
        log: where messages go (default stderr).
        timing_extra: fixed entries added to every ``timing.json`` (the method's settings).
    """

    def __init__(
        self,
        subjects: Sequence[str | os.PathLike],
        preprocessing: Callable[[dict], dict],
        writer: Callable[..., Path],
        postprocessing: Callable[[dict], dict] | None = None,
        inferer: Callable[..., Any] | None = None,
        network: torch.nn.Module | None = None,
        input_key: str = "cond",
        pred_key: str = "pred",
        inferer_kwargs: Mapping[str, str] | None = None,
        method_name: str = "method",
        device: str | torch.device | None = None,
        read_raw: Callable[[Path], Any] | None = None,
        result_keys: Sequence[str] = (
            "t1_s",
            "t2_s",
            "pd",
            "pd_phase",
            "mask",
            "tsmi",
            "t1_std_s",
            "t2_std_s",
            "b1_matched",
            "acquisition_info",
        ),
        num_threads: int | None = None,
        progress: bool = True,
        log: Callable[[str], None] | None = None,
        timing_extra: Mapping[str, Any] | None = None,
    ) -> None:
        self.subjects = [Path(s) for s in subjects]
        self.preprocessing = preprocessing
        self.postprocessing = postprocessing
        self.inferer = inferer
        self.network = network
        self.writer = writer
        self.input_key, self.pred_key = input_key, pred_key
        self.inferer_kwargs = dict(inferer_kwargs or {})
        self.method_name = method_name
        self.device = str(device) if device is not None else "cpu"
        self.read_raw = read_raw
        self.result_keys = tuple(result_keys)
        self.num_threads = None if not num_threads else int(num_threads)
        self.progress = bool(progress)
        self.log = log or _stderr
        self.timing_extra = dict(timing_extra or {})
        self.failures: list[str] = []

    # ------------------------------------------------------------------ one slice
    def process_slice(self, data: dict) -> tuple[dict, float, float]:
        """Run preprocessing, inferer and postprocessing on one slice's data dictionary.

        Returns:
            ``(results, reconstruction_s, matching_s)``: the :attr:`result_keys` of the
            processed data and the time spent before and after the inferer.
        """
        t0 = time.perf_counter()
        d = _unwrapped(self.preprocessing, dict(data))
        if self.inferer is None:
            d[self.pred_key] = d[self.input_key]
        else:
            kwargs = {arg: d.get(key) for arg, key in self.inferer_kwargs.items()}
            with torch.no_grad():
                d[self.pred_key] = self.inferer(d[self.input_key], self.network, **kwargs)
        _synchronize(d.get(self.pred_key))
        t1 = time.perf_counter()
        if self.postprocessing is not None:
            d = _unwrapped(self.postprocessing, d)
        results = {k: d[k] for k in self.result_keys if k in d}
        return results, t1 - t0, time.perf_counter() - t1

    # ------------------------------------------------------------------ one subject
    def process_subject(self, subject: Path) -> Path:
        """Reconstruct and write one subject; returns its output folder."""
        from mrf_monai.io.subjects import RAW_NAME, subject_label

        t_start = time.perf_counter()
        label = subject_label(subject)
        raw_path = subject / RAW_NAME
        reader = self.read_raw
        if reader is None:
            from mrf_monai.io.ismrmrd import read_raw as reader
        raw = reader(raw_path)
        slices, rec_s, match_s = [], [], []
        for s in range(raw.n_slices):
            data = {
                "raw": raw,
                "raw_path": str(raw_path),
                "slice": s,
                "label": label,
                "n_slices": raw.n_slices,
            }
            result, t_rec, t_match = self.process_slice(data)
            slices.append(result)
            rec_s.append(t_rec)
            match_s.append(t_match)
        per_slice = [a + b for a, b in zip(rec_s, match_s)]
        timing = {
            "method": self.method_name,
            "device": self.device,
            "n_slices": raw.n_slices,
            "seconds_per_slice": per_slice,
            "reconstruction_seconds": rec_s,
            "matching_seconds": match_s,
            "mean_seconds_per_slice": float(sum(per_slice) / len(per_slice)),
            **self.timing_extra,
        }
        timing["total_seconds"] = time.perf_counter() - t_start
        return self.writer(label, slices, raw.affine(), timing, sequence=raw.sequence, raw=raw)

    # ------------------------------------------------------------------ the dataset
    def run(self, raise_on_failure: bool = False) -> int:
        """Reconstruct every subject; returns 0 when all succeeded, else 1.

        Args:
            raise_on_failure: raise :class:`ReconstructionFailed` instead of returning 1
                (``monai.bundle run`` then exits non-zero).
        """
        from tqdm.auto import tqdm

        from mrf_monai.io.folders import recover_interrupted
        from mrf_monai.io.subjects import subject_label

        self.failures = []
        if self.num_threads:
            torch.set_num_threads(self.num_threads)
        if not self.subjects:
            self.log(f"{self.method_name}: no subjects to reconstruct")
            if raise_on_failure:
                raise ReconstructionFailed("no subjects to reconstruct")
            return 1
        output_dir = getattr(self.writer, "output_dir", None)
        if output_dir is not None:
            for line in recover_interrupted(output_dir):
                self.log(f"{output_dir}: {line}")
        done = 0
        bar = tqdm(
            self.subjects, desc=self.method_name, unit="subject", disable=not self.progress, file=sys.stderr
        )
        try:
            for subject in bar:
                bar.set_postfix_str(subject.name)
                try:
                    self.process_subject(subject)
                    done += 1
                except Exception as err:  # one bad subject must not stop the others
                    if getattr(err, "stops_run", False):  # a wrong setting met at a subject (--b1 FILE)
                        raise
                    name = subject.name
                    try:
                        name = f"sub-{subject_label(subject)}"
                    except ValueError:
                        pass
                    message = f"{name}: {_reason(err)}"
                    self.failures.append(message)
                    with tqdm.external_write_mode(file=sys.stderr):
                        self.log(message)
        finally:
            bar.close()
        if self.failures:
            where = f" ({done} written to {output_dir})" if output_dir is not None else ""
            summary = f"{len(self.failures)} of {len(self.subjects)} subject(s) failed"
            self.log(f"{self.method_name}: {summary}{where}")
            if raise_on_failure:
                raise ReconstructionFailed(f"{self.method_name}: {summary} (see the messages above)")
            return 1
        if not self.progress:  # (with progress, the bar says it)
            where = f" to {output_dir}" if output_dir is not None else ""
            self.log(f"{self.method_name}: {done} subject(s) written{where}")
        return 0


def _unwrapped(transform: Callable[[dict], dict], data: dict) -> dict:
    """``transform(data)``, re-raising the original error of a failing transform.

    MONAI's ``Compose`` wraps it in ``RuntimeError("applying transform ...")``, whose message
    names the transform object, not the problem.
    """
    try:
        return transform(data)
    except RuntimeError as err:
        inner: BaseException = err
        while (
            isinstance(inner, RuntimeError)
            and str(inner).startswith("applying transform")
            and inner.__cause__ is not None
        ):
            inner = inner.__cause__
        if inner is err:
            raise
        raise inner from None


def _reason(err: BaseException) -> str:
    """One line for a failure: the message alone for expected errors, with the type otherwise."""
    text = str(err).strip().splitlines()[0] if str(err).strip() else ""
    if isinstance(err, ValueError | OSError | KeyError | TypeError | IndexError):
        return text or type(err).__name__
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def _synchronize(x: Any) -> None:
    """Wait for queued CUDA kernels so that the timing is the method's own work."""
    if isinstance(x, torch.Tensor) and x.is_cuda:
        torch.cuda.synchronize(x.device)


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
