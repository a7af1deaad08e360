"""Pixels as latents: the identity "autoencoder" behind the pixel-space MCVD baseline.

It plugs into the same seam as ``VideoAutoencoder``: motion latents are the frames themselves
(optionally average-pooled by ``pool_factor``), scene and object latents are empty [B, 0, h, w]
tensors, and decode upsamples back (exact when ``pool_factor`` is 1) with no mask head.
"""
from __future__ import annotations

from typing import Any, Mapping, Optional

import torch
import torch.nn.functional as F
from einops import rearrange
from omegaconf import DictConfig
from torch import nn

from models import ModelConfigError
from models.latents import Latents, resolve_model_config

IDENTITY_DEFAULTS: dict[str, Any] = {"type": "identity", "pool_factor": 1}


class IdentityAutoencoder(nn.Module):
    """encode/decode with the VideoAutoencoder API and no parameters."""

    def __init__(self, config: Mapping[str, Any] | DictConfig | None = None) -> None:
        super().__init__()
        self.config = resolve_model_config(config, IDENTITY_DEFAULTS)
        self.stride = int(self.config["pool_factor"])
        if self.stride < 1:
            raise ModelConfigError(f"model.pool_factor must be a positive integer, got {self.config['pool_factor']}.")

    def latent_shapes(self, height: int, width: int) -> dict[str, tuple[int, int, int]]:
        self._check_size(height, width)
        h, w = height // self.stride, width // self.stride
        return {"scene": (0, h, w), "object": (0, h, w), "motion": (3, h, w)}

    def _check_size(self, height: int, width: int) -> None:
        if height % self.stride or width % self.stride:
            raise ModelConfigError(f"frame size {height}x{width} is not divisible by model.pool_factor={self.stride}; "
                            "pick a pool_factor that divides both.")

    def encode(self, frames: torch.Tensor, cond_frames: torch.Tensor, mask_probs: Optional[torch.Tensor] = None,
               cond_mask_probs: Optional[torch.Tensor] = None) -> Latents:
        batch, _, _, height, width = frames.shape
        self._check_size(height, width)
        motion = frames
        if self.stride > 1:
            pooled = F.avg_pool2d(rearrange(frames, "b t c h w -> (b t) c h w"), self.stride)
            motion = rearrange(pooled, "(b t) c h w -> b t c h w", b=batch)
        empty = frames.new_zeros(batch, 0, height // self.stride, width // self.stride)
        return Latents(empty, empty.clone(), motion)

    def decode(self, latents: Latents) -> tuple[torch.Tensor, None]:
        motion = latents.motion
        if self.stride == 1:
            return motion, None
        batch = motion.shape[0]
        upsampled = F.interpolate(rearrange(motion, "b t c h w -> (b t) c h w"), scale_factor=float(self.stride),
                                  mode="bilinear", align_corners=False)
        return rearrange(upsampled, "(b t) c h w -> b t c h w", b=batch).clamp(-1, 1), None
