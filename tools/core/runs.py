"""Run folders: results/{exp}_{id}_{data}_{seed}/ holding the resolved config, checkpoints and logs.

Re-running the same command finds the folder and resumes from its model_last.pth; --fresh moves the old
folder aside (never deletes it) and starts again.
"""
from __future__ import annotations

import time
from pathlib import Path

from omegaconf import DictConfig

from tools.core.config import save_config
from tools.core.distributed import DistContext, barrier

LAST_CHECKPOINT = "model_last.pth"


def run_name(run: DictConfig) -> str:
    return f"{run.exp}_{run.id}_{run.data}_{run.seed}"


def run_dir_for(run: DictConfig) -> Path:
    return Path(run.results_dir) / run_name(run)


def snapshot_name(step: int) -> str:
    return f"model_{step:07d}.pth"


def prepare_run_dir(cfg: DictConfig, ctx: DistContext) -> Path:
    """Create (or reuse, or with run.fresh set aside) the run folder and save the resolved config."""
    run_dir = run_dir_for(cfg.run)
    if ctx.is_main:
        if cfg.run.get("fresh") and run_dir.exists():
            backup = run_dir.with_name(f"{run_dir.name}.old-{time.strftime('%Y%m%d-%H%M%S')}")
            run_dir.rename(backup)
            print(f"--fresh: moved the previous run folder to {backup}")
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, run_dir / "config.yaml")
    barrier(ctx)
    return run_dir
