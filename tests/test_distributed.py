"""A 2-process gloo job on CPU: DDP averages gradients across ranks; helpers behave in both modes."""
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from tools.core.distributed import DistContext, all_reduce_mean, init_distributed, shutdown_distributed, unwrap, wrap_model


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _batch_for(rank: int):
    gen = torch.Generator().manual_seed(100 + rank)
    return torch.randn(4, 3, generator=gen), torch.randn(4, 1, generator=gen)


def _worker(rank: int, world_size: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank))
    ctx = init_distributed("cpu")
    torch.manual_seed(0)  # same initial weights on both ranks
    model = wrap_model(torch.nn.Linear(3, 1), ctx)
    x, y = _batch_for(rank)
    torch.nn.functional.mse_loss(model(x), y).backward()
    grads = [p.grad.clone() for p in unwrap(model).parameters()]
    logged = all_reduce_mean({"loss": float(rank)}, ctx)
    torch.save({"grads": grads, "logged": logged, "wrapped": model is not unwrap(model)},
               os.path.join(out_dir, f"rank{rank}.pt"))
    shutdown_distributed()


def test_two_process_gloo_averages_gradients(tmp_path):
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    results = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    torch.manual_seed(0)
    reference = torch.nn.Linear(3, 1)
    expected = []
    for rank in range(2):
        reference.zero_grad()
        x, y = _batch_for(rank)
        torch.nn.functional.mse_loss(reference(x), y).backward()
        expected.append([p.grad.clone() for p in reference.parameters()])
    mean_grads = [(a + b) / 2 for a, b in zip(*expected)]
    for result in results:
        assert result["wrapped"]
        assert result["logged"]["loss"] == pytest.approx(0.5)
        for got, want in zip(result["grads"], mean_grads):
            torch.testing.assert_close(got, want)


def test_single_process_is_unwrapped_and_unwrap_is_safe():
    ctx = DistContext(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
    model = torch.nn.Linear(2, 2)
    assert wrap_model(model, ctx) is model and unwrap(model) is model
    assert all_reduce_mean({"a": 1.5}, ctx) == {"a": 1.5}


def test_cpu_autocast_only_when_asked_and_the_cpu_has_native_bf16(monkeypatch):
    import tools.core.distributed as distributed

    cpu = DistContext(0, 1, 0, torch.device("cpu"))
    layer = torch.nn.Linear(4, 4)
    x = torch.randn(2, 4)
    for native in (True, False):
        monkeypatch.setattr(distributed, "cpu_has_native_bf16", lambda native=native: native)
        with distributed.autocast(cpu, "bf16"):
            assert layer(x).dtype == torch.float32  # the GPU setting alone never changes CPU numerics
        with distributed.autocast(cpu, "bf16", cpu_bf16=True):
            assert layer(x).dtype == (torch.bfloat16 if native else torch.float32)
        with distributed.autocast(cpu, None, cpu_bf16=True):
            assert layer(x).dtype == torch.float32
