"""Stage 1: a video autoencoder that splits a clip into scene, object and per-frame motion latents.

* Scene and object latents are computed ONLY from the observed (conditioning) frames: a 2D context
  encoder runs on each observed frame, a learned per-pixel objectness gate splits its features into
  a background-weighted temporal mean (scene) and a foreground-weighted temporal mean (object). No
  future frame can leak into them (RSVP's defect), which tests check exactly.
* Each frame gets a small motion latent [Cm, h, w] (stride 8 by default), bounded by tanh, from a 2D
  motion encoder that sees that frame (and optionally segmenter mask probabilities) plus the static
  context. Objects that enter after the observed frames can only be carried by these latents.
* The decoder rebuilds every frame from scene + object + that frame's motion latent and outputs RGB
  in [-1, 1] plus 49-class mask logits (the semantic head). The semantic loss on that head is what
  pushes object identity into the object latent.

Construction needs only the ``model`` config section, so stage 2 and prediction can rebuild the
network from a checkpoint's stored config without the training code (see models/first_stage.py).
"""
from __future__ import annotations

from typing import Any, Mapping, Optional

import torch
from einops import rearrange, repeat
from omegaconf import DictConfig
from torch import nn

from models import ModelConfigError
from models.ae_blocks import Decoder2d, Encoder2d, ResBlock, fold_time
from models.latents import Latents, resolve_model_config

AUTOENCODER_DEFAULTS: dict[str, Any] = {
    "type": "scene_object_motion",
    "channels": 64,
    "encoder_mult": [1, 2, 4, 4],
    "motion_mult": [1, 2, 2, 4],
    "decoder_mult": [1, 2, 4, 4],
    "num_res_blocks": 1,
    "scene_channels": 8,
    "object_channels": 8,
    "motion_channels": 4,
    "motion_bound": "tanh",
    "num_classes": 49,
    "use_mask_input": False,
    "grad_checkpoint": False,
}


def _check_levels(cfg: dict[str, Any]) -> int:
    """All three networks must share one stride; return it."""
    depths = {len(cfg["encoder_mult"]), len(cfg["motion_mult"]), len(cfg["decoder_mult"])}
    if len(depths) != 1:
        raise ModelConfigError("model config: encoder_mult, motion_mult and decoder_mult must have the same length "
                        f"(they set the latent stride); got {cfg['encoder_mult']}, {cfg['motion_mult']}, "
                        f"{cfg['decoder_mult']}.")
    if cfg["motion_bound"] != "tanh":
        raise ModelConfigError(f"model config: motion_bound {cfg['motion_bound']!r} is not supported; use 'tanh'.")
    return 2 ** (depths.pop() - 1)


class VideoAutoencoder(nn.Module):
    """Scene/object/motion video autoencoder with a semantic head; see the module docstring."""

    def __init__(self, config: Mapping[str, Any] | DictConfig | None = None) -> None:
        super().__init__()
        cfg = resolve_model_config(config, AUTOENCODER_DEFAULTS)
        self.config = cfg
        self.stride = _check_levels(cfg)
        width, blocks, ckpt = cfg["channels"], cfg["num_res_blocks"], cfg["grad_checkpoint"]
        if cfg["num_classes"] < 0 or (cfg["use_mask_input"] and cfg["num_classes"] == 0):
            raise ModelConfigError(f"model.num_classes={cfg['num_classes']}: use 49 (competition masks) or 0 (natural "
                                   f"video, no semantic head; then model.use_mask_input must be false).")
        image_in = 3 + (cfg["num_classes"] if cfg["use_mask_input"] else 0)
        context = width * cfg["encoder_mult"][-1]
        motion_width = width * cfg["motion_mult"][-1]

        self.context_encoder = Encoder2d(image_in, width, cfg["encoder_mult"], blocks, context, ckpt)
        self.objectness = nn.Conv2d(context, 1, 1)
        self.to_scene = nn.Conv2d(context, cfg["scene_channels"], 3, padding=1)
        self.to_object = nn.Conv2d(context, cfg["object_channels"], 3, padding=1)
        static = cfg["scene_channels"] + cfg["object_channels"]
        self.static_to_motion = nn.Conv2d(static, motion_width, 1)
        self.motion_encoder = Encoder2d(image_in, width, cfg["motion_mult"], blocks, motion_width, ckpt)
        self.to_motion = nn.Sequential(ResBlock(2 * motion_width, motion_width),
                                       nn.Conv2d(motion_width, cfg["motion_channels"], 3, padding=1))
        self.decoder = Decoder2d(static + cfg["motion_channels"], width, cfg["decoder_mult"], blocks, ckpt)
        self.rgb_head = nn.Conv2d(self.decoder.out_channels, 3, 3, padding=1)
        # Natural video has no masks: num_classes 0 builds no semantic head (decode returns None for it).
        self.mask_head = (nn.Conv2d(self.decoder.out_channels, cfg["num_classes"], 3, padding=1)
                          if cfg["num_classes"] > 0 else None)

    @classmethod
    def from_config(cls, config: Mapping[str, Any] | DictConfig) -> "VideoAutoencoder":
        return cls(config)

    def latent_shapes(self, height: int, width: int) -> dict[str, tuple[int, int, int]]:
        """Per-video scene/object shapes and per-frame motion shape, each (C, h, w)."""
        self._check_size(height, width)
        h, w = height // self.stride, width // self.stride
        cfg = self.config
        return {"scene": (cfg["scene_channels"], h, w), "object": (cfg["object_channels"], h, w),
                "motion": (cfg["motion_channels"], h, w)}

    def last_layer(self) -> torch.Tensor:
        """The decoder's last RGB weight, for the VQGAN-style adaptive GAN weight."""
        return self.rgb_head.weight

    def _check_size(self, height: int, width: int) -> None:
        if height % self.stride or width % self.stride:
            raise ModelConfigError(f"frame size {height}x{width} is not divisible by the latent stride {self.stride} "
                            "(set by len(model.encoder_mult)); resize frames (data.height/data.width) to a "
                            "multiple of it, e.g. 160x240 or 64x96.")

    def _image_input(self, frames: torch.Tensor, mask_probs: Optional[torch.Tensor], name: str) -> torch.Tensor:
        if frames.ndim != 5 or frames.shape[2] != 3:
            raise ValueError(f"{name} must be [B, T, 3, H, W], got {tuple(frames.shape)}")
        self._check_size(frames.shape[-2], frames.shape[-1])
        if not self.config["use_mask_input"]:
            return frames
        if mask_probs is None:
            raise ModelConfigError("model.use_mask_input is true but no segmenter mask probabilities were given; pass "
                            "them to encode() or set model.use_mask_input=false.")
        return torch.cat([frames, mask_probs.to(frames.dtype)], dim=2)

    def context_features(self, frames: torch.Tensor, mask_probs: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Per-frame context features [B, T, C, h, w]; static latents of any set of these frames follow from them
        (static_from_context), so stage 2 computes them once per clip and derives each observed set's cheaply."""
        return fold_time(self.context_encoder, self._image_input(frames, mask_probs, "cond_frames"))

    def encode_static(self, cond_frames: torch.Tensor, cond_mask_probs: Optional[torch.Tensor] = None
                      ) -> tuple[torch.Tensor, torch.Tensor]:
        """Scene and object latents from the observed frames only."""
        return self.static_from_context(self.context_features(cond_frames, cond_mask_probs))

    def static_from_context(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Scene and object latents from the context features [B, Tc, C, h, w] of the observed frames."""
        gate = torch.sigmoid(fold_time(self.objectness, features))  # [B, Tc, 1, h, w]
        # Weighted temporal means: the gate decides which pixels are objects, the rest is background.
        objects = (gate * features).sum(1) / (gate.sum(1) + 1e-4)
        background = ((1 - gate) * features).sum(1) / ((1 - gate).sum(1) + 1e-4)
        return self.to_scene(background), self.to_object(objects)

    def encode(self, frames: torch.Tensor, cond_frames: torch.Tensor, mask_probs: Optional[torch.Tensor] = None,
               cond_mask_probs: Optional[torch.Tensor] = None) -> Latents:
        """frames [B,T,3,H,W] (motion wanted for these), cond_frames [B,Tc,3,H,W] (observed), both in [-1,1]."""
        scene, obj = self.encode_static(cond_frames, cond_mask_probs)
        per_frame = fold_time(self.motion_encoder, self._image_input(frames, mask_probs, "frames"))
        context = repeat(self.static_to_motion(torch.cat([scene, obj], 1)), "b c h w -> b t c h w",
                         t=frames.shape[1])
        preact = fold_time(self.to_motion, torch.cat([per_frame, context], dim=2))
        return Latents(scene, obj, torch.tanh(preact), preact)

    def decode(self, latents: Latents) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Every frame from scene + object + its motion latent -> (rgb [B,T,3,H,W] in [-1,1], mask logits, or
        None without a semantic head)."""
        frames = latents.motion.shape[1]
        static = torch.cat([latents.scene, latents.object], dim=1)
        x = torch.cat([repeat(static, "b c h w -> b t c h w", t=frames), latents.motion.to(static.dtype)], dim=2)
        features = self.decoder(rearrange(x, "b t c h w -> (b t) c h w"))
        rgb = torch.tanh(self.rgb_head(features))
        unfold = "(b t) c h w -> b t c h w"
        if self.mask_head is None:
            return rearrange(rgb, unfold, t=frames), None
        return rearrange(rgb, unfold, t=frames), rearrange(self.mask_head(features), unfold, t=frames)

    def forward(self, frames: torch.Tensor, cond_frames: torch.Tensor, mask_probs: Optional[torch.Tensor] = None,
                cond_mask_probs: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor, Latents]:
        """Encode then decode: (rgb, mask_logits, latents). One call so DDP sees every parameter used."""
        latents = self.encode(frames, cond_frames, mask_probs, cond_mask_probs)
        rgb, mask_logits = self.decode(latents)
        return rgb, mask_logits, latents
