"""`--exp predict`: frames 1-11 of every video of a split -> frame-22 masks, by the route of the stage-2 checkpoint.

  python main.py --exp predict --data CLEVRER --data_path D --config_mod \
      predict.ddpm=results/ddpm_main_CLEVRER_42/model_last.pth \
      predict.segmenter=results/segment_main_CLEVRER_42/model_last.pth predict.split=hidden

A slot checkpoint goes to tools/predict/slot_route.py, a grid-latent or pixel one to tools/predict/grid_route.py;
both write per-video results (kept in per_video/ and skipped when the command is re-run, so large hidden sets
resume) and assemble submission.pt from them at the end (tools/predict/outputs.py).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from tools.core.checkpoint import load_checkpoint
from tools.core.distributed import DistContext
from tools.core.errors import UserError
from tools.core.runs import check_recorded_inputs, prepare_run_dir, run_dir_for, write_recorded_inputs
from tools.data.stage import require_data_path
from tools.predict.grid_route import predict_split_grid
from tools.predict.slot_predictor import is_slot_checkpoint
from tools.predict.slot_route import predict_split_slots


def predict_split(pcfg: DictConfig | dict, data_path: str, out_dir: Path, ctx: DistContext,
                  seed: int = 42) -> dict[str, Any]:
    """Predict every video of pcfg.split into out_dir (resumable) by the checkpoint's route; returns its meta."""
    if not pcfg.get("ddpm"):
        raise UserError("--exp predict needs predict.ddpm: the model_last.pth of an --exp ddpm run "
                        "(--config_mod predict.ddpm=results/ddpm_main_CLEVRER_42/model_last.pth)")
    if is_slot_checkpoint(load_checkpoint(str(pcfg.ddpm), map_location="cpu")):
        return predict_split_slots(pcfg, data_path, out_dir, ctx, seed)
    return predict_split_grid(pcfg, data_path, out_dir, ctx, seed)


# Settings that change no prediction: a re-run may change them and still reuse the finished videos.
PRESENTATION_KEYS = ("batch_size", "max_videos", "png_videos", "gif_videos")


def prediction_inputs(cfg: DictConfig, data_path: str) -> dict[str, Any]:
    """What the per-video results depend on, recorded in the run folder (inputs.json)."""
    inputs = {key: value for key, value in OmegaConf.to_container(cfg.predict, resolve=True).items()
              if key not in PRESENTATION_KEYS}
    for key in ("ddpm", "segmenter"):
        if inputs.get(key):
            inputs[key] = str(Path(str(inputs[key])).resolve())
    return dict(inputs, seed=int(cfg.run.seed), data_path=str(Path(data_path).resolve()))


def run(cfg: DictConfig, ctx: DistContext) -> int:
    data_path = require_data_path(cfg)
    if int(cfg.predict.get("batch_size") or 0) < 1:
        raise UserError(f"predict.batch_size={cfg.predict.get('batch_size')} is not a batch size; pass 1 or more")
    inputs = prediction_inputs(cfg, data_path)
    if ctx.is_main and not cfg.run.get("fresh"):  # --fresh moves the old results aside instead
        check_recorded_inputs(run_dir_for(cfg.run), inputs)
    run_dir = prepare_run_dir(cfg, ctx)
    if ctx.is_main:
        write_recorded_inputs(run_dir, inputs)
    predict_split(cfg.predict, data_path, run_dir, ctx, int(cfg.run.seed))
    return 0
