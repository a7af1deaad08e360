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
from tools.diffusion.video_plans import Plan, relative


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


def static_channels_of(cfg: DictConfig, first_stage: torch.nn.Module) -> int:
    shapes = first_stage.latent_shapes(int(cfg.data.height), int(cfg.data.width))
    return shapes["scene"][0] + shapes["object"][0]


def build_static_prior(cfg: DictConfig, first_stage: torch.nn.Module) -> VideoDenoiser | None:
    """The small diffusion model over scene + object latents that generation draws them from (nothing observed
    means nothing to compute them from), or None when the config has none or the first stage has no static
    latents (pixel mode). It is a one-frame VideoDenoiser, so it runs through the same diffusion code."""
    section = cfg.get("static_prior")
    channels = static_channels_of(cfg, first_stage)
    if section is None or not section.get("enabled", False) or channels == 0:
        return None
    options = {k: v for k, v in OmegaConf.to_container(section, resolve=True).items() if k != "enabled"}
    return VideoDenoiser.from_config(options, channels=channels, static_channels=0)


def prior_cond(batch: int, latent: torch.Tensor) -> DenoiserCond:
    """The static prior's conditioning: no observed frame, one target at position 0."""
    empty_obs = latent.new_zeros(batch, 0, *latent.shape[-3:])
    no_index = torch.zeros(batch, 0, dtype=torch.long, device=latent.device)
    return DenoiserCond(empty_obs, no_index, torch.zeros(batch, 1, dtype=torch.long, device=latent.device),
                        torch.zeros(batch, 0, dtype=torch.bool, device=latent.device))


class VideoPredictor:
    """A frozen first stage, a denoiser and its diffusion process, used for sampling only."""

    def __init__(self, first_stage: torch.nn.Module, denoiser: torch.nn.Module, cfg: DictConfig,
                 scales: LatentScales, device: torch.device, static_prior: torch.nn.Module | None = None) -> None:
        self.first_stage, self.denoiser, self.cfg = first_stage, denoiser, cfg
        self.diffusion = GaussianDiffusion.from_config(cfg.diffusion)
        self.scales, self.device = scales, device
        self.static_prior = static_prior

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
        prior = build_static_prior(cfg, first_stage)
        if prior is not None:
            if "static_prior" not in state:
                raise UserError(f"'{path}' has static_prior.enabled in its config but no static prior weights; "
                                f"the checkpoint is damaged")
            prior.load_state_dict(weights_for_inference(state["static_prior"]))
            prior = prior.to(device).eval().requires_grad_(False)
        return cls(first_stage, denoiser.to(device).eval().requires_grad_(False), cfg,
                   LatentScales(**state["scales"]), device, prior)

    def with_random_weights(self, seed: int) -> "VideoPredictor":
        """The same model before training (freshly initialised denoiser and prior, the same first stage): the
        'untrained model' row that a trained one must beat."""
        torch.manual_seed(seed)
        denoiser = build_denoiser(self.cfg, self.first_stage).to(self.device).eval().requires_grad_(False)
        prior = build_static_prior(self.cfg, self.first_stage)
        prior = prior.to(self.device).eval().requires_grad_(False) if prior is not None else None
        return VideoPredictor(self.first_stage, denoiser, self.cfg, self.scales, self.device, prior)

    def encode(self, frames: torch.Tensor, cond_frames: torch.Tensor) -> tuple[Latents, torch.Tensor | None]:
        """Raw latents and the scaled static condition (None when the first stage has none)."""
        latents = self.first_stage.encode(frames, cond_frames)
        static = torch.cat([latents.scene, latents.object], dim=1)
        return latents, (static * self.scales.static if static.shape[1] else None)

    def make_cond(self, obs: torch.Tensor, obs_idx: Sequence[int], tgt_idx: Sequence[int],
                  static: torch.Tensor | None, keep_static: bool = False) -> DenoiserCond:
        """keep_static: the static latents count even with nothing observed (generation from the prior)."""
        batch = obs.shape[0]
        as_rows = lambda idx: torch.tensor(list(idx), dtype=torch.long, device=obs.device).expand(batch, -1)  # noqa: E731
        keep = torch.ones(batch, len(obs_idx), dtype=torch.bool, device=obs.device)
        static_keep = torch.ones(batch, dtype=torch.bool, device=obs.device) if keep_static else None
        return DenoiserCond(obs, as_rows(obs_idx), as_rows(tgt_idx), keep, static, static_keep)

    def _run_sampler(self, network: torch.nn.Module, cond: DenoiserCond, shape: tuple[int, ...], device: torch.device,
                     generator: torch.Generator | None, amp: AmpContext | None, guidance: float = 1.0) -> torch.Tensor:
        dcfg = self.cfg.diffusion
        denoise = Precond(network, self.diffusion).sampler_denoise(cond, guidance)
        gen_device = generator.device if generator is not None else device
        x_T = torch.randn(shape, generator=generator, device=gen_device).to(device)
        with (amp or contextlib.nullcontext)():
            out = sample(lambda x, t: denoise(x, t).float(), x_T, self.diffusion, str(dcfg.sampler),
                         int(dcfg.sample_steps), float(dcfg.get("eta", 0.0)), generator)
        return out.float()

    @torch.no_grad()
    def sample_targets(self, obs: torch.Tensor, obs_idx: Sequence[int], tgt_idx: Sequence[int],
                       static: torch.Tensor | None, generator: torch.Generator | None = None,
                       amp: AmpContext | None = None, keep_static: bool = False) -> torch.Tensor:
        """One conditional sampling run: scaled observed latents [B,To,C,h,w] -> scaled targets [B,Tt,C,h,w]."""
        cond = self.make_cond(obs, obs_idx, tgt_idx, static, keep_static)
        shape = (obs.shape[0], len(tgt_idx), *obs.shape[2:])
        return self._run_sampler(self.denoiser, cond, shape, obs.device, generator, amp,
                                 float(self.cfg.diffusion.get("guidance_scale", 1.0)))

    @torch.no_grad()
    def sample_static(self, batch: int, generator: torch.Generator | None = None,
                      amp: AmpContext | None = None) -> torch.Tensor | None:
        """Scaled scene + object latents [B, Cs+Co, h, w] drawn from the static prior (None without static latents)."""
        shapes = self.first_stage.latent_shapes(int(self.cfg.data.height), int(self.cfg.data.width))
        channels = shapes["scene"][0] + shapes["object"][0]
        if channels == 0:
            return None
        if self.static_prior is None:
            raise UserError("generate mode needs scene and object latents, and this stage-2 checkpoint has no static "
                            "prior: train stage 2 with static_prior.enabled=true (configs/latent-diffusion/ucf101.yaml)")
        like = torch.zeros(1, channels, *shapes["scene"][1:], device=self.device)
        cond = prior_cond(batch, like)
        return self._run_sampler(self.static_prior, cond, (batch, 1, *like.shape[1:]), self.device, generator, amp)[:, 0]

    @torch.no_grad()
    def sample_video(self, observed_frames: torch.Tensor | None, observed: Sequence[int], wanted: Sequence[int],
                     plan: Plan, generator: torch.Generator | None = None, amp: AmpContext | None = None,
                     batch: int | None = None) -> torch.Tensor:
        """Frames at `observed` (observed_frames [B,To,3,H,W] in [-1,1], or None when nothing is observed) ->
        decoded rgb [B, len(wanted), 3, H, W] in [-1,1] of the frames in `wanted`, generated by `plan`
        (tools/diffusion/video_plans.py). Positions are relative to each step's first frame when the config's
        inference.positions is 'relative', or when a step reaches past the training clip (long videos)."""
        if observed:
            latents, static = self.encode(observed_frames, observed_frames)
            known = {f: latents.motion[:, i].float() * self.scales.motion for i, f in enumerate(observed)}
            keep_static, batch = False, observed_frames.shape[0]
        else:
            static, known, keep_static = self.sample_static(int(batch), generator, amp), {}, True
        n_frames = int(self.cfg.frames.n_frames)
        relative_always = str(self.cfg.get("inference", {}).get("positions", "absolute")) == "relative"
        like = self._latent_like(int(batch))
        for obs_idx, tgt_idx in plan:
            obs = torch.stack([known[f] for f in obs_idx], 1) if obs_idx else like[:, :0]
            positions = (obs_idx, tgt_idx)
            if relative_always or max([*obs_idx, *tgt_idx]) >= n_frames:
                positions = relative(obs_idx, tgt_idx)
            generated = self.sample_targets(obs, *positions, static, generator, amp, keep_static=keep_static)
            known.update({f: generated[:, k] for k, f in enumerate(tgt_idx)})
        motion = torch.stack([known[f] for f in wanted], 1) / self.scales.motion
        scene, obj = self._split_static(static, int(batch))
        rgb, _ = self.first_stage.decode(Latents(scene, obj, motion))
        return rgb.float()

    @torch.no_grad()
    def reconstruct(self, frames: torch.Tensor, amp: AmpContext | None = None) -> torch.Tensor:
        """Stage 1 alone: frames [B,T,3,H,W] in [-1,1] encoded (static latents from the first data.cond_frames, as
        in training) and decoded."""
        with (amp or contextlib.nullcontext)():
            latents = self.first_stage.encode(frames, frames[:, : int(self.cfg.data.cond_frames)])
            rgb, _ = self.first_stage.decode(latents)
        return rgb.float()

    def _latent_like(self, batch: int) -> torch.Tensor:
        shape = self.first_stage.latent_shapes(int(self.cfg.data.height), int(self.cfg.data.width))["motion"]
        return torch.zeros(batch, 1, *shape, device=self.device)

    def _split_static(self, static: torch.Tensor | None, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Scaled static latents back to the first stage's (scene, object)."""
        shapes = self.first_stage.latent_shapes(int(self.cfg.data.height), int(self.cfg.data.width))
        if static is None:
            empty = torch.zeros(batch, 0, *shapes["motion"][1:], device=self.device)
            return empty, empty.clone()
        static = static / self.scales.static
        return static[:, :shapes["scene"][0]], static[:, shapes["scene"][0]:]

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
