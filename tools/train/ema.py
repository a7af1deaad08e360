"""Exponential moving average of model weights, used for sampling.

Shadow copies are float32 whatever the training dtype, keyed by the unwrapped module's names so
a checkpoint written under DDP loads on one device and back. Floating-point buffers (batch-norm running
statistics) are averaged with the same decay, integer ones (counters) copied: the live statistics follow the
last ~10 batches (momentum 0.1), so next to weights averaged over ~1/(1-decay) steps they made the averaged
model's scores jump between checkpoints (the object classifier's val accuracy by 0.02-0.03 from one
50-step checkpoint to the next; statistics recomputed for its final weights: 0.940 -> 0.961).
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from tools.core.distributed import unwrap
from tools.core.errors import UserError


class EMA:
    """shadow <- decay * shadow + (1 - decay) * param after each optimizer step.

    With warmup, the decay used at update n is min(decay, (1 + n) / (10 + n)) so early, random
    weights are forgotten quickly.
    """

    def __init__(self, model: nn.Module, decay: float = 0.9999, warmup: bool = False) -> None:
        if not 0.0 <= decay < 1.0:
            raise UserError(f"train.ema_decay={decay} must lie in [0, 1).")
        self.decay = float(decay)
        self.warmup = bool(warmup)
        self.n_updates = 0
        model = unwrap(model)
        self.shadow = {k: v.detach().float().clone() for k, v in model.named_parameters()}
        self.buffers = {k: v.detach().clone() for k, v in model.named_buffers()}

    def current_decay(self) -> float:
        if not self.warmup:
            return self.decay
        return min(self.decay, (1 + self.n_updates) / (10 + self.n_updates))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        decay = self.current_decay()
        model = unwrap(model)
        for name, param in model.named_parameters():
            self.shadow[name].lerp_(param.detach().float(), 1.0 - decay)
        for name, buffer in model.named_buffers():
            if buffer.is_floating_point():
                self.buffers[name].lerp_(buffer.detach().to(self.buffers[name].dtype), 1.0 - decay)
            else:
                self.buffers[name].copy_(buffer.detach())
        self.n_updates += 1

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        """Write the averaged weights into `model` (keep a copy of the live weights if you need them)."""
        model = unwrap(model)
        for name, param in model.named_parameters():
            param.copy_(self.shadow[name].to(param.dtype))
        for name, buffer in model.named_buffers():
            buffer.copy_(self.buffers[name])

    def inference_copy(self, model: nn.Module) -> nn.Module:
        """A separate copy of `model` holding the averaged weights, in eval mode; the live weights stay untouched."""
        averaged = copy.deepcopy(unwrap(model))
        self.copy_to(averaged)
        return averaged.eval()

    def state_dict(self) -> dict:
        return {"decay": self.decay, "warmup": self.warmup, "n_updates": self.n_updates,
                "shadow": dict(self.shadow), "buffers": dict(self.buffers)}

    def load_state_dict(self, state: dict) -> None:
        missing = set(self.shadow) ^ set(state["shadow"])
        if missing:
            raise UserError(
                f"EMA weights in the checkpoint do not match the model ({len(missing)} names differ, "
                f"e.g. {sorted(missing)[:3]}): the checkpoint was written for another model config."
            )
        self.decay, self.warmup, self.n_updates = float(state["decay"]), bool(state["warmup"]), int(state["n_updates"])
        for name, value in state["shadow"].items():
            self.shadow[name] = value.detach().float().clone().to(self.shadow[name].device)
        for name, value in state["buffers"].items():
            self.buffers[name] = value.detach().clone().to(self.buffers[name].device)


def make_ema(wrapped: nn.Module, decay: float, warmup: bool = False) -> EMA | None:
    """The EMA of a model that is already wrapped for DDP (DDP broadcasts rank 0's weights at wrapping, so
    every rank's average starts from the same weights); None when decay is 0 (EMA off)."""
    return EMA(wrapped, decay=decay, warmup=warmup) if decay > 0 else None
