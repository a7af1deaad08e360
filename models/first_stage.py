"""Build a first stage (`model.type`) from a stored config alone, so stage 2 and prediction need no training code."""
from __future__ import annotations

from typing import Any, Mapping

from omegaconf import DictConfig, OmegaConf
from torch import nn

from models import ModelConfigError
from models.autoencoder import VideoAutoencoder
from models.identity_autoencoder import IdentityAutoencoder
from models.slot_autoencoder import SlotAutoencoder

FIRST_STAGES = {"scene_object_motion": VideoAutoencoder, "identity": IdentityAutoencoder, "slots": SlotAutoencoder}


def build_first_stage(config: Mapping[str, Any] | DictConfig) -> nn.Module:
    """The stage-1 network named by ``model.type`` from a run config or its ``model`` section."""
    if isinstance(config, DictConfig):
        config = OmegaConf.to_container(config, resolve=True)
    model_cfg = dict(config["model"] if isinstance(config.get("model"), Mapping) else config)
    kind = model_cfg.get("type", "scene_object_motion")
    if kind not in FIRST_STAGES:
        raise ModelConfigError(f"model.type {kind!r} is unknown; use one of {sorted(FIRST_STAGES)}.")
    return FIRST_STAGES[kind](model_cfg)
