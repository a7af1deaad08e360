"""The generic loop: a resumed run continues from the saved step and matches an uninterrupted run."""
import math

import pytest
import torch
from omegaconf import OmegaConf
from torch.utils.data import TensorDataset

from tools.core.checkpoint import load_checkpoint
from tools.core.distributed import DistContext
from tools.data.loader import ResumableSampler, make_train_loader
from tools.core.logger import RunLogger, read_stats
from tools.core.runs import LAST_CHECKPOINT, prepare_run_dir, snapshot_name
from tools.core.errors import UserError
from tools.train.loop import seed_everything, train
from tools.train.schedule import LRSchedule, training_progress

CPU = DistContext(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))


class ToyTask:
    """Linear regression whose step also draws from the global RNG (like dropout or diffusion noise)."""

    def __init__(self):
        self.model = torch.nn.Linear(3, 1)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=0.05)

    def train_step(self, batch, step):
        x, y = batch
        noise = 0.01 * torch.randn_like(y)
        loss = torch.nn.functional.mse_loss(self.model(x), y + noise)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        return {"loss": loss.item()}

    def state_dict(self):
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state):
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])


def _dataset():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(20, 3, generator=gen)
    return TensorDataset(x, x @ torch.tensor([[1.0], [-2.0], [0.5]]))


def _cfg(tmp_path, max_steps, run_id):
    return OmegaConf.create({
        "model": {"kind": "linear"},
        "train": {"max_steps": max_steps, "log_every": 2, "ckpt_every": 3, "snapshot_every": 4},
        "run": {"exp": "toy", "id": run_id, "data": "T", "seed": 5, "results_dir": str(tmp_path),
                "fresh": False},
    })


def _run(tmp_path, max_steps, run_id):
    cfg = _cfg(tmp_path, max_steps, run_id)
    seed_everything(cfg.run.seed)
    task = ToyTask()
    run_dir = prepare_run_dir(cfg, CPU)
    logger = RunLogger(run_dir)
    data = _dataset()
    step = train(task, lambda start: make_train_loader(data, 4, cfg.run.seed, CPU, start), cfg, run_dir, CPU,
                 logger)
    logger.close()
    return task, step, run_dir


def test_resume_continues_step_and_random_stream(tmp_path):
    straight, step, _ = _run(tmp_path, 10, "straight")
    straight_next = torch.rand(4)
    assert step == 10

    _, step, run_dir = _run(tmp_path, 6, "split")
    assert step == 6
    torch.manual_seed(12345)  # the resumed process starts with unrelated RNG state
    resumed, step, run_dir = _run(tmp_path, 10, "split")
    assert step == 10
    assert torch.equal(torch.rand(4), straight_next)
    for a, b in zip(straight.model.parameters(), resumed.model.parameters()):
        assert torch.equal(a, b)
    steps_logged = [r["step"] for r in read_stats(run_dir)]
    assert steps_logged == [2, 4, 6, 8, 10]
    assert (run_dir / LAST_CHECKPOINT).exists() and (run_dir / snapshot_name(8)).exists()
    assert (run_dir / "config.yaml").exists()


def test_loss_logged_and_rerun_of_finished_run_is_noop(tmp_path):
    _, _, run_dir = _run(tmp_path, 40, "done")
    before = (run_dir / LAST_CHECKPOINT).stat().st_mtime_ns
    _, step, _ = _run(tmp_path, 40, "done")
    assert step == 40 and (run_dir / LAST_CHECKPOINT).stat().st_mtime_ns == before
    losses = [r["loss"] for r in read_stats(run_dir)]
    assert losses[-1] < 0.2 * losses[0]


def test_fresh_moves_old_run_aside(tmp_path):
    _run(tmp_path, 3, "again")
    cfg = _cfg(tmp_path, 3, "again")
    cfg.run.fresh = True
    run_dir = prepare_run_dir(cfg, CPU)
    assert not (run_dir / LAST_CHECKPOINT).exists()
    assert len(list(tmp_path.glob("toy_again_T_5.old-*"))) == 1


def test_sampler_shards_ranks_and_resumes():
    full = ResumableSampler(10, seed=3, rank=0, world_size=1)
    stream = [i for _, i in zip(range(25), iter(full))]
    assert sorted(stream[:10]) == list(range(10))
    later = ResumableSampler(10, seed=3, start_sample=7)
    assert [i for _, i in zip(range(18), iter(later))] == stream[7:25]
    ranks = [ResumableSampler(10, seed=3, rank=r, world_size=2) for r in range(2)]
    first_epoch = [list(zip(range(5), iter(s))) for s in ranks]
    assert sorted(i for part in first_epoch for _, i in part) == list(range(10))


def test_an_interrupted_time_budget_continues_only_to_its_end(tmp_path):
    ticks = iter(range(0, 10_000, 5))  # 5 seconds pass at every reading of the clock
    _scheduled_run(tmp_path, "cut", crash_at=4, max_minutes=1.0, clock=lambda: next(ticks))
    state = load_checkpoint(tmp_path / "toy_cut_T_5" / LAST_CHECKPOINT)
    assert state["step"] == 4 and 0 < state["trained_seconds"] < 60  # saved where the interrupt came
    ticks = iter(range(0, 10_000, 5))
    _scheduled_run(tmp_path, "cut", max_minutes=1.0, clock=lambda: next(ticks))
    final = load_checkpoint(tmp_path / "toy_cut_T_5" / LAST_CHECKPOINT)
    assert 4 < final["step"] < 10, "it continued, and stopped at its budget before max_steps"
    assert 60 <= final["trained_seconds"] <= 60 + 20  # stopped within a step of its budget (a step reads 3-4 times)


def test_time_budget_stops_early_and_marks_the_final_log(tmp_path):
    cfg = _cfg(tmp_path, 50, "budget")
    cfg.train.max_minutes = 1.0
    seed_everything(cfg.run.seed)
    task, run_dir = ToyTask(), prepare_run_dir(cfg, CPU)
    calls = []
    data = _dataset()
    ticks = iter(range(0, 10_000, 25))  # an injected clock: 25 seconds pass at every reading
    step = train(task, lambda start: make_train_loader(data, 4, cfg.run.seed, CPU, start), cfg, run_dir, CPU,
                 RunLogger(run_dir, enabled=False), on_log=lambda s, final: calls.append((s, final)),
                 clock=lambda: next(ticks))
    # Start at 0, deadline 60: the readings after steps 1, 2, 3 are 25, 50, 75; step 3 is past the deadline.
    assert step == 3 and calls == [(2, False), (3, True)]
    assert load_checkpoint(run_dir / LAST_CHECKPOINT)["step"] == 3, "a time-capped run saves where it stopped"


def test_lr_schedule_factors_and_refusals():
    cosine = LRSchedule("cosine", warmup_steps=4, final_fraction=0.1)
    assert cosine.factor(0, 0.0) == pytest.approx(0.25)  # warmup: step 0 of 4
    assert cosine.factor(3, 0.0) == pytest.approx(1.0)
    assert cosine.factor(10, 0.5) == pytest.approx(0.55)
    assert cosine.factor(10, 1.0) == pytest.approx(0.1) and cosine.factor(10, 7.0) == pytest.approx(0.1)
    assert LRSchedule("linear").factor(5, 0.25) == pytest.approx(0.75)
    assert not LRSchedule.from_config({}).active
    with pytest.raises(UserError, match="train.lr_schedule"):
        LRSchedule.from_config({"lr_schedule": "step"})
    # The further of steps and training time sets progress; no time budget, steps alone.
    assert training_progress(5, 10, 30.0, 1.0) == pytest.approx(0.5)
    assert training_progress(1, 10, 45.0, 1.0) == pytest.approx(0.75)
    assert training_progress(1, 10, 45.0, None) == pytest.approx(0.1)


class CrashingTask(ToyTask):
    """Fails on its `crash_at`-th step, like a killed run (the checkpoint before it survives)."""

    def __init__(self, crash_at=None):
        super().__init__()
        self.crash_at = crash_at

    def train_step(self, batch, step):
        if step == self.crash_at:
            raise KeyboardInterrupt
        return super().train_step(batch, step)


def _scheduled_run(tmp_path, run_id, crash_at=None, max_minutes=None, clock=None):
    cfg = _cfg(tmp_path, 10, run_id)
    cfg.train.lr_schedule, cfg.train.lr_warmup_steps, cfg.train.lr_final_fraction = "cosine", 2, 0.2
    cfg.train.max_minutes = max_minutes
    seed_everything(cfg.run.seed)
    task, run_dir = CrashingTask(crash_at), prepare_run_dir(cfg, CPU)
    data = _dataset()
    extra = {"clock": clock} if clock else {}
    try:
        train(task, lambda start: make_train_loader(data, 4, cfg.run.seed, CPU, start), cfg, run_dir, CPU,
              RunLogger(run_dir), **extra)
    except KeyboardInterrupt:
        pass
    return task, run_dir


def test_cosine_schedule_resumes_exactly_and_ends_at_its_final_rate(tmp_path):
    straight, run_dir = _scheduled_run(tmp_path, "straight")
    # The last step ran at progress 9/10 of a cosine from 1 down to the final fraction 0.2 (x lr 0.05).
    expected = 0.05 * (0.2 + 0.8 * 0.5 * (1 + math.cos(math.pi * 0.9)))
    assert straight.optimizer.param_groups[0]["lr"] == pytest.approx(expected)
    assert read_stats(run_dir)[0]["lr"] == pytest.approx(0.05 * (0.2 + 0.8 * 0.5 * (1 + math.cos(math.pi * 0.1))))

    _scheduled_run(tmp_path, "split", crash_at=7)  # checkpoints at steps 3 and 6 (ckpt_every=3)
    assert load_checkpoint(tmp_path / "toy_split_T_5" / LAST_CHECKPOINT)["step"] == 6
    resumed, _ = _scheduled_run(tmp_path, "split")  # the rates come from the config, not the saved optimizer
    for a, b in zip(straight.model.parameters(), resumed.model.parameters()):
        assert torch.equal(a, b)


def test_time_budget_schedule_counts_training_time_across_resumes(tmp_path):
    ticks = iter(range(0, 10_000, 10))  # 10 seconds pass at every reading of the clock
    _scheduled_run(tmp_path, "timed", max_minutes=1.0, clock=lambda: next(ticks))
    state = load_checkpoint(tmp_path / "toy_timed_T_5" / LAST_CHECKPOINT)
    assert 0 < state["step"] < 10 and state["trained_seconds"] >= 60
    # Re-run after its budget is spent: it trains no further (the budget counts training time across resumes).
    ticks = iter(range(0, 10_000, 10))
    _scheduled_run(tmp_path, "timed", max_minutes=1.0, clock=lambda: next(ticks))
    assert load_checkpoint(tmp_path / "toy_timed_T_5" / LAST_CHECKPOINT)["step"] == state["step"]
    # A larger budget continues it, at the rate its schedule has reached (past the old budget's end: not warmup).
    ticks = iter(range(0, 10_000, 10))
    resumed, _ = _scheduled_run(tmp_path, "timed", max_minutes=2.0, clock=lambda: next(ticks))
    later = load_checkpoint(tmp_path / "toy_timed_T_5" / LAST_CHECKPOINT)
    assert later["step"] > state["step"] and later["trained_seconds"] > state["trained_seconds"]
    assert resumed.optimizer.param_groups[0]["lr"] < 0.05
