"""Two gloo processes on CPU: the gathered loss gives one process's gradients; sharded loss sees its shard."""
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from repro.device import resolve_device
from repro.distributed import DistEnv, gather_with_grad
from repro.cli import UserError
from repro.losses.frossl import frossl_loss
from repro.optim import build_optimizer


def _data():
    g = torch.Generator().manual_seed(0)
    return torch.randn(8, 6, generator=g, dtype=torch.float64), torch.randn(8, 6, generator=g, dtype=torch.float64), \
        torch.randn(6, 5, generator=g, dtype=torch.float64)


def _worker(rank, world, init_file, out_dir, gather):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    x1, x2, w0 = _data()
    w = w0.clone().requires_grad_(True)
    shard = slice(rank * 4, (rank + 1) * 4)
    z1, z2 = x1[shard] @ w, x2[shard] @ w
    if gather:
        z1, z2 = gather_with_grad(z1), gather_with_grad(z2)
    loss, _ = frossl_loss(z1, z2)
    loss.backward()
    grad = w.grad.clone()
    dist.all_reduce(grad)  # what DDP does: average over ranks
    grad /= world
    torch.save({"loss": loss.detach(), "grad": grad}, os.path.join(out_dir, f"rank{rank}.pt"))
    dist.destroy_process_group()


def _run_two(tmp_path, gather):
    mp.start_processes(_worker, args=(2, str(tmp_path / "init"), str(tmp_path), gather), nprocs=2,
                       start_method="spawn")
    return [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]


def test_gathered_loss_matches_one_process_on_the_global_batch(tmp_path):
    x1, x2, w0 = _data()
    w = w0.clone().requires_grad_(True)
    loss, _ = frossl_loss(x1 @ w, x2 @ w)
    loss.backward()
    results = _run_two(tmp_path, gather=True)
    for r in results:
        assert torch.allclose(r["loss"], loss.detach(), atol=1e-10)
        assert torch.allclose(r["grad"], w.grad, atol=1e-10)


def test_without_gather_each_rank_sees_only_its_shard(tmp_path):
    x1, x2, w0 = _data()
    results = _run_two(tmp_path, gather=False)
    for rank, r in enumerate(results):
        shard = slice(rank * 4, (rank + 1) * 4)
        expected, _ = frossl_loss(x1[shard] @ w0, x2[shard] @ w0)
        assert torch.allclose(r["loss"], expected, atol=1e-10)
    global_loss, _ = frossl_loss(x1 @ w0, x2 @ w0)
    assert not torch.allclose(results[0]["loss"], global_loss)


def test_gather_is_identity_for_one_process():
    x = torch.randn(3, 2)
    assert gather_with_grad(x) is x


def test_more_processes_than_gpus_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(UserError, match="lower GPUS"):
        resolve_device("cuda", DistEnv(rank=3, local_rank=3, world_size=4))
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    with pytest.raises(UserError, match="no CUDA GPU"):
        resolve_device("cuda")


def _train_steps(name: str, world: int, rank: int, steps: int) -> dict:
    """`steps` optimizer steps of a tiny `name` on fixed views (this rank's slice of the 24 images)
    as the trainer takes them: BatchNorm made global and DDP without buffer broadcasts (repro/train.py)
    when there are several processes."""
    from torch import nn

    from repro.distributed import global_batchnorm
    from repro.seeds import step_seed
    from tests.test_methods import step, tiny_method, views

    method = tiny_method(name)
    if world > 1:
        method = global_batchnorm(method)
    optimizer = build_optimizer("sgd", method.param_groups(), lr=0.05, weight_decay=1e-4, momentum=0.9)
    model = nn.parallel.DistributedDataParallel(method, broadcast_buffers=False) if world > 1 else method
    per = 24 // world
    for n in range(steps):
        x = [v[rank * per:(rank + 1) * per] for v in views(seed=n)]
        torch.manual_seed(step_seed(0, n, 0))   # as the trainer, for W-MSE's sub-batches
        step(Forward(model, method), optimizer, x, n, steps_per_epoch=1, total=steps)
    return {k: v.detach().clone() for k, v in method.state_dict().items()}


class Forward:
    """`step` (tests/test_methods.py) on a DDP-wrapped method: the forward through DDP, the hooks on the method."""

    def __init__(self, model, method):
        self.model, self.method = model, method

    def __call__(self, x):
        return self.model(x)

    def __getattr__(self, name):
        return getattr(self.method, name)


def _equivalence_worker(rank, world, init_file, out_dir, names, steps, dtype):
    torch.set_num_threads(1)
    torch.set_default_dtype(dtype)   # the model, the views, the losses (at least fp32: fp64 stays)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    results = {name: _train_steps(name, world, rank, steps) for name in names}
    dist.destroy_process_group()
    alone = {name: _train_steps(name, 1, 0, steps) for name in names[rank::world]}   # one process: half the methods each
    torch.save({"two": results, "one": alone}, os.path.join(out_dir, f"weights{rank}.pt"))


def _two_against_one(tmp_path, steps: int, dtype: torch.dtype, tolerance: float) -> None:
    import repro.methods as methods
    from repro.faults import largest_difference
    names = sorted(methods.METHODS)
    mp.start_processes(_equivalence_worker, args=(2, str(tmp_path / "init"), str(tmp_path), names, steps, dtype),
                       nprocs=2, start_method="spawn")
    ranks = [torch.load(tmp_path / f"weights{r}.pt") for r in range(2)]
    alone = {**ranks[0]["one"], **ranks[1]["one"]}
    assert sorted(alone) == names
    for name in names:
        started = tiny_method_state(name)
        moved = largest_difference(alone[name], started)
        assert moved > 1e-4, name   # the steps changed the weights: the comparison means something
        for weights in (r["two"][name] for r in ranks):
            worst = largest_difference(weights, alone[name])
            assert worst < tolerance, f"{name}: 2 processes differ from 1 by {worst:.2e}"


def test_two_processes_train_every_method_to_the_one_process_weights(tmp_path):
    """train.loss_batch=0 (every CIFAR/STL-10 config): each loss sees the global batch of 24 although
    each process holds 12, so 2 gloo processes reach the weights of one process after an SGD step,
    for every method (momentum encoders included), within float32 summation-order noise (5e-5: DINO
    2.9e-5: its teacher temperature 0.07 scales the rounding by 14; the others below 2e-5). More
    steps: the float64 test below (in float32 that noise grows with each step)."""
    _two_against_one(tmp_path, steps=1, dtype=torch.float32, tolerance=5e-5)


@pytest.mark.slow
def test_two_processes_match_one_after_three_steps_in_float64(tmp_path):
    """The same for 3 SGD steps (momentum, weight decay; EMA targets, queues, centres), within 1e-9 in
    float64: the two differ only in summation order (1e-16), which grows to ~1e-13 in 3 steps. In
    float32 its 1e-7 grows to 2e-2 in 3 steps for Barlow Twins (BYOL, DINO: 1e-4) on this batch of 24;
    in float64 the same comparison agrees to 1e-13: rounding, not a difference in what is trained.
    Slow: float64 convolutions on CPU, 13 methods (minutes on 2 cores)."""
    _two_against_one(tmp_path, steps=3, dtype=torch.float64, tolerance=1e-9)


# repro.train with every tensor in float64: the default dtype, and the loader's images cast
FLOAT64_TRAIN = """import runpy, sys, torch
torch.set_default_dtype(torch.float64)
from repro import device
images = device.DeviceSetup.images
device.DeviceSetup.images = lambda self, v: images(self, v).double()
sys.argv = ['repro.train', *sys.argv[1:]]
runpy.run_module('repro.train', run_name='__main__', alter_sys=True)
"""


@pytest.mark.slow
def test_the_whole_trainer_on_two_processes_trains_the_one_process_weights_in_float64(tmp_path):
    """The trainer's whole path (loader split, LARS, the online classifier, GlobalBatchNorm, DDP) on 2
    gloo processes against 1, 3 steps of FroSSL on the digits, in float64: equal within 1e-10
    (measured 3e-14). In float32 the same runs differ by 6.3e-3 (docs/slurm.md): rounding, grown by
    3 steps, not a difference in what is trained."""
    import subprocess
    import sys

    from repro.faults import final_weights, largest_difference
    from tests.conftest import ROOT
    from tests.test_targets import TINY
    args = ["repro/configs/cifar10/frossl.yaml", "name=f64", "seed=0", "optim.epochs=1", *TINY.split(),
            "train.log_every=1", "data.subset=192"]          # 3 steps of the global batch of 64
    script = tmp_path / "train64.py"
    script.write_text(FLOAT64_TRAIN)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    for launcher, out in (([sys.executable], "one"), (torchrun, "two")):
        done = subprocess.run([*launcher, str(script), *args, f"out_dir={tmp_path / out}"], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, done.stderr[-3000:]
    one, two = (final_weights(tmp_path / out / "f64") for out in ("one", "two"))
    assert next(iter(one.values())).dtype == torch.float64
    worst = largest_difference(one, two)
    assert worst < 1e-10, worst


def tiny_method_state(name):
    from tests.test_methods import tiny_method
    return {k: v.detach().clone() for k, v in tiny_method(name).state_dict().items()}


def _per_process_worker(rank, world, init_file, out_dir):
    from tests.test_methods import tiny_method, views
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    seen = {}
    for loss_batch in (0, 12):
        method = tiny_method("frossl", f"train.loss_batch={loss_batch}")
        recorded = []
        method.loss_fn = lambda z1, z2, **kw: (recorded.append(z1.shape[0]), frossl_loss(z1, z2, **kw))[1]
        method.set_progress(0, 10, 100)
        method([v[rank * 12:(rank + 1) * 12] for v in views()])
        seen[loss_batch] = recorded
    torch.save(seen, os.path.join(out_dir, f"seen{rank}.pt"))
    dist.destroy_process_group()


def test_the_loss_sees_the_global_batch_unless_loss_batch_is_per_process(tmp_path):
    mp.start_processes(_per_process_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2,
                       start_method="spawn")
    for rank in range(2):
        assert torch.load(tmp_path / f"seen{rank}.pt") == {0: [24], 12: [12]}


def test_a_changed_loss_batch_is_refused_or_planned_apart_and_not_comparable(tmp_path):
    """The trainer's and the preflight's one check (repro.config.loss_batch_problem), the planner's
    per-process runs (-lb<N>, NOT-COMPARABLE) and the check table's reason."""
    from repro.config import load_config, loss_batch_problem
    from repro.experiments.options import Options
    from repro.experiments.collect import comparable
    from repro.experiments.plan import run_spec
    from repro.experiments.table import EXPERIMENTS
    from tests.conftest import ROOT

    imagenet = load_config(ROOT / "repro/configs/imagenet/frossl.yaml")
    assert loss_batch_problem(imagenet, 4) == ""
    assert "GPUS x NNODES = 4" in loss_batch_problem(imagenet, 2)
    cifar = load_config(ROOT / "repro/configs/cifar10/wmse.yaml")
    assert all(loss_batch_problem(cifar, w) == "" for w in (1, 2, 4, 8))   # the global batch: any split
    wmse = loss_batch_problem(load_config(ROOT / "repro/configs/cifar10/wmse.yaml", ["train.loss_batch=64"]), 4)
    assert "whitening_size=128" in wmse and "train.loss_batch=0" in wmse
    assert loss_batch_problem(load_config(ROOT / "repro/configs/cifar10/byol.yaml"), 2) == ""   # momentum encoder too

    figure4, table2 = EXPERIMENTS["figure4"], EXPERIMENTS["table2"]
    four, two = Options(out=tmp_path, gpus=4), Options(out=tmp_path, gpus=2)
    assert run_spec(figure4, four, "frossl", "imagenet", 0).name == "imagenet-frossl-seed0"
    spec = run_spec(figure4, two, "frossl", "imagenet", 0)
    assert spec.name.endswith("-lb112") and "train.loss_batch=112" in spec.overrides(two)
    assert run_spec(table2, two, "frossl", "cifar10", 0).name == "cifar10-frossl-seed0"   # gathered: the same run
    assert run_spec(table2, two, "byol", "cifar10", 0).name == "cifar10-byol-seed0"

    for spec_, opts in ((spec, two), (run_spec(figure4, four, "frossl", "imagenet", 0), four)):
        run = spec_.run_dir(opts)
        run.mkdir(parents=True)
        from repro.config import save_config
        save_config(load_config(spec_.config, spec_.overrides(opts)), run / "config.yaml")
    ok, reason = comparable(spec, two)
    assert not ok and "each loss saw 112 samples, the paper setting 56" in reason
    assert comparable(run_spec(figure4, four, "frossl", "imagenet", 0), four) == (True, "")
