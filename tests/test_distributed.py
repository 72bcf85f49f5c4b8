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


def _method_worker(rank, world, init_file, out_dir, method_name, gather):
    import repro.methods as methods
    from tests.test_methods import tiny_method, views

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    seen = []
    loss_fn = methods.METHODS[method_name].loss_fn

    def recording(z1, z2, *args, **kwargs):
        seen.append(z1.shape[0])
        return loss_fn(z1, z2, *args, **kwargs)

    methods.METHODS[method_name].loss_fn = staticmethod(recording)
    method = tiny_method(method_name, f"train.gather_embeddings={str(gather).lower()}")
    method.set_progress(0, 10, 100)
    x = [v[rank * 12:(rank + 1) * 12] for v in views()]   # each rank's shard of the 24 images
    method(x)
    torch.save(seen, os.path.join(out_dir, f"seen{rank}.pt"))
    dist.destroy_process_group()


@pytest.mark.parametrize("name", ["frossl", "vicreg"])
@pytest.mark.parametrize("gather", [True, False])
def test_the_method_loss_sees_the_global_batch_only_with_gather_embeddings(tmp_path, name, gather):
    mp.start_processes(_method_worker, args=(2, str(tmp_path / "init"), str(tmp_path), name, gather), nprocs=2,
                       start_method="spawn")
    for rank in range(2):
        assert torch.load(tmp_path / f"seen{rank}.pt") == [24 if gather else 12]
