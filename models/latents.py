"""What a first stage hands to stage 2: the `Latents` of a clip, and the shared model-config resolution.

Both first stages (models/autoencoder.py and models/identity_autoencoder.py) import this module, never each other.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Mapping, Optional

import torch
from omegaconf import DictConfig, OmegaConf

from models import ModelConfigError


@dataclass
class Latents:
    """The three latents of a clip; ``motion_preact`` (motion before tanh) is kept only for the regulariser."""

    scene: torch.Tensor  # [B, Cs, h, w]
    object: torch.Tensor  # [B, Co, h, w]
    motion: torch.Tensor  # [B, T, Cm, h, w]
    motion_preact: Optional[torch.Tensor] = field(default=None, compare=False, repr=False)

    def detach(self) -> "Latents":
        return Latents(*(None if getattr(self, f.name) is None else getattr(self, f.name).detach()
                         for f in fields(self)))


def resolve_model_config(config: Mapping[str, Any] | DictConfig, defaults: Mapping[str, Any]) -> dict[str, Any]:
    """Merge a ``model`` config section over ``defaults``; unknown keys are a user error (likely typos)."""
    if isinstance(config, DictConfig):
        config = OmegaConf.to_container(config, resolve=True)
    config = dict(config or {})
    if "model" in config and isinstance(config["model"], Mapping):
        config = dict(config["model"])  # a whole run config was passed
    unknown = sorted(set(config) - set(defaults))
    if unknown:
        raise ModelConfigError(f"model config: unknown key(s) {unknown}; known keys are {sorted(defaults)} "
                        "(see configs/autoencoder/base.yaml). Fix or remove them.")
    return {**defaults, **config}
