"""Learning-rate schedules: a warmup and a decay, as pure functions of the step and of training progress.

`train.lr_schedule` picks the decay (`constant`, the default, leaves the optimizers untouched; `cosine`;
`linear`), `train.lr_warmup_steps` a linear warmup, `train.lr_final_fraction` where the decay ends (x train.lr).
Progress runs from 0 to 1 over the run's budget: `train.max_steps`, or `train.max_minutes` of training time
when that comes first. A time budget is how every CPU run here is sized (the quick start, the benchmarks), and
without a decay to its end the last weights are whatever the constant rate's noise left (the segmenter's
last and best checkpoints differed by 0.05 Jaccard). Training time is counted over all resumed invocations
(it is kept in the checkpoint), so a run resumed after its budget continues at the final rate. A schedule on
minutes depends on the machine's speed; `max_steps` alone keeps runs bit-reproducible.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

import torch

from tools.core.errors import UserError

SCHEDULES = ("constant", "cosine", "linear")


@dataclass(frozen=True)
class LRSchedule:
    kind: str = "constant"
    warmup_steps: int = 0
    final_fraction: float = 0.0

    @classmethod
    def from_config(cls, tcfg: Mapping[str, Any]) -> "LRSchedule":
        """The schedule of a `train` config section (absent keys: no schedule)."""
        kind = str(tcfg.get("lr_schedule") or "constant")
        if kind not in SCHEDULES:
            raise UserError(f"train.lr_schedule={kind!r} is not a schedule; use one of {', '.join(SCHEDULES)}")
        warmup = int(tcfg.get("lr_warmup_steps") or 0)
        final = float(tcfg.get("lr_final_fraction") or 0.0)
        if warmup < 0 or not 0.0 <= final <= 1.0:
            raise UserError(f"train.lr_warmup_steps={warmup} must be 0 or more and train.lr_final_fraction={final} "
                            f"within [0, 1]")
        return cls(kind, warmup, final)

    @property
    def active(self) -> bool:
        return self.kind != "constant" or self.warmup_steps > 0

    def factor(self, step: int, progress: float) -> float:
        """The multiplier of the base learning rate for the step about to run (0-based) at `progress` in [0, 1]."""
        warm = min(1.0, (step + 1) / self.warmup_steps) if self.warmup_steps > 0 else 1.0
        done = min(max(progress, 0.0), 1.0)
        if self.kind == "cosine":
            decay = 0.5 * (1.0 + math.cos(math.pi * done))
        elif self.kind == "linear":
            decay = 1.0 - done
        else:
            decay = 1.0
        return warm * (self.final_fraction + (1.0 - self.final_fraction) * decay)


def training_progress(step: int, max_steps: int, trained_seconds: float, max_minutes: float | None) -> float:
    """How far through its budget a run is: the further of steps and training time (when a time budget is set)."""
    by_steps = step / max(1, max_steps)
    by_time = trained_seconds / (60.0 * max_minutes) if max_minutes else 0.0
    return min(1.0, max(by_steps, by_time))


def task_optimizers(task: Any) -> list[torch.optim.Optimizer]:
    """Every optimizer a training task holds as an attribute (the model's, a discriminator's)."""
    return [value for value in vars(task).values() if isinstance(value, torch.optim.Optimizer)]


def base_learning_rates(optimizers: Iterable[torch.optim.Optimizer]) -> list[list[float]]:
    """Each optimizer's group rates as configured; read before a resume loads scaled rates into them."""
    return [[float(group["lr"]) for group in optimizer.param_groups] for optimizer in optimizers]


def set_learning_rates(optimizers: Iterable[torch.optim.Optimizer], base: list[list[float]], factor: float) -> None:
    for optimizer, rates in zip(optimizers, base):
        for group, rate in zip(optimizer.param_groups, rates):
            group["lr"] = rate * factor
