"""Inference over the latent video model: observed frames -> sampled future frames (RGB and mask logits).

A stage-2 checkpoint is self-contained (first-stage config and weights, denoiser EMA weights, latent scale
factors), so prediction needs no training code and no other file.
"""
from __future__ import annotations

from dataclasses import dataclass
import contextlib
from typing import Callable, Sequence

import torch
from omegaconf import DictConfig, OmegaConf

from models.latents import Latents
from models.denoiser import DenoiserCond, VideoDenoiser
from tools.core.checkpoint import load_checkpoint, weights_for_inference
from tools.diffusion.gaussian import GaussianDiffusion
from tools.core.errors import UserError
from tools.predict.first_stage_io import build_frozen_first_stage
from tools.diffusion.precond import Precond
from tools.diffusion.samplers import sample
from tools.diffusion.strategies import complete_targets


AmpContext = Callable[[], contextlib.AbstractContextManager]


@dataclass
class LatentScales:
    """Multipliers that bring motion and static latents to unit standard deviation (measured once)."""

    motion: float = 1.0
    static: float = 1.0


def build_denoiser(cfg: DictConfig, first_stage: torch.nn.Module) -> VideoDenoiser:
    """The denoiser sized for the first stage's latents (pixels in pixel mode)."""
    shapes = first_stage.latent_shapes(int(cfg.data.height), int(cfg.data.width))
    static_channels = shapes["scene"][0] + shapes["object"][0]
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    return VideoDenoiser.from_config(model_cfg, channels=shapes["motion"][0], static_channels=static_channels)


class VideoPredictor:
    """A frozen first stage, a denoiser and its diffusion process, used for sampling only."""

    def __init__(self, first_stage: torch.nn.Module, denoiser: torch.nn.Module, cfg: DictConfig,
                 scales: LatentScales, device: torch.device) -> None:
        self.first_stage, self.denoiser, self.cfg = first_stage, denoiser, cfg
        self.diffusion = GaussianDiffusion.from_config(cfg.diffusion)
        self.scales, self.device = scales, device

    @classmethod
    def from_checkpoint(cls, path: str, device: torch.device) -> "VideoPredictor":
        state = load_checkpoint(path, map_location="cpu")
        if "first_stage" not in state or "scales" not in state:
            raise UserError(f"'{path}' is not a stage-2 checkpoint (no first stage or latent scales inside); "
                            f"pass the model_last.pth of an `--exp ddpm` run")
        cfg = OmegaConf.create(state["config"])
        first_stage = build_frozen_first_stage(state["first_stage"], device)
        denoiser = build_denoiser(cfg, first_stage)
        denoiser.load_state_dict(weights_for_inference(state))
        return cls(first_stage, denoiser.to(device).eval().requires_grad_(False), cfg,
                   LatentScales(**state["scales"]), device)

    def encode(self, frames: torch.Tensor, cond_frames: torch.Tensor) -> tuple[Latents, torch.Tensor | None]:
        """Raw latents and the scaled static condition (None when the first stage has none)."""
        latents = self.first_stage.encode(frames, cond_frames)
        static = torch.cat([latents.scene, latents.object], dim=1)
        return latents, (static * self.scales.static if static.shape[1] else None)

    def make_cond(self, obs: torch.Tensor, obs_idx: Sequence[int], tgt_idx: Sequence[int],
                  static: torch.Tensor | None) -> DenoiserCond:
        batch = obs.shape[0]
        as_rows = lambda idx: torch.tensor(list(idx), device=obs.device).expand(batch, -1)  # noqa: E731
        keep = torch.ones(batch, len(obs_idx), dtype=torch.bool, device=obs.device)
        return DenoiserCond(obs, as_rows(obs_idx), as_rows(tgt_idx), keep, static)

    @torch.no_grad()
    def sample_targets(self, obs: torch.Tensor, obs_idx: Sequence[int], tgt_idx: Sequence[int],
                       static: torch.Tensor | None, generator: torch.Generator | None = None,
                       amp: AmpContext | None = None) -> torch.Tensor:
        """One conditional sampling run: scaled observed latents [B,To,C,h,w] -> scaled targets [B,Tt,C,h,w]."""
        dcfg = self.cfg.diffusion
        cond = self.make_cond(obs, obs_idx, tgt_idx, static)
        denoise = Precond(self.denoiser, self.diffusion).sampler_denoise(cond, float(dcfg.get("guidance_scale", 1.0)))
        shape = (obs.shape[0], len(tgt_idx), *obs.shape[2:])
        gen_device = generator.device if generator is not None else obs.device
        x_T = torch.randn(shape, generator=generator, device=gen_device).to(obs.device)
        with (amp or contextlib.nullcontext)():
            out = sample(lambda x, t: denoise(x, t).float(), x_T, self.diffusion, str(dcfg.sampler),
                         int(dcfg.sample_steps), float(dcfg.get("eta", 0.0)), generator)
        return out.float()

    @torch.no_grad()
    def predict(self, observed_frames: torch.Tensor, targets: Sequence[int], n_samples: int = 1,
                strategy: str | None = None, generator: torch.Generator | None = None,
                amp: AmpContext | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Observed frames [B,To,3,H,W] in [-1,1] (frames 0..To-1) -> decoded targets.

        Returns rgb [B, n_samples, K, 3, H, W] in [-1,1] and mask logits [B, n_samples, K, 49, H, W] (or None
        for a first stage without a semantic head), K = len(targets).
        """
        batch, n_obs = observed_frames.shape[:2]
        frames = observed_frames.repeat_interleave(n_samples, dim=0)
        latents, static = self.encode(frames, frames)
        known = {i: latents.motion[:, i] * self.scales.motion for i in range(n_obs)}
        known = complete_targets(known, targets, n_obs, self.cfg.inference,
                                 lambda o, t, obs: self.sample_targets(obs, o, t, static, generator, amp), strategy)
        motion = torch.stack([known[i] for i in targets], dim=1) / self.scales.motion
        rgb, mask_logits = self.first_stage.decode(Latents(latents.scene, latents.object, motion))
        unfold = lambda x: x.reshape(batch, n_samples, *x.shape[1:])  # noqa: E731
        return unfold(rgb.float()), (unfold(mask_logits.float()) if mask_logits is not None else None)
