#!/usr/bin/env python
"""GPU memory of one training step, counted on a machine without a GPU: model state plus the activations autograd
keeps for backward, extrapolated to a GPU batch.

    python -m evals.benchmarks.memory --stage first_stage --config configs/autoencoder/ucf101.yaml --target_batch 8
    python -m evals.benchmarks.memory --stage ddpm --config configs/latent-diffusion/ucf101.yaml \
        --first_config configs/autoencoder/ucf101.yaml --target_batch 48

Method (counting, not timing): the stage's real task (model, optimizer, EMA, loss networks, discriminators) runs one
training step on the CPU under bf16 autocast, as on a GPU (this CPU computes bf16 natively). A saved-tensors hook
follows the bytes of the distinct tensors autograd keeps for backward and reports their peak: the activations, which
are what grows with the batch. Two batch sizes give the bytes per sample. Model state is counted from the parameters: fp32 weights,
gradients, AdamW's two moments and the EMA copy (20 bytes a parameter; the discriminators' and the static prior's
included). Estimate = state + target_batch x activations per sample, plus 25% for what the count leaves out
(the transient buffers of a layer being computed or recomputed under gradient checkpointing, the caching allocator's
rounding), plus a CUDA context. A run on a GPU logs the true peak (peak_mem_gib in stats.jsonl).
"""
from __future__ import annotations

import argparse
import json
import sys

import torch

CUDA_CONTEXT_GIB = 0.8
HEADROOM = 1.25
STATE_BYTES_PER_PARAMETER = 20  # fp32 weight + gradient + AdamW m and v + EMA shadow


def build_task(stage: str, config: str, first_config: str | None, overrides: list[str]):
    from omegaconf import OmegaConf

    from tools.core.config import apply_overrides, load_yaml
    from tools.core.distributed import DistContext

    cfg = apply_overrides(load_yaml(config), overrides)
    cfg.run = {"exp": stage, "seed": 0, "data": "FOLDER"}
    cfg.train.amp, cfg.train.cpu_bf16 = "bf16", True
    ctx = DistContext(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
    if stage == "first_stage":
        from tools.train.first_stage import FirstStageTask

        return cfg, FirstStageTask(cfg, ctx)
    from models.first_stage import build_first_stage
    from tools.train.ddpm import DiffusionTask

    first_cfg = OmegaConf.to_container(load_yaml(first_config), resolve=True)
    record = {"config": {"model": first_cfg["model"], "data": first_cfg["data"]},
              "weights": build_first_stage(first_cfg).state_dict(), "path": first_config}
    return cfg, DiffusionTask(cfg, ctx, record)


def trained_parameters(task) -> int:
    """Parameters an optimizer updates: the model's, the discriminators', the static prior's."""
    optimizers = [value for value in vars(task).values() if isinstance(value, torch.optim.Optimizer)]
    return sum(p.numel() for optimizer in optimizers for group in optimizer.param_groups for p in group["params"])


def saved_activation_bytes(task, cfg, batch: int) -> int:
    """Peak bytes of the tensors autograd keeps for backward during one training step (a storage counted once while
    it is kept; the static prior's and the discriminators' backward passes come after the main one has freed its)."""
    import weakref

    clip = {"frames": torch.rand(batch, int(cfg.data.frames), 3, int(cfg.data.height), int(cfg.data.width))}
    if hasattr(task, "measure_scales") and task.scales is None:
        task.measure_scales([clip])
    kept: dict[int, int] = {}
    totals = {"now": 0, "peak": 0}

    def release(pointer: int) -> None:
        totals["now"] -= kept.pop(pointer, 0)

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        pointer = tensor.untyped_storage().data_ptr()
        if pointer not in kept:
            kept[pointer] = tensor.untyped_storage().nbytes()
            totals["now"] += kept[pointer]
            totals["peak"] = max(totals["peak"], totals["now"])
            weakref.finalize(tensor, release, pointer)
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        task.train_step(clip, 10**6)  # a late step: the GAN terms are on, as in the finetune
    return totals["peak"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stage", choices=["first_stage", "ddpm"], required=True)
    parser.add_argument("--config", required=True)
    parser.add_argument("--first_config", default=None, help="ddpm: the stage-1 config whose latents it diffuses")
    parser.add_argument("--batches", type=int, nargs=2, default=[1, 2], help="the two counted batch sizes")
    parser.add_argument("--target_batch", type=int, required=True)
    parser.add_argument("--config_mod", nargs="*", default=[])
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    cfg, task = build_task(args.stage, args.config, args.first_config, args.config_mod)
    counts = {batch: saved_activation_bytes(task, cfg, batch) / 2**30 for batch in args.batches}
    small, large = args.batches
    per_sample = (counts[large] - counts[small]) / (large - small)
    parameters = trained_parameters(task)
    state = parameters * STATE_BYTES_PER_PARAMETER / 2**30
    activations = counts[small] + (args.target_batch - small) * per_sample
    estimate = (state + activations) * HEADROOM + CUDA_CONTEXT_GIB
    for batch, gib in counts.items():
        print(f"batch {batch}: {gib:.2f} GiB of saved activations")
    print(f"{parameters / 1e6:.1f}M trained parameters: {state:.2f} GiB of state; {per_sample:.2f} GiB of activations "
          f"per sample -> batch {args.target_batch}: about {estimate:.1f} GiB on one GPU")
    print(json.dumps({"config": args.config, "stage": args.stage, "activations_gib": counts,
                      "per_sample_gib": per_sample, "parameters": parameters, "state_gib": state,
                      "target_batch": args.target_batch, "estimate_gib": estimate}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
