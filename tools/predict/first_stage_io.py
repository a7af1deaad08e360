"""Loading a frozen first stage for stage 2 and prediction, without the stage-1 training code.

`--first_model PATH` is a stage-1 model_last.pth (its EMA weights are used); `--first_model none` is the
identity autoencoder (pixels as latents), which turns stage 2 into the pixel-space MCVD-style baseline.
"""
from __future__ import annotations

from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from models.first_stage import build_first_stage
from tools.core.checkpoint import load_checkpoint, weights_for_inference
from tools.core.errors import UserError

PIXEL_MODE = ("", "none", "pixel", "identity")


def is_pixel_mode(first_model: str | None) -> bool:
    return first_model is None or str(first_model).lower() in PIXEL_MODE


def first_stage_record(first_model: str | None, cfg: DictConfig) -> dict[str, Any]:
    """What stage 2 stores about its first stage: the config and the weights (self-contained checkpoint)."""
    if is_pixel_mode(first_model):
        if first_model is None:
            raise UserError("--exp ddpm needs --first_model: a stage-1 model_last.pth, or 'none' for the "
                            "pixel-space baseline")
        pool = int(cfg.get("pixel", {}).get("pool_factor", 1))
        data = OmegaConf.to_container(cfg.data, resolve=True)
        return {"config": {"model": {"type": "identity", "pool_factor": pool}, "data": data},
                "weights": {}, "path": "none"}
    state = load_checkpoint(first_model)
    saved = state.get("config") or {}
    if "model" not in saved or saved.get("run", {}).get("exp") not in (None, "first_stage"):
        raise UserError(f"--first_model '{first_model}' is not a first-stage checkpoint (it comes from "
                        f"--exp {saved.get('run', {}).get('exp')}); pass results/first_stage_.../model_last.pth")
    check_first_stage_matches(saved, cfg, str(first_model))
    return {"config": {"model": saved["model"], "data": saved.get("data", {})},
            "weights": weights_for_inference(state), "path": str(first_model)}


def check_first_stage_matches(first_cfg: dict, cfg: DictConfig, path: str) -> None:
    """The first stage must have been trained on frames of the size and clip layout stage 2 uses."""
    ours, theirs = cfg.data, first_cfg.get("data", {})
    for key in ("height", "width", "frames", "cond_frames"):
        if key in theirs and key in ours and int(theirs[key]) != int(ours[key]):
            raise UserError(f"--first_model '{path}' was trained with data.{key}={theirs[key]} but this config "
                            f"has data.{key}={ours[key]}; use a matching config (or --config_mod "
                            f"data.{key}={theirs[key]}) or retrain the first stage")


def build_frozen_first_stage(record: dict[str, Any], device: torch.device) -> nn.Module:
    """The first stage from its stored record, in eval mode with gradients off."""
    model = build_first_stage(record["config"])
    if record["weights"]:
        missing, unexpected = model.load_state_dict(record["weights"], strict=False)
        if missing or unexpected:
            raise UserError(f"first-stage weights from '{record.get('path')}' do not fit its config "
                            f"(missing {missing[:3]}, unexpected {unexpected[:3]}); the checkpoint is damaged")
    return model.to(device).eval().requires_grad_(False)
