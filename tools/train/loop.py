"""The one training skeleton every stage uses (as edm2's training_loop.py): the stage's run folder, batch
size and data, the optimizer step, resume, step counting, logging, checkpoints and the time budget.

A stage supplies a `TrainTask` (its models, optimizers and one `train_step`, which calls `optimizer_step`);
`open_stage` + `run_stage` own everything that must be identical across stages: the data order as a function
of (seed, step), RNG state in the checkpoint so a resumed run draws the same numbers as an uninterrupted one,
atomic checkpoints, rank-0 logging of rank-averaged scalars, and a tqdm bar.
"""
from __future__ import annotations

import contextlib
import math
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Protocol

import torch
import torch.distributed as dist
from omegaconf import DictConfig
from tqdm import tqdm

from tools.core.checkpoint import (capture_rng_state, check_config_matches, load_checkpoint, restore_rng_state,
                              save_checkpoint)
from tools.core.config import to_plain
from tools.core.distributed import DistContext, all_reduce_mean, barrier
from tools.core.errors import UserError
from tools.core.logger import RunLogger
from tools.core.runs import LAST_CHECKPOINT, prepare_run_dir, snapshot_name
from tools.data.loader import make_train_loader
from tools.data.stage import require_data_path
from tools.train.schedule import (LRSchedule, base_learning_rates, set_learning_rates, task_optimizers,
                                  training_progress)


class TrainTask(Protocol):
    """What a stage hands to `train`."""

    def train_step(self, batch: Any, step: int) -> dict[str, float]:
        """One optimisation step on `batch`; returns scalars to log."""

    def state_dict(self) -> dict[str, Any]:
        """Everything to checkpoint: at least 'model'; usually 'ema', 'optimizer', 'scaler'."""

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what state_dict returned."""


def optimizer_step(optimizer: torch.optim.Optimizer, scaler: Any, loss: torch.Tensor,
                   parameters: Iterable[torch.nn.Parameter], grad_clip: float = 0.0,
                   after_backward: Callable[[], None] | None = None) -> None:
    """Backward through the grad scaler, optional gradient-norm clipping, step: the one optimizer step.

    after_backward runs between backward and clipping (e.g. averaging gradients by hand across ranks).
    """
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    if after_backward is not None:
        after_backward()
    if grad_clip > 0:
        scaler.unscale_(optimizer)  # clip the true gradients, not the loss-scaled ones
        torch.nn.utils.clip_grad_norm_(parameters, grad_clip)
    scaler.step(optimizer)
    scaler.update()


def validation_interval(cfg: DictConfig) -> int:
    """train.val_every, checked to be a multiple of train.log_every (validation runs at log steps)."""
    val_every = int(cfg.train.val_every)
    if val_every % int(cfg.train.log_every):
        raise UserError(f"train.val_every={val_every} must be a multiple of train.log_every="
                        f"{cfg.train.log_every} (validation runs at log steps)")
    return val_every


def batch_size_of(cfg: DictConfig) -> int:
    """Per-process batch size: --batch_size when given, else train.batch_size; 0 or less is refused."""
    flag = cfg.run.get("batch_size")
    size = int(flag if flag is not None else cfg.train.get("batch_size", 8))
    if size < 1:
        source = "--batch_size" if flag is not None else "train.batch_size"
        raise UserError(f"{source}={size} is not a batch size; pass --batch_size 1 or more")
    return size


@dataclass
class StageRun:
    """What every training stage opens before building its task: run folder, logger and data settings."""

    cfg: DictConfig
    ctx: DistContext
    run_dir: Path
    logger: RunLogger
    batch_size: int
    workers: int

    def batches(self, dataset: Any, name: str) -> Callable[[int], Iterable[Any]]:
        """make_batches(start_step) for `train`: the dataset's resumable, per-rank shuffled order."""
        seed = int(self.cfg.run.seed)
        return lambda start: make_train_loader(dataset, self.batch_size, seed, self.ctx, start, self.workers,
                                               name=name)


def open_stage(cfg: DictConfig, ctx: DistContext) -> StageRun:
    """Check the data path and batch size, seed every RNG, create (or reopen) the run folder and its logger."""
    require_data_path(cfg)
    batch_size = batch_size_of(cfg)
    seed_everything(int(cfg.run.seed), ctx.rank)
    run_dir = prepare_run_dir(cfg, ctx)
    return StageRun(cfg, ctx, run_dir, RunLogger(run_dir, enabled=ctx.is_main), batch_size,
                    int(cfg.train.get("num_workers") or 0))


def run_stage(stage: StageRun, task: "TrainTask", make_batches: Callable[[int], Iterable[Any]],
              on_log: Callable[[int, bool], dict[str, float] | None] | None = None,
              on_images: Callable[[int], None] | None = None) -> int:
    """Train `task` to the end of its budget, always closing the logger; the stage's exit code (0)."""
    try:
        train(task, make_batches, stage.cfg, stage.run_dir, stage.ctx, stage.logger, on_log, on_images)
    finally:
        stage.logger.close()
    return 0


def seed_everything(seed: int, rank: int = 0) -> None:
    import random

    import numpy as np

    random.seed(seed + rank)
    np.random.seed((seed + rank) % 2**32)
    torch.manual_seed(seed + rank)


def _gather_rng_states(ctx: DistContext) -> list[dict[str, Any]]:
    mine = capture_rng_state()
    if not ctx.distributed:
        return [mine]
    gathered: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(gathered, mine)
    return gathered


def save_training_state(task: TrainTask, step: int, cfg: DictConfig, run_dir: Path, ctx: DistContext,
                        snapshot: bool = False, trained_seconds: float = 0.0) -> None:
    """Write model_last.pth (and a numbered snapshot) from rank 0; all ranks contribute RNG states.
    trained_seconds: training time over all invocations so far (a time-budgeted schedule resumes from it)."""
    rng_states = _gather_rng_states(ctx)
    if ctx.is_main:
        state = dict(task.state_dict(), step=step, rng=rng_states, world_size=ctx.world_size,
                     config=to_plain(cfg), trained_seconds=float(trained_seconds))
        save_checkpoint(state, run_dir / LAST_CHECKPOINT)
        if snapshot:
            save_checkpoint(state, run_dir / snapshot_name(step))
    barrier(ctx)


def resume_if_possible(task: TrainTask, cfg: DictConfig, run_dir: Path, ctx: DistContext) -> tuple[int, float]:
    """Load model_last.pth when the run folder has one; returns the step to continue from and the seconds
    trained so far."""
    path = run_dir / LAST_CHECKPOINT
    if not path.exists():
        return 0, 0.0
    state = load_checkpoint(path, map_location=ctx.device)
    check_config_matches(state.get("config", {}), to_plain(cfg), "model", path)
    task.load_state_dict(state)
    rng_states = state.get("rng") or []
    if len(rng_states) == ctx.world_size:
        restore_rng_state(rng_states[ctx.rank])
    else:  # a different number of processes: reseed deterministically instead of reusing states
        seed_everything(int(cfg.run.seed) + int(state["step"]), ctx.rank)
    if ctx.is_main:
        print(f"resuming {run_dir} from step {state['step']}")
    return int(state["step"]), float(state.get("trained_seconds", 0.0))


@contextlib.contextmanager
def isolated_rng() -> Iterator[None]:
    """Validation and sample images draw random numbers (loaders, samplers, dropout) without moving the
    training stream: a run validated at step N draws the same training numbers as one that was not."""
    saved = capture_rng_state()
    try:
        yield
    finally:
        restore_rng_state(saved)


def next_batch(batches: Iterator[Any], task: TrainTask, step: int, start: int, cfg: DictConfig, run_dir: Path,
               ctx: DistContext, trained_seconds: Callable[[], float] = lambda: 0.0) -> Any:
    """The next batch; a data error (e.g. a damaged PNG) first saves the steps trained since the checkpoint."""
    before = capture_rng_state()
    try:
        return next(batches)
    except UserError as err:
        message = worker_error_message(err)
        if ctx.distributed or step == start:  # other ranks cannot join a save now; nothing new to save
            raise UserError(message) from None
        restore_rng_state(before)  # the state an uninterrupted run has at this step
        save_training_state(task, step, cfg, run_dir, ctx, trained_seconds=trained_seconds())
        raise UserError(f"{message} (training stopped at step {step} and saved it in {run_dir / LAST_CHECKPOINT}; "
                        f"re-run the same command after the fix to continue)") from None


def worker_error_message(err: UserError) -> str:
    """The user's one line: a DataLoader worker re-raises a UserError with the worker's traceback around it."""
    text = str(err)
    if "Original Traceback" not in text:
        return text
    last = [line for line in text.splitlines() if line.strip()][-1]
    return last.split("UserError: ", 1)[-1]


def train(task: TrainTask, make_batches: Callable[[int], Iterable[Any]], cfg: DictConfig, run_dir: Path,
          ctx: DistContext, logger: RunLogger,
          on_log: Callable[[int, bool], dict[str, float] | None] | None = None,
          on_images: Callable[[int], None] | None = None, clock: Callable[[], float] = time.monotonic) -> int:
    """Run `task` until cfg.train.max_steps (or cfg.train.max_minutes by `clock`, in seconds); the final step.

    make_batches(start_step) must return an endless iterator positioned at start_step.
    on_log(step, final) may return extra validation scalars (final: the last log step of this run, also when
    train.max_minutes stops it early); on_images(step) writes sample grids. Both run with isolated RNG state.
    The learning rate follows `train.lr_schedule` (tools/train/schedule.py) over the same budget.
    """
    tcfg = cfg.train
    schedule = LRSchedule.from_config(tcfg)
    optimizers = task_optimizers(task)
    base_rates = base_learning_rates(optimizers)  # as configured, before a resume loads scaled ones
    start, trained_before = resume_if_possible(task, cfg, run_dir, ctx)
    max_steps = int(tcfg.max_steps)
    if start >= max_steps:
        if ctx.is_main:
            print(f"{run_dir} is already trained to step {start} (train.max_steps={max_steps}); "
                  f"raise train.max_steps with --config_mod to continue")
        return start
    # train.max_minutes is the run's whole training time, counted across resumes (as the schedule counts it): an
    # interrupted run continues to its budget, and re-running a finished one trains no further.
    budget = 60 * float(tcfg.get("max_minutes") or math.inf)
    if trained_before >= budget:  # read from the checkpoint every rank loads: the same on all ranks
        if ctx.is_main:
            print(f"{run_dir} has already trained {trained_before / 60:.1f} min (train.max_minutes={tcfg.max_minutes}); "
                  f"raise train.max_minutes with --config_mod to continue")
        return start
    logger.resume_at(start)
    started = clock()
    deadline = started + budget - trained_before

    def trained_seconds() -> float:
        return trained_before + clock() - started

    def scheduled_progress(step: int) -> float:
        if not tcfg.get("max_minutes"):  # steps alone: the same on every rank, no collective needed
            return training_progress(step, max_steps, 0.0, None)
        # Rank 0's clock for all ranks: a rate from each rank's own clock would let DDP replicas drift apart.
        return _agree_value(training_progress(step, max_steps, trained_seconds(), tcfg.max_minutes), ctx)

    batches = iter(make_batches(start))
    sums: dict[str, float] = defaultdict(float)
    count, step = 0, start
    bar = tqdm(total=max_steps, initial=start, disable=not ctx.is_main, desc=run_dir.name, dynamic_ncols=True)
    tick = time.perf_counter()
    while step < max_steps:
        if schedule.active:
            set_learning_rates(optimizers, base_rates, schedule.factor(step, scheduled_progress(step)))
        logs = task.train_step(next_batch(batches, task, step, start, cfg, run_dir, ctx, trained_seconds), step)
        step += 1
        for key, value in logs.items():
            sums[key] += float(value)
        count += 1
        bar.update(1)
        out_of_time = _agree(clock() > deadline, ctx)
        log_step = step % int(tcfg.log_every) == 0 or step == max_steps or out_of_time
        if log_step:
            means = all_reduce_mean({k: v / count for k, v in sums.items()}, ctx)
            means["sec_per_step"] = (time.perf_counter() - tick) / count
            if ctx.device.type == "cuda":
                means["peak_mem_gib"] = torch.cuda.max_memory_allocated(ctx.device) / 2**30
            if schedule.active and optimizers:
                means["lr"] = float(optimizers[0].param_groups[0]["lr"])
            logger.log_scalars(step, means)
            bar.set_postfix({k: f"{v:.4g}" for k, v in list(means.items())[:4]})
            sums.clear()
        # The checkpoint comes before validation and images: a failure there must not lose the step trained.
        snapshot = int(tcfg.get("snapshot_every", 0)) > 0 and step % int(tcfg.snapshot_every) == 0
        if step % int(tcfg.ckpt_every) == 0 or snapshot or step == max_steps or out_of_time:
            save_training_state(task, step, cfg, run_dir, ctx, snapshot=snapshot, trained_seconds=trained_seconds())
        if log_step:
            with isolated_rng():
                extra = on_log(step, step == max_steps or out_of_time) if on_log else None
            if extra:
                logger.log_scalars(step, extra, prefix="val")
        if on_images and int(tcfg.get("image_every", 0)) > 0 and step % int(tcfg.image_every) == 0:
            if ctx.is_main:
                with isolated_rng():
                    on_images(step)
        if log_step:
            count, tick = 0, time.perf_counter()
        if out_of_time:
            if ctx.is_main:
                print(f"stopping at step {step}: train.max_minutes={tcfg.max_minutes} of training reached "
                      f"(raise it with --config_mod to continue)")
            break
    bar.close()
    logger.flush()
    return step


def _agree_value(value: float, ctx: DistContext) -> float:
    """Rank 0's value on every rank."""
    if not ctx.distributed:
        return value
    tensor = torch.tensor([value], device=ctx.device, dtype=torch.float64)
    dist.broadcast(tensor, src=0)
    return float(tensor.item())


def _agree(flag: bool, ctx: DistContext) -> bool:
    """All ranks stop together if any rank's clock says stop (otherwise collectives would hang)."""
    if not ctx.distributed:
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=ctx.device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())
