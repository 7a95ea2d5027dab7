"""Acceptance measurements of issue 15 (docs/scanner-data.md): scanner data through the pipeline.

Simulated subjects (``simulate_subject`` with the scanner options) are reconstructed with the
MONAI components every method's config uses (``LoadRawSubjectd``, ``LoadB1Mapd``,
``AttachDictionaryd`` with a ``DictionaryProvider``, ``SubspaceBasisd``, ``GridSubspaced``, the
LRTV inferer, ``DictionaryMatchd``, ``MatchedB1d``) run by ``SubjectRunner.process_slice``, and
scored against ``ref/`` inside the reference brain mask.

Cases (``--case``):

* ``b1-full``: a fully sampled 8-coil subject (every frame holds the whole spiral) with a
  +-15 % B1+ field (``b1=0.15``) and its map in ``b1/``: SVD-MRF with the map, with B1 free
  and with B1 ignored (the nominal dictionary): T1 / T2 MAPE, the median signed T2 error.
* ``b1-accel``: the default accelerated protocol (one spiral interleaf per frame), 8 coils
  with correlated noise and a noise scan, a +-15 % field and its map: SVD-MRF and LRTV with
  the map, free, ignored.
* ``b1-nominal``: the same without a B1 field (B1 = 1 everywhere): free B1 against the nominal
  dictionary (the cost of the default policy on data that need none).
* ``coils``: 16-coil subjects with realistic correlated noise and a noise scan: SVD-MRF (and
  LRTV) with prewhitening + 8 virtual coils against prewhitening with all 16 channels
  (relative difference of the maps, time per slice), and without prewhitening.

Run: ``nice -n 10 .venv/bin/python benchmarks/bench_scanner.py --case b1-full --out /tmp/scanner``
(``--threads 1``; dictionaries are cached under ``--cache``; results are also written as JSON).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from monai.transforms import Compose

from mrf_monai.acquisition.protocol import Protocol
from mrf_monai.acquisition.trajectory import fully_sampled_spiral
from mrf_monai.baselines.lrtv import LRTVInferer
from mrf_monai.io.subjects import read_reference
from mrf_monai.pipeline.runner import SubjectRunner
from mrf_monai.simulation.subjects import simulate_subject, subject_protocol
from mrf_monai.transforms import (
    AttachDictionaryd,
    DictionaryMatchd,
    DictionaryProvider,
    GridSubspaced,
    LoadB1Mapd,
    LoadRawSubjectd,
    MatchedB1d,
    SubspaceBasisd,
)

SEEDS = (11, 12)


def simulate(out: Path, case: str, seeds=SEEDS, matrix: int = 230, n_t: int = 200) -> list[Path]:
    """The subjects of a case (simulated once; an existing folder is reused)."""
    folders = []
    for seed in seeds:
        label = f"{case.replace('-', '')}{seed}"
        folder = out / "data" / f"sub-{label}"
        if (folder / "sim.json").is_file():
            folders.append(folder)
            continue
        n_s = 4 * matrix
        common = dict(seed=seed, n_slices=1, split="test", noise_scan_samples=4096)
        if case == "b1-full":
            prot0 = subject_protocol(n_frames=n_t, matrix=matrix, samples_per_readout=n_s)
            traj = fully_sampled_spiral(n_t, matrix, n_s)
            n_r = traj.shape[1] // n_s
            prot = Protocol(prot0.sequence, traj, n_r, (matrix, matrix), prot0.fov_mm, 8, "spiral")
            kw = dict(protocol=prot, b1=0.15, write_b1_map=True, noise_covariance="realistic")
        elif case == "b1-accel":
            kw = dict(n_coils=8, b1=0.15, write_b1_map=True, noise_covariance="realistic")
        elif case == "b1-nominal":
            kw = dict(n_coils=8, noise_covariance="realistic")
        else:
            kw = dict(n_coils=16, noise_covariance="realistic")
        if case != "b1-full":
            kw.update(n_frames=n_t, matrix=matrix, samples_per_readout=n_s)
        t0 = time.perf_counter()
        folders.append(simulate_subject(out / "data", label, **common, **kw))
        print(f"simulated {folders[-1].name} in {time.perf_counter() - t0:.0f} s", flush=True)
    return folders


def pipeline(provider, b1_options: dict | None, grid_options: dict, lrtv: bool):
    """Preprocessing, inferer and postprocessing as in the svdmrf / lrtv configs."""
    pre = [LoadRawSubjectd(keys="raw", slice_key="slice")]
    if b1_options is not None:
        pre.append(LoadB1Mapd(**b1_options))
    pre += [
        AttachDictionaryd(provider=provider),
        SubspaceBasisd(),
        GridSubspaced(
            basis_key="basis",
            output_key="grid" if lrtv else "tsmi",
            problem_key="problem" if lrtv else None,
            **grid_options,
        ),
    ]
    post = [
        DictionaryMatchd(
            keys="tsmi",
            dictionary_key="dictionary",
            clusters_key="clusters",
            mask_threshold=0.15,
            b1_key="b1_map" if b1_options is not None else None,
        ),
        MatchedB1d(),
    ]
    runner = SubjectRunner(
        [],
        Compose(pre),
        writer=lambda *a, **k: None,
        postprocessing=Compose(post),
        inferer=LRTVInferer() if lrtv else None,
        input_key="grid" if lrtv else "tsmi",
        pred_key="tsmi",
        inferer_kwargs={"problem": "problem"} if lrtv else None,
        result_keys=("t1_s", "t2_s", "mask", "b1", "b1_matched", "b1_handling", "acquisition_info", "tsmi"),
    )
    return runner


#: The scanner-data wiring of a method's config (docs/scanner-data.md, "Wiring"): new settings ...
WIRING_SETTINGS = {
    "coil_maps": "inati",
    "prewhiten": "auto",
    "n_virtual_coils": "auto",
    "b1_map": None,
    "b1_policy": "ignore",
    "use_b1_map": True,
    "b1_step": 0.05,
}


def wire_config(cfg: dict) -> dict:
    """... and the changes to the dictionaries, preprocessing and postprocessing of ``cfg``."""
    cfg.update(WIRING_SETTINGS)
    cfg["dictionaries"]["b1_step"] = "@b1_step"
    pre = cfg["preprocessing"]["transforms"]
    load = [i for i, t in enumerate(pre) if t["_target_"].endswith("LoadRawSubjectd")][0]
    pre.insert(
        load + 1,
        {
            "_target_": "mrf_monai.transforms.LoadB1Mapd",
            "b1_path": "@b1_map",
            "policy": "@b1_policy",
            "use_map": "@use_b1_map",
        },
    )
    for t in pre:
        if t["_target_"].endswith("GridSubspaced"):
            t.update({"prewhiten": "@prewhiten", "n_virtual_coils": "@n_virtual_coils"})
    post = cfg["postprocessing"]["transforms"]
    match = [i for i, t in enumerate(post) if t["_target_"].endswith("DictionaryMatchd")][0]
    post[match]["b1_key"] = "b1_map"
    post.insert(match + 1, {"_target_": "mrf_monai.transforms.MatchedB1d"})
    return cfg


def config_runner(config: Path, overrides: dict):
    """The ``runner`` of a method's config with the wiring and ``overrides`` applied."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(config))
    wire_config(parser.config)
    for key, value in overrides.items():
        parser[key] = value
    parser.parse()
    runner = parser.get_parsed_content("runner")
    runner.result_keys = tuple(runner.result_keys) + ("b1_matched", "b1_handling", "acquisition_info")
    return runner


def run_case(runner, subject: Path) -> dict:
    from mrf_monai.io.ismrmrd import read_raw

    raw = read_raw(subject / "raw.h5")
    data = {"raw": raw, "raw_path": str(subject / "raw.h5"), "slice": 0, "label": subject.name[4:]}
    result, t_rec, t_match = runner.process_slice(data)
    ref = read_reference(subject)
    m = torch.from_numpy(ref["mask"][..., 0]) & result["mask"].cpu()
    t1r, t2r = torch.from_numpy(ref["t1_s"][..., 0])[m], torch.from_numpy(ref["t2_s"][..., 0])[m]
    e1 = (result["t1_s"].cpu()[m] - t1r) / t1r
    e2 = (result["t2_s"].cpu()[m] - t2r) / t2r
    out = {
        "t1_mape": 100 * float(e1.abs().mean()),
        "t2_mape": 100 * float(e2.abs().mean()),
        "t1_median": 100 * float(e1.median()),
        "t2_median": 100 * float(e2.median()),
        "reconstruction_s": t_rec,
        "matching_s": t_match,
        "handling": result.get("b1_handling"),
        "info": result.get("acquisition_info"),
        "t1": result["t1_s"].cpu(),
        "t2": result["t2_s"].cpu(),
        "mask": m,
    }
    if result.get("b1_matched") is not None:
        from mrf_monai.io.b1 import read_b1_map, reference_b1_path

        path = reference_b1_path(subject)
        b1_true = torch.from_numpy(read_b1_map(path)[..., 0]) if path.is_file() else torch.ones(m.shape)
        out["b1_mae"] = float((result["b1_matched"].cpu()[m] - b1_true[m]).abs().mean())
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--case", choices=("b1-full", "b1-accel", "b1-nominal", "coils"), required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--cache", type=Path, default=None, help="dictionary cache (default: the out folder)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--lrtv", action="store_true", help="also LRTV (30 iterations, the config's defaults)")
    p.add_argument("--b1-step", type=float, default=0.05)
    p.add_argument("--matrix", type=int, default=230)
    p.add_argument("--frames", type=int, default=200)
    p.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    p.add_argument(
        "--config",
        type=Path,
        default=None,
        help="run a method's config (svdmrf.json, lrtv.json, a bundle's inference.json) with the wiring "
        "instead of the hand-built pipeline (B1 cases); --set KEY=JSON overrides its settings",
    )
    p.add_argument("--set", action="append", default=[], metavar="KEY=JSON")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    cache = args.cache or args.out / "cache"
    subjects = simulate(args.out, args.case, args.seeds, args.matrix, args.frames)
    methods = [False, True] if args.lrtv else [False]
    rows = []
    if args.case.startswith("b1"):
        provider = DictionaryProvider(cache_dir=cache, b1_step=args.b1_step)
        cases = {
            "map": dict(policy="free"),
            "free": dict(policy="free", use_map=False),
            "ignored": dict(policy="ignore", use_map=False),
        }
        if args.case == "b1-nominal":
            cases = {"free": dict(policy="free"), "ignored": dict(policy="ignore")}
        from mrf_monai.io.ismrmrd import read_raw

        sequence = read_raw(subjects[0] / "raw.h5").sequence
        for handling in ("map", "free", "ignore"):  # once per run: dictionary build (cache) + clusters
            t0 = time.perf_counter()
            d, _, _ = provider.resolve(sequence, handling)
            print(
                f"dictionary + clusters for {handling}: {d.n_atoms} atoms, {time.perf_counter() - t0:.0f} s"
            )
        for lrtv in methods:
            for name, b1_opts in cases.items():
                if args.config is not None:
                    sets = dict(kv.split("=", 1) for kv in args.set)
                    overrides = {k: json.loads(v) for k, v in sets.items()}
                    overrides.update(
                        dataset_dir=str(args.out / "data"),
                        cache_dir=str(cache),
                        b1_step=args.b1_step,
                        progress=False,
                        b1_policy=b1_opts["policy"],
                        use_b1_map=b1_opts.get("use_map", True),
                    )
                    runner = config_runner(args.config, overrides)
                    lrtv = args.config.stem
                else:
                    runner = pipeline(provider, b1_opts, dict(coil_maps="inati"), lrtv)
                for subject in subjects:
                    t0 = time.perf_counter()
                    r = run_case(runner, subject)
                    method = lrtv if isinstance(lrtv, str) else ("lrtv" if lrtv else "svdmrf")
                    r.update(method=method, b1=name, subject=subject.name)
                    r["wall_s"] = time.perf_counter() - t0
                    rows.append(r)
                    b1_mae = r.get("b1_mae", float("nan"))
                    print(
                        f"| {r['method']} | {name} | {subject.name} | {r['t1_mape']:.2f}% "
                        f"| {r['t2_mape']:.2f}% | {r['t1_median']:+.2f}% | {r['t2_median']:+.2f}% "
                        f"| {b1_mae:.3f} | {r['reconstruction_s']:.1f} | {r['matching_s']:.1f} "
                        f"| {r['wall_s']:.0f} |",
                        flush=True,
                    )
    else:
        provider = DictionaryProvider(cache_dir=cache)
        from mrf_monai.io.ismrmrd import read_raw

        provider(read_raw(subjects[0] / "raw.h5").sequence)  # dictionary and clusters before timing
        cases = {
            "whitened, 16 channels": dict(prewhiten=True, n_virtual_coils=None),
            "whitened, 8 virtual": dict(prewhiten=True, n_virtual_coils=8),
            "auto (defaults)": dict(),
            "not whitened, 16 channels": dict(prewhiten=False, n_virtual_coils=None),
        }
        for lrtv in methods:
            ref_maps = {}
            for name, opts in cases.items():
                runner = pipeline(provider, None, dict(coil_maps="inati", **opts), lrtv)
                for subject in subjects:
                    t0 = time.perf_counter()
                    r = run_case(runner, subject)
                    r.update(method="lrtv" if lrtv else "svdmrf", setting=name, subject=subject.name)
                    r["wall_s"] = time.perf_counter() - t0
                    key = subject.name
                    if name == "whitened, 16 channels":
                        ref_maps[key] = r
                    ref = ref_maps[key]
                    both = ref["mask"] & r["mask"]
                    for q in ("t1", "t2"):
                        d = (r[q][both] - ref[q][both]).abs() / ref[q][both]
                        r[f"{q}_vs_full"] = 100 * float(d.mean())
                    cc = (r["info"] or {}).get("CoilCompression", {})
                    rows.append(r)
                    print(
                        f"| {r['method']} | {name} | {subject.name} | {cc.get('VirtualCoils', 16)} "
                        f"| {r['t1_mape']:.2f}% | {r['t2_mape']:.2f}% | {r['t1_vs_full']:.3f}% "
                        f"| {r['t2_vs_full']:.3f}% | {r['reconstruction_s']:.1f} | {r['matching_s']:.1f} |",
                        flush=True,
                    )
    keep = ("t1", "t2", "mask")
    dump = [{k: v for k, v in r.items() if k not in keep} for r in rows]
    tag = f"-{args.config.parent.parent.name}" if args.config is not None else ("-lrtv" if args.lrtv else "")
    (args.out / f"results-{args.case}{tag}.json").write_text(json.dumps(dump, indent=2, default=str))


if __name__ == "__main__":
    main()
