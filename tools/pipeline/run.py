"""`--exp pipeline`: the whole job on the embedded default, in one resumable command.

  python main.py --exp pipeline                     # generated data, quickstart config, CPU-sized
  python main.py --exp pipeline --data_path D       # the same on an existing competition-format dataset

Steps: generate a small dataset if --data_path holds none -> segmenter -> stage 1 -> stage 2 -> predict the
val split -> evaluate -> results/pipeline_{id}_{data}_{seed}/report.md. Every step is an ordinary stage run
(results/{exp}_pipeline_{id}_{data}_{seed}/), so re-running the pipeline resumes each of them.
"""
from __future__ import annotations

import time
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from tools.core.config import apply_overrides, load_yaml
from tools.core.distributed import DistContext, barrier
from tools.core.errors import UserError
from tools.core.runs import LAST_CHECKPOINT, prepare_run_dir, run_dir_for

def step_config(cfg: DictConfig, exp: str, **run_fields) -> DictConfig:
    """The config of one pipeline step: its YAML, a run section like main.py makes, its overrides."""
    step = cfg.pipeline[exp]
    stage_cfg = load_yaml(step.config)
    stage_cfg.run = dict(OmegaConf.to_container(cfg.run, resolve=True), exp=exp, id=f"pipeline_{cfg.run.id}",
                         config_path=str(step.config), fresh=False, **run_fields)
    return apply_overrides(stage_cfg, list(step.get("overrides") or []), source=f"pipeline.{exp}.overrides")


def has_dataset(root: Path) -> bool:
    return (root / "train").is_dir() and (root / "val").is_dir()


def run_step(exp: str, step_cfg: DictConfig, ctx: DistContext, timings: dict[str, float]) -> DictConfig:
    from tools.core.stages import resolve_stage

    if ctx.is_main:
        print(f"\n=== pipeline: {exp} ===")
    start = time.perf_counter()
    code = resolve_stage(exp)(step_cfg, ctx)
    if code:
        raise UserError(f"pipeline step '{exp}' failed (exit {code}); see the messages above")
    timings[exp] = time.perf_counter() - start
    return step_cfg


def run(cfg: DictConfig, ctx: DistContext) -> int:
    if cfg.run.data != "CLEVRER":
        raise UserError("--exp pipeline predicts frame-22 masks of the competition format: use --data CLEVRER")
    data_path = Path(str(cfg.run.data_path or cfg.pipeline.data_path))
    cfg.run.data_path = str(data_path)
    run_dir = prepare_run_dir(cfg, ctx)
    timings: dict[str, float] = {}
    started = time.perf_counter()
    if not has_dataset(data_path):
        run_step("generate", step_config(cfg, "generate"), ctx, timings)
    segment = run_step("segment", step_config(cfg, "segment"), ctx, timings)
    segmenter = _best_checkpoint(run_dir_for(segment.run))
    first = run_step("first_stage", step_config(cfg, "first_stage"), ctx, timings)
    first_model = run_dir_for(first.run) / LAST_CHECKPOINT
    ddpm = run_step("ddpm", step_config(cfg, "ddpm", first_model=str(first_model)), ctx, timings)
    predict_cfg = step_config(cfg, "predict")
    predict_cfg.predict.ddpm = str(run_dir_for(ddpm.run) / LAST_CHECKPOINT)
    predict_cfg.predict.segmenter = str(segmenter)
    run_step("predict", predict_cfg, ctx, timings)
    barrier(ctx)
    if ctx.is_main:
        from tools.pipeline.report import write_report

        timings["total"] = time.perf_counter() - started
        report = write_report(run_dir, data_path, run_dir_for(predict_cfg.run), segmenter,
                              {"segment": segment, "first_stage": first, "ddpm": ddpm, "predict": predict_cfg},
                              timings)
        print(f"\npipeline finished in {timings['total'] / 60:.1f} min; report: {report}")
    return 0


def _best_checkpoint(segment_dir: Path) -> Path:
    best = segment_dir / "model_best.pth"
    return best if best.exists() else segment_dir / LAST_CHECKPOINT
