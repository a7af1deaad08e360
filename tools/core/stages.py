"""The registry of stages that `main.py --exp NAME` dispatches to.

Each stage is `module:function` taking (cfg, ctx) and returning an exit code; modules are imported only
when their stage runs, so a missing optional dependency of one stage never breaks another.
"""
from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass

from omegaconf import DictConfig

from tools.core.distributed import init_distributed, shutdown_distributed
from tools.core.runs import run_dir_scope


class StageNotAvailable(Exception):
    """The stage exists in the command line but is not built yet."""


@dataclass(frozen=True)
class Stage:
    summary: str
    target: str  # "package.module:function"
    default_config: str | None = None
    video_config: str | None = None  # the default for natural video (--data UCF101 / FOLDER), when it differs


STAGES: dict[str, Stage] = {
    "generate": Stage("render a CLEVRER-like dataset with MuJoCo into --data_path",
                      "tools.data.stage:generate", "configs/data/generate.yaml"),
    "check_data": Stage("scan a dataset folder and report problems (non-zero exit if any)",
                        "tools.data.stage:check_data"),
    "first_stage": Stage("train the scene/object/motion autoencoder (stage 1)",
                         "tools.train.first_stage:run", "configs/autoencoder/base.yaml"),
    "ddpm": Stage("train the latent diffusion model over motion latents (stage 2)",
                  "tools.train.ddpm:run", "configs/latent-diffusion/base.yaml"),
    "segment": Stage("train the segmentation network (or write pseudo-labels)",
                     "tools.train.segmenter:run", "configs/segmentation/base.yaml"),
    "objects": Stage("train the object classifier that names each segmented object's shape/material/colour",
                     "tools.train.object_classifier:run", "configs/segmentation/objects.yaml"),
    "predict": Stage("predict frame-22 masks for a split and write the submission tensor",
                     "tools.predict.predict:run", "configs/predict/base.yaml"),
    "sample": Stage("write N natural videos from a stage-2 checkpoint (generate, predict, interpolate, "
                    "reconstruct) as mp4, a GIF grid and uint8 shards",
                    "tools.predict.sample:run", "configs/sample/base.yaml"),
    "eval": Stage("score a run's predictions (Jaccard, LPIPS, FVD, PSNR/SSIM)",
                  "evals.scoring.run:run", "configs/eval/base.yaml"),
    "pipeline": Stage("the whole job on the embedded default: CLEVRER (generated data, segmenter, slot diffusion, "
                      "frame-22 masks, report) or, with --data FOLDER, real footage (latent and pixel routes, samples, "
                      "FVD, report)", "tools.pipeline.run:run", "configs/quickstart/pipeline.yaml",
                      "configs/quickstart/natural.yaml"),
}


def default_config_for(exp: str, data: str = "CLEVRER") -> str | None:
    stage = STAGES[exp]
    return stage.video_config if data != "CLEVRER" and stage.video_config else stage.default_config


def resolve_stage(exp: str):
    """The stage's entry function; StageNotAvailable when its module is not built yet."""
    module_name, function_name = STAGES[exp].target.split(":")
    if importlib.util.find_spec(module_name) is None:
        raise StageNotAvailable(f"--exp {exp} is not available yet in this version of the project "
                                f"({module_name} is not built); see the README for the stages that are")
    function = getattr(importlib.import_module(module_name), function_name, None)
    if function is None:
        raise StageNotAvailable(f"--exp {exp} is not available yet ({STAGES[exp].target} missing)")
    return function


def run_stage(exp: str, cfg: DictConfig) -> int:
    """Run one stage inside a (possibly distributed) process context."""
    function = resolve_stage(exp)
    ctx = init_distributed(cfg.run.get("device"))
    try:
        with run_dir_scope():
            return int(function(cfg, ctx) or 0)
    finally:
        shutdown_distributed()
