"""What every pipeline runs its steps with: a step's config (its YAML, a run section as main.py makes, its
overrides) and running it as an ordinary stage (so re-running the pipeline resumes each step)."""
from __future__ import annotations

import time

from omegaconf import DictConfig, OmegaConf

from tools.core.config import apply_overrides, load_yaml
from tools.core.distributed import DistContext
from tools.core.errors import UserError


def step_config(cfg: DictConfig, step_name: str, exp: str | None = None, extra: list[str] | None = None,
                **run_fields) -> DictConfig:
    """The config of one pipeline step: its YAML, a run section like main.py makes, its overrides (then `extra`)."""
    step = cfg.pipeline[step_name]
    stage_cfg = load_yaml(step.config)
    run = dict(OmegaConf.to_container(cfg.run, resolve=True), exp=exp or step_name, id=f"pipeline_{cfg.run.id}",
               config_path=str(step.config), fresh=False)
    stage_cfg.run = {**run, **run_fields}
    overrides = list(step.get("overrides") or []) + list(extra or [])
    return apply_overrides(stage_cfg, overrides, source=f"pipeline.{step_name}.overrides")


def run_step(name: str, step_cfg: DictConfig, ctx: DistContext, timings: dict[str, float]) -> DictConfig:
    from tools.core.stages import resolve_stage  # imported here: the stage registry names this package

    if ctx.is_main:
        print(f"\n=== pipeline: {name} ===")
    start = time.perf_counter()
    code = resolve_stage(step_cfg.run.exp)(step_cfg, ctx)
    if code:
        raise UserError(f"pipeline step '{name}' failed (exit {code}); see the messages above")
    timings[name] = time.perf_counter() - start
    return step_cfg


