"""One code path for one CPU, one GPU and `torchrun --nproc_per_node=N`.

Distributed mode is switched on by the environment torchrun sets (RANK, WORLD_SIZE, LOCAL_RANK); no
home-made launcher. gloo on CPU, nccl on GPU. `unwrap` is the only way code reaches the bare model, so
nothing ever calls `.module` on a model that was not wrapped.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel


@dataclass(frozen=True)
class DistContext:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str | None = None) -> DistContext:
    """Initialise from torchrun's environment, or return a single-process context."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() if device in (None, "auto") else device.startswith("cuda")
    if use_cuda:
        torch.cuda.set_device(local_rank)
        chosen = torch.device("cuda", local_rank)
    else:
        chosen = torch.device("cpu")
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return DistContext(rank=rank, world_size=world_size, local_rank=local_rank, device=chosen)


def shutdown_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def wrap_model(model: nn.Module, ctx: DistContext) -> nn.Module:
    """DDP-wrap when running under torchrun; the bare model otherwise."""
    if not ctx.distributed or not any(p.requires_grad for p in model.parameters()):
        return model
    device_ids = [ctx.local_rank] if ctx.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids)


def unwrap(model: nn.Module) -> nn.Module:
    """The bare module under DDP/DataParallel and/or torch.compile wrappers (safe on an unwrapped model)."""
    while True:
        if isinstance(model, (DistributedDataParallel, nn.DataParallel)):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


def all_reduce_mean(values: dict[str, float], ctx: DistContext) -> dict[str, float]:
    """Average logged scalars over ranks (identity in one process)."""
    if not ctx.distributed or not values:
        return dict(values)
    keys = sorted(values)
    packed = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=ctx.device)
    dist.all_reduce(packed, op=dist.ReduceOp.SUM)
    packed /= ctx.world_size
    return {k: float(v) for k, v in zip(keys, packed.tolist())}


def average_gradients(module: torch.nn.Module, ctx: DistContext) -> None:
    """All-reduce gradients by hand for modules DDP does not see: called several times per step (DDP allows one
    call), or called on their own, outside the wrapped model's forward."""
    if not ctx.distributed:
        return
    for param in module.parameters():
        if param.grad is not None:
            dist.all_reduce(param.grad)
            param.grad /= ctx.world_size


def barrier(ctx: DistContext) -> None:
    if ctx.distributed:
        dist.barrier()


@lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 in hardware (AVX512-BF16 or AMX); elsewhere bf16 is emulated and slower."""
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def autocast(ctx: DistContext, amp: str | None, cpu_bf16: bool = False) -> contextlib.AbstractContextManager:
    """bf16 (or fp16) autocast on GPU. On CPU float32, unless `cpu_bf16` (the config's `train.cpu_bf16`) and
    amp is bf16 and the CPU has native bf16: then bf16 autocast on CPU too (the segmenter's convolutions
    train about 1.6x faster on such a CPU)."""
    if amp in (None, "none", "fp32", False):
        return contextlib.nullcontext()
    if ctx.device.type != "cuda":
        if cpu_bf16 and str(amp) == "bf16" and cpu_has_native_bf16():
            return torch.autocast(device_type="cpu", dtype=torch.bfloat16)
        return contextlib.nullcontext()
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[str(amp)]
    return torch.autocast(device_type="cuda", dtype=dtype)


def train_autocast(ctx: DistContext, train_cfg: Any) -> contextlib.AbstractContextManager:
    """autocast as a stage's `train` section asks: train.amp, and train.cpu_bf16 on a CPU."""
    return autocast(ctx, train_cfg.get("amp"), bool(train_cfg.get("cpu_bf16", False)))


def make_grad_scaler(ctx: DistContext, amp: str | None) -> torch.amp.GradScaler:
    """A loss scaler that is only active for fp16 on GPU (bf16 does not need one)."""
    return torch.amp.GradScaler("cuda", enabled=ctx.device.type == "cuda" and amp == "fp16")
