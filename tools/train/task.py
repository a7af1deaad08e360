"""What every stage's training task holds and does the same way (as edm2's training state): the model, its
DDP wrapper, AdamW, the grad scaler and the EMA (built after the wrap), one optimizer step, the inference
copy, and their checkpoint state. A stage subclasses it and adds its loss and its own state."""
from __future__ import annotations

from typing import Any, Callable

import torch
from omegaconf import DictConfig
from torch import nn

from tools.core.distributed import DistContext, all_reduce_mean, make_grad_scaler, unwrap, wrap_model
from tools.core.runs import LAST_CHECKPOINT
from tools.train.ema import make_ema
from tools.train.loop import StageRun, optimizer_step


class StageTask:
    """model (bare), wrapped (DDP when distributed), optimizer, scaler and ema (None when train.ema_decay is 0)."""

    def __init__(self, cfg: DictConfig, ctx: DistContext, model: nn.Module, ema_warmup: bool = False) -> None:
        self.cfg, self.ctx = cfg, ctx
        self.model = model.to(ctx.device)
        tcfg = cfg.train
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=float(tcfg.lr),
                                           betas=tuple(tcfg.get("betas") or (0.9, 0.999)),
                                           weight_decay=float(tcfg.get("weight_decay") or 0))
        self.scaler = make_grad_scaler(ctx, tcfg.get("amp"))
        self.wrapped = wrap_model(self.model, ctx)
        # train.ema_warmup: short CPU runs forget the random initial weights quickly (decay (1+n)/(10+n) at first)
        self.ema = make_ema(self.wrapped, float(tcfg.get("ema_decay") or 0),
                            warmup=ema_warmup or bool(tcfg.get("ema_warmup", False)))

    def step(self, loss: torch.Tensor, after_backward: Callable[[], None] | None = None) -> None:
        """The optimizer step on `loss` (train.grad_clip applies), then the EMA update; after_backward as in
        optimizer_step (e.g. averaging by hand the gradients of a module called outside the DDP wrapper)."""
        optimizer_step(self.optimizer, self.scaler, loss, self.model.parameters(),
                       float(self.cfg.train.get("grad_clip") or 0), after_backward)
        if self.ema is not None:
            self.ema.update(self.model)

    def inference_model(self) -> nn.Module:
        """The weights validation and prediction use: a copy holding the EMA weights, or the live model."""
        return self.ema.inference_copy(self.wrapped) if self.ema is not None else unwrap(self.model)

    def state_dict(self) -> dict[str, Any]:
        state = {"model": unwrap(self.model).state_dict(), "optimizer": self.optimizer.state_dict(),
                 "scaler": self.scaler.state_dict()}
        if self.ema is not None:
            state["ema"] = self.ema.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any], weights_only: bool = False) -> None:
        """Restore what state_dict returned (weights_only: the weights and EMA, not the optimizer)."""
        unwrap(self.model).load_state_dict(state["model"])
        if self.ema is not None and state.get("ema"):
            self.ema.load_state_dict(state["ema"])
        if not weights_only:
            self.optimizer.load_state_dict(state["optimizer"])
            self.scaler.load_state_dict(state.get("scaler") or {})


def measure_scales_once(task: Any, stage: StageRun, make_batches: Any, default_batches: int) -> None:
    """A new run measures its scale factors from its first `train.scale_batches` batches; a resumed one has
    them from its checkpoint. The task provides measure_scales(batches), scale_record() -> {name: value} and
    set_scale_record(record).

    Each rank measures its own shard, so the factors are averaged over ranks: the checkpoint keeps one set,
    and a resumed rank must scale exactly as it did before the interruption."""
    if (stage.run_dir / LAST_CHECKPOINT).exists():
        return
    count = int(stage.cfg.train.get("scale_batches", default_batches))
    task.measure_scales([batch for batch, _ in zip(make_batches(0), range(count))])
    task.set_scale_record(all_reduce_mean(task.scale_record(), stage.ctx))
    if stage.ctx.is_main:
        print("scale factors: " + ", ".join(f"{k} {v:.4f}" for k, v in task.scale_record().items()))
