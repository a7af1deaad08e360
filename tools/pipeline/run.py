"""`--exp pipeline`: the whole job on the embedded default, in one resumable command.

  python main.py --exp pipeline                     # generated data, quickstart config, CPU-sized
  python main.py --exp pipeline --data_path D       # the same on an existing competition-format dataset
  python main.py --exp pipeline --config_mod pipeline.route=grid   # the grid-latent (RSVP/PVDM) route
  python main.py --exp pipeline --data FOLDER       # natural video on real footage (tools/pipeline/natural.py)

Slot route (the default for CLEVRER data): generate a small dataset if --data_path holds none, and a large
masks-only set of trajectories -> segmenter -> object classifier (`pipeline.objects`; it names each segmented
object from a full-resolution crop) -> slot stage 1 -> slot stage 2 on the trajectories -> predict the val split
from segmenter masks of frames 1-11, and again from the true ones (the dynamics alone) -> report.
Grid route: segmenter -> stage 1 -> stage 2 -> predict -> report. Every step is an ordinary stage run
(results/{exp}_pipeline_{id}_{data}_{seed}/), so re-running the pipeline resumes each of them; the report is
results/pipeline_{id}_{data}_{seed}/report.md.
"""
from __future__ import annotations

import time
from pathlib import Path

from omegaconf import DictConfig

from tools.core.distributed import DistContext, barrier
from tools.core.errors import UserError
from tools.core.runs import LAST_CHECKPOINT, prepare_run_dir, run_dir_for
from tools.pipeline.steps import run_step, step_config

ROUTES = ("slots", "grid")


def has_dataset(root: Path) -> bool:
    return (root / "train").is_dir() and (root / "val").is_dir()


def train_grid_route(cfg: DictConfig, ctx: DistContext, timings: dict[str, float]) -> dict[str, DictConfig]:
    first = run_step("first_stage", step_config(cfg, "first_stage"), ctx, timings)
    ddpm = run_step("ddpm", step_config(cfg, "ddpm", first_model=str(run_dir_for(first.run) / LAST_CHECKPOINT)),
                    ctx, timings)
    return {"first_stage": first, "ddpm": ddpm}


def train_slot_route(cfg: DictConfig, ctx: DistContext, timings: dict[str, float]) -> dict[str, DictConfig]:
    trajectories = Path(str(cfg.pipeline.trajectories.data_path))
    if not (trajectories / "train").is_dir():
        run_step("trajectories", step_config(cfg, "trajectories", exp="generate", data_path=str(trajectories)),
                 ctx, timings)
    first = run_step("first_stage", step_config(cfg, "slot_first_stage", exp="first_stage"), ctx, timings)
    ddpm_cfg = step_config(cfg, "slot_ddpm", exp="ddpm", first_model=str(run_dir_for(first.run) / LAST_CHECKPOINT))
    ddpm_cfg.data.trajectory_path = str(trajectories)
    ddpm = run_step("ddpm", ddpm_cfg, ctx, timings)
    return {"first_stage": first, "ddpm": ddpm}


def predict_step(cfg: DictConfig, ctx: DistContext, timings: dict[str, float], ddpm: DictConfig, segmenter: Path,
                 name: str = "predict", **predict_keys) -> DictConfig:
    predict_cfg = step_config(cfg, "predict", **({"id": f"pipeline_{cfg.run.id}_{name}"} if name != "predict" else {}))
    predict_cfg.predict.ddpm = str(run_dir_for(ddpm.run) / LAST_CHECKPOINT)
    predict_cfg.predict.segmenter = str(segmenter)
    for key, value in predict_keys.items():
        predict_cfg.predict[key] = value
    return run_step(name, predict_cfg, ctx, timings)


def run(cfg: DictConfig, ctx: DistContext) -> int:
    if cfg.run.data != "CLEVRER":  # natural video: latent and pixel routes on real footage
        if cfg.pipeline.get("first_stage") is None or cfg.pipeline.get("pixel_ddpm") is None:
            raise UserError(f"--exp pipeline --data {cfg.run.data} needs the natural-video pipeline config: leave out "
                            f"--pretrain_config or pass configs/quickstart/natural.yaml")
        from tools.pipeline.natural import run_natural

        return run_natural(cfg, ctx)
    route = str(cfg.pipeline.get("route", "slots"))
    if route not in ROUTES:
        raise UserError(f"pipeline.route={route!r} is unknown; use one of {', '.join(ROUTES)}")
    data_path = Path(str(cfg.run.data_path or cfg.pipeline.data_path))
    cfg.run.data_path = str(data_path)
    run_dir = prepare_run_dir(cfg, ctx)
    timings: dict[str, float] = {}
    started = time.perf_counter()
    if not has_dataset(data_path):
        run_step("generate", step_config(cfg, "generate"), ctx, timings)
    segment = run_step("segment", step_config(cfg, "segment"), ctx, timings)
    # The last weights, not the best on val: the report scores those same val videos, so picking the checkpoint
    # on them would flatter it; the segmenter's rate decays to its end and both average their weights.
    segmenter = run_dir_for(segment.run) / LAST_CHECKPOINT
    steps = {"segment": segment}
    classifier = None
    if route == "slots" and cfg.pipeline.get("objects") and cfg.pipeline.objects.get("enabled", True):
        steps["objects"] = run_step("objects", step_config(cfg, "objects"), ctx, timings)
        classifier = run_dir_for(steps["objects"].run) / LAST_CHECKPOINT
    trained = (train_slot_route if route == "slots" else train_grid_route)(cfg, ctx, timings)
    vote_keys = {"object_classifier": str(classifier)} if classifier else {}
    predicted = {"model": predict_step(cfg, ctx, timings, trained["ddpm"], segmenter, **vote_keys)}
    if route == "slots":  # the dynamics alone: the same model from the true masks of frames 1-11
        predicted["true_masks"] = predict_step(cfg, ctx, timings, trained["ddpm"], segmenter,
                                               name="predict_true_masks", observed_masks=True)
        if trained["ddpm"].model.get("motion_head"):  # what the diffusion samples add to the head's own guess
            predicted["guess"] = predict_step(cfg, ctx, timings, trained["ddpm"], segmenter, name="predict_guess",
                                              observed_masks=True, slot_combine="guess")
    barrier(ctx)
    if ctx.is_main:
        from tools.pipeline.report import write_report

        timings["total"] = time.perf_counter() - started
        report = write_report(run_dir, data_path, {k: run_dir_for(v.run) for k, v in predicted.items()}, segmenter,
                              {**steps, **trained}, timings, route, classifier)
        print(f"\npipeline finished in {timings['total'] / 60:.1f} min; report: {report}")
    return 0
