"""The shared training engine (:mod:`mrf_monai.engines`): RNG states, processes, data, checkpoints."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from mrf_monai.baselines.unet import UNetTrainer, build_unet
from mrf_monai.engines import (
    StepBatchSampler,
    checkpoint_name,
    find_last_checkpoint,
    init_distributed,
    prune_checkpoints,
    rng_state,
    set_rng_state,
    step_loader,
    step_seed,
    training_data_description,
    training_device,
)
from mrf_monai.io.weights import WeightsFileError, load_training_checkpoint, save_training_checkpoint

TINY = {"rank": 1, "channels": [4, 8], "strides": [2], "num_res_units": 1}


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _pairs(n=3, size=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        ref = torch.randn(2, size, size, generator=g)
        out.append({"image": ref, "cond": ref + 0.3 * torch.randn(2, size, size, generator=g)})
    return out


def _trainer(tmp_path, network=None, optimizer=torch.optim.Adam, lr=1e-2, **kw):
    net = build_unet(**TINY, init_seed=0) if network is None else network
    args = dict(
        network=net,
        optimizer=optimizer(net.parameters(), lr=lr),
        loss_function=torch.nn.MSELoss(),
        train_dataset=_pairs(),
        output_dir=tmp_path,
        batch_size=2,
        max_steps=4,
        device="cpu",
        progress=False,
        tensorboard=False,
    )
    args.update(kw)
    return UNetTrainer(**args)


def test_rng_state_survives_a_safe_checkpoint(tmp_path):
    torch.manual_seed(3)
    np.random.seed(4)  # noqa: NPY002 (the global state is what is tested)
    random.seed(5)
    torch.randn(3), np.random.rand(), random.random(), np.random.randn()  # noqa: NPY002
    state = rng_state()
    expected = (torch.randn(4), np.random.rand(3), random.random(), np.random.randn())  # noqa: NPY002
    path = save_training_checkpoint(tmp_path / "c.pt", {"hyper_parameters": {}, "rng": [state]})
    loaded = torch.load(path, weights_only=True)["rng"][0]
    torch.manual_seed(99)
    np.random.seed(99)  # noqa: NPY002
    random.seed(99)
    set_rng_state(loaded)
    again = (torch.randn(4), np.random.rand(3), random.random(), np.random.randn())  # noqa: NPY002
    assert torch.equal(expected[0], again[0]) and np.array_equal(expected[1], again[1])
    assert expected[2] == again[2] and expected[3] == again[3]


def test_single_process_context_and_device():
    ctx = init_distributed("cpu")
    assert (ctx.process_rank, ctx.world_size, ctx.is_main, ctx.active) == (0, 1, True, False)
    assert ctx.device == torch.device("cpu") and training_device("cpu") == torch.device("cpu")
    x = torch.arange(3.0)
    assert ctx.any_true(True) and not ctx.any_true(False)
    assert ctx.broadcast_from_main(x) is x and ctx.gather_objects({"a": 1}) == [{"a": 1}]
    if not torch.cuda.is_available():
        assert training_device("auto") == torch.device("cpu")


def test_step_seeds_and_loader_are_keyed_by_step():
    assert step_seed(0, 0, 5) == step_seed(0, 0, 5) != step_seed(0, 1, 5)
    data = _pairs(5)
    full = [b["image"] for b in step_loader(data, None, 2, seed=1, process_rank=0, start_step=0, max_steps=4)]
    late = [b["image"] for b in step_loader(data, None, 2, seed=1, process_rank=0, start_step=2, max_steps=4)]
    assert len(full) == 4 and all(torch.equal(a, b) for a, b in zip(full[2:], late))
    sampler = StepBatchSampler(5, 2, seed=1, process_rank=0, start_step=0, max_steps=4)
    assert [data[i]["image"] for i, _ in sampler.batch(3)][0].shape == full[3][0].shape
    with pytest.raises(ValueError, match="empty"):
        StepBatchSampler(0, 2, 0, 0, 0, 1)


def test_training_data_description():
    class WithBasis:
        basis = torch.eye(4, 2, dtype=torch.complex64)
        rank = 2
        sequence = "key123"

    class Dictionary:
        basis = torch.eye(4, 3, dtype=torch.complex64)
        sequence = None

    d = training_data_description(WithBasis(), Dictionary())
    assert torch.equal(d["basis"], WithBasis.basis) and d["rank"] == 2 and d["sequence_key"] == "key123"
    cut = training_data_description([], Dictionary(), rank=2)
    assert torch.equal(cut["basis"], Dictionary.basis[:, :2]) and cut["rank"] == 2 and cut["sequence"] is None
    assert training_data_description([]) == {
        "basis": None,
        "sequence": None,
        "sequence_key": None,
        "rank": None,
    }


def test_checkpoint_files(tmp_path):
    assert checkpoint_name(12) == "checkpoint_00000012.pt"
    assert find_last_checkpoint(tmp_path / "none") is None
    for step in (2, 10, 4, 6):
        (tmp_path / checkpoint_name(step)).write_bytes(b"")
    (tmp_path / "best.pt").write_bytes(b"")
    assert find_last_checkpoint(tmp_path).name == checkpoint_name(10)
    removed = prune_checkpoints(tmp_path, keep=2)
    assert sorted(p.name for p in removed) == [checkpoint_name(2), checkpoint_name(4)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt", checkpoint_name(6), checkpoint_name(10)]


def test_engine_warm_up_clipping_pruning_and_checks(tmp_path):
    tr = _trainer(tmp_path, lr_warmup_steps=4)
    lrs = []
    for batch in tr.loader():
        lrs.append(tr.optimizer.param_groups[0]["lr"])
        tr.train_step(batch)
    assert lrs == pytest.approx([2.5e-3, 5e-3, 7.5e-3, 1e-2])  # linear warm-up to lr = 1e-2
    # clipping: with plain SGD (lr 1) the step is exactly the clipped gradient, of norm grad_clip;
    # the reported norm is the one before clipping
    sgd = _trainer(tmp_path / "sgd", optimizer=torch.optim.SGD, lr=1.0, grad_clip=1e-3)
    before = [p.detach().clone() for p in sgd.network.parameters()]
    logs = sgd.train_step(next(iter(sgd.loader())))
    moved = torch.linalg.vector_norm(
        torch.cat([(p.detach() - b).flatten() for p, b in zip(sgd.network.parameters(), before)])
    )
    assert logs["grad_norm"] > 1e-2 and float(moved) == pytest.approx(1e-3, rel=1e-3)
    summary = _trainer(tmp_path / "run", keep_checkpoints=2, checkpoint_every=1).run()
    assert summary["step"] == 4
    names = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert names == [checkpoint_name(3), checkpoint_name(4)]
    ckpt = load_training_checkpoint(tmp_path / "run" / "checkpoints" / checkpoint_name(4))
    assert ckpt["hyper_parameters"]["training"]["optimizer"] == "Adam" and ckpt["grad_scaler"] == {}
    # a network that does not record its build arguments cannot be exported: refused up front
    plain = torch.nn.Conv2d(2, 2, 3)
    with pytest.raises(TypeError, match="hyper_parameters"):
        UNetTrainer(plain, torch.optim.Adam(plain.parameters()), torch.nn.L1Loss(), _pairs(), tmp_path / "x")
    net = build_unet(**TINY)
    with pytest.raises(ValueError, match="optimizer must optimise the network"):
        UNetTrainer(
            net, torch.optim.Adam(torch.nn.Linear(2, 2).parameters()), torch.nn.L1Loss(), _pairs(), tmp_path
        )
    with pytest.raises(FileNotFoundError, match="resume checkpoint"):
        _trainer(tmp_path / "y", resume=tmp_path / "missing.pt").run()
    with pytest.raises(ValueError, match="another network"):
        _trainer(tmp_path / "run", network=build_unet(**{**TINY, "channels": [4, 4]})).run()
    torch.save({"hyper_parameters": {}, "format": "mrf_monai.diffusion/2"}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="format"):
        _trainer(tmp_path / "z", resume=tmp_path / "other.pt").run()
    (tmp_path / "z" / "checkpoints").mkdir(parents=True)
    (tmp_path / "z" / "checkpoints" / checkpoint_name(1)).write_bytes(b"garbage")
    with pytest.raises(WeightsFileError, match=checkpoint_name(1)):
        _trainer(tmp_path / "z").run()


def test_init_from_for_the_unet_and_its_checks(tmp_path):
    """init_from on the shared engine (U-Net): weights and channel scale from the file, a fresh
    optimiser; weights of another format or network are refused with what differs."""
    from mrf_monai.engines.initialise import same_subspace
    from mrf_monai.io.weights import load_weights, save_weights

    _trainer(tmp_path / "a", max_steps=2).run()
    start = tmp_path / "a" / "model_final.pt"
    state, hp = load_weights(start)
    ft = _trainer(tmp_path / "b", init_from=start, train_dataset=_pairs(seed=3))
    assert (
        all(torch.equal(state[k], v) for k, v in ft.network.state_dict().items()) and not ft.optimizer.state
    )
    assert torch.equal(ft.channel_scale, torch.tensor(hp["data"]["channel_scale"]))  # not re-measured
    assert ft.run()["step"] == 4
    _, ft_hp = load_weights(tmp_path / "b" / "model_final.pt")
    assert ft_hp["training"]["init_from"]["step"] == 2 and ft_hp["training"]["loss"] == "mse"
    assert len(ft_hp["training"]["init_from"]["sha256"]) == 16
    save_weights(tmp_path / "d.pt", state, {**hp, "format": "mrf_monai.diffusion/2"})
    with pytest.raises(WeightsFileError, match="format 'mrf_monai.diffusion/2'"):
        _trainer(tmp_path / "c", init_from=tmp_path / "d.pt")
    with pytest.raises(WeightsFileError, match="another network.*channels"):
        _trainer(tmp_path / "c", network=build_unet(**{**TINY, "channels": [4, 4]}), init_from=start)
    # the subspace comparison behind the channel-scale choice
    basis = torch.eye(4, 2, dtype=torch.complex64)
    mine = {"rank": 2, "sequence_key": "k", "basis": basis}
    assert same_subspace(mine, {**mine, "basis": basis + 2e-5}) == (True, [])  # a rebuilt dictionary
    same, what = same_subspace(mine, {**mine, "basis": 1j * basis, "sequence_key": "other"})
    assert not same and what[0] == "sequence k vs other" and "other coordinates" in what[1]
    shifted = torch.roll(basis, 2, dims=0)
    assert same_subspace(mine, {**mine, "basis": shifted})[1] == [
        "subspace (smallest principal cosine 0.0000)"
    ]


DDP_SCRIPT = """
import sys, torch, torch.distributed as dist
from mrf_monai.baselines.unet import UNetTrainer, build_unet
from mrf_monai.engines import default_train_transforms
rank = int(__import__("os").environ["RANK"])
g = torch.Generator().manual_seed(rank)  # each process has its own data
data = [{"image": torch.randn(2, 16, 16, generator=g), "cond": torch.randn(2, 16, 16, generator=g)}
        for _ in range(3)]
net = build_unet(rank=1, channels=[4, 8], strides=[2], num_res_units=1, init_seed=rank)  # DDP syncs them
tr = UNetTrainer(net, torch.optim.Adam(net.parameters(), lr=1e-2), torch.nn.L1Loss(), data, sys.argv[1],
                 max_steps=3, batch_size=2, train_transforms=default_train_transforms(patch_size=(8, 8)),
                 checkpoint_every=3, max_time_s=3600, progress=False, tensorboard=False, num_threads=1)
tr.run()
torch.save({"net": tr.network.state_dict(), "scale": tr.channel_scale},
           f"{sys.argv[1]}/rank{tr.process_rank}.pt")
dist.destroy_process_group()
"""


def test_unet_trainer_ddp_two_processes_gloo(tmp_path):
    """The U-Net trainer on the shared engine under DDP: one channel scale (process 0's, broadcast),
    replicas in sync, the time budget agreed by a collective, one checkpoint with both RNG states."""
    import os
    import subprocess
    import sys

    script = tmp_path / "ddp_unet.py"
    script.write_text(DDP_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        str(script),
    ]
    proc = subprocess.run(cmd + [str(tmp_path / "run")], env=env, capture_output=True, text=True, timeout=110)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0 = torch.load(tmp_path / "run" / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "run" / "rank1.pt", weights_only=True)
    assert torch.equal(r0["scale"], r1["scale"])
    for k, v in r0["net"].items():
        assert torch.equal(v, r1["net"][k]), k
    ckpt = load_training_checkpoint(tmp_path / "run" / "checkpoints" / checkpoint_name(3))
    assert ckpt["hyper_parameters"]["training"]["world_size"] == 2 and len(ckpt["rng"]) == 2


def test_cosine_learning_rate_schedule_and_resume(tmp_path):
    from mrf_monai.engines import lr_factor

    f = lr_factor("cosine", warmup_steps=2, decay_steps=10, min_ratio=0.1)
    assert [f(0), f(1)] == pytest.approx([0.5, 1.0])  # the warm-up
    assert f(6) == pytest.approx(0.55)  # half-way through the cosine: (1 + 0.1) / 2
    assert f(10) == pytest.approx(0.1) and f(50) == pytest.approx(0.1)  # min_ratio at and after the end
    assert all(f(s) >= f(s + 1) for s in range(2, 12))  # never rises after the warm-up
    assert lr_factor("constant", 0)(123) == 1.0
    for kwargs, match in (
        ({"schedule": "step"}, "lr_schedule must be one of"),
        ({"schedule": "cosine", "warmup_steps": 5, "decay_steps": 5}, "above lr_warmup_steps"),
        ({"schedule": "cosine", "decay_steps": 9, "min_ratio": 1.5}, "lr_min_ratio"),
    ):
        with pytest.raises(ValueError, match=match):
            lr_factor(**kwargs)
    # in the trainer: the optimiser sees the schedule, the weights record it, and a resumed run
    # continues on the uninterrupted run's learning rates
    cosine = {"lr_schedule": "cosine", "lr_min_ratio": 0.0, "max_steps": 4}
    full = _trainer(tmp_path / "full", checkpoint_every=2, **cosine)
    lrs = []
    for batch in full.loader():
        lrs.append(full.optimizer.param_groups[0]["lr"])
        full.train_step(batch)
    quarter = 0.5 * np.cos(np.pi / 4)
    assert lrs == pytest.approx([1e-2, 1e-2 * (0.5 + quarter), 5e-3, 1e-2 * (0.5 - quarter)])
    assert full.training_hyper_parameters()["lr_schedule"] == "cosine"
    _trainer(tmp_path / "part", checkpoint_every=2, max_time_s=1e-9, **cosine).run()  # stops after step 1
    resumed = _trainer(tmp_path / "part", **cosine)
    resumed.load_checkpoint(resumed.resume_path())
    assert resumed.step == 1 and resumed.optimizer.param_groups[0]["lr"] == pytest.approx(lrs[1])
