"""Frame-22 masks through object slots: masks of frames 1-11 -> states -> N sampled futures -> masks.

A slot stage-2 checkpoint is self-contained (the slot first stage's config and weights, the denoiser's EMA
weights, the state scales), so prediction needs no training code. The samples are combined into one mask
by a per-pixel vote over the decoded samples (`vote`), by decoding the mean sampled state (`mean_state`:
presence by majority), or by decoding each object's most typical sample (`mode`: the sample whose centroid has
the most other samples' centroids near it, a kernel density estimate). `guess` skips the diffusion and decodes
the motion head's deterministic guess (an ablation: what the samples add to it). One mask is scored, and the Jaccard of
a moved object is all or nothing: when an object may or may not be hit, the mean puts it between the two
outcomes and scores in neither, while the mode picks the likelier one.
"""
from __future__ import annotations

import contextlib
from dataclasses import replace
from typing import Callable, Sequence

import torch
from omegaconf import DictConfig, OmegaConf

from models.slot_autoencoder import SlotAutoencoder
from models.slot_transformer import SlotTransformer
from models.slots import SlotLatents, gather_frame, last_present, mask_states
from tools.core.checkpoint import load_checkpoint, weights_for_inference
from tools.core.errors import UserError
from tools.diffusion.gaussian import GaussianDiffusion
from tools.diffusion.precond import Precond
from tools.diffusion.samplers import sample
from tools.diffusion.slot_frames import (MotionPrior, frame_codes, from_relative, scatter_slots, shift_by_motion,
                                        slot_condition)
from tools.diffusion.strategies import complete_targets
from tools.predict.first_stage_io import build_frozen_first_stage
from tools.predict.postprocess import majority_vote

COMBINES = ("vote", "mean_state", "mode", "guess")  # guess: the motion head's deterministic guess, no sampling
MODE_BANDWIDTH = 0.02  # kernel width in normalised image units (2.4 px across, 1.6 px down); measured best of 0.02-0.1
AmpContext = Callable[[], contextlib.AbstractContextManager]


NOT_NETWORK_KEYS = ("backbone", "motion_prior", "motion_friction")


def motion_prior(cfg: DictConfig) -> MotionPrior:
    """The extrapolation the targets are anchored on: `model.motion_prior` (per-frame decay r; 0 = none, as in
    checkpoints from before it existed) and `model.motion_friction` (pixels per frame, at data.height x
    data.width; 0 = a pure decay, as in checkpoints from before it existed)."""
    decay = float(cfg.model.get("motion_prior", 0.0) or 0.0)
    friction = float(cfg.model.get("motion_friction", 0.0) or 0.0)
    if not 0.0 <= decay <= 1.0:
        raise UserError(f"model.motion_prior={decay} must be within 0..1 (the per-frame decay of the extrapolated "
                        f"last step; 0 turns the prior off)")
    if friction < 0:
        raise UserError(f"model.motion_friction={friction} must be >= 0 (pixels per frame of speed lost each frame)")
    pixels = (float(cfg.data.get("width", 240)) / 2, float(cfg.data.get("height", 160)) / 2)
    return MotionPrior(decay, friction, pixels)


def build_slot_denoiser(cfg: DictConfig) -> SlotTransformer:
    """The slot transformer from a run config's `model` section (all keys but NOT_NETWORK_KEYS)."""
    motion_prior(cfg)
    options = {k: v for k, v in OmegaConf.to_container(cfg.model, resolve=True).items()
               if k not in NOT_NETWORK_KEYS}
    try:
        return SlotTransformer(**options)
    except TypeError as error:
        raise UserError(f"the model section of the slot diffusion config is invalid: {error}") from error


def is_slot_checkpoint(state: dict) -> bool:
    return "slot_scales" in state


def require_combine(combine: str) -> None:
    if combine not in COMBINES:
        raise UserError(f"predict.slot_combine={combine!r} is unknown; use one of {', '.join(COMBINES)}")


def mean_state(states: torch.Tensor) -> torch.Tensor:
    """[B, N, 48, D] -> [B, 1, 48, D]: presence by majority, the other dimensions averaged over the samples where
    the object is present."""
    present = (states[..., :1] > 0.5).float().mean(1) > 0.5
    mean = states.sum(1) / (states[..., :1] > 0.5).sum(1).clamp(min=1)
    return (torch.cat([present.float(), mean[..., 1:]], -1) * present)[:, None]


def mode_state(states: torch.Tensor, bandwidth: float = MODE_BANDWIDTH) -> torch.Tensor:
    """[B, N, 48, D] -> [B, 1, 48, D]: per object, the whole sampled state (presence included) whose centroid
    has the highest Gaussian kernel density among the N samples' centroids. Samples where the object has gone
    are zeros, so they form one cluster of their own and win when most samples agree on it. Ties go to the
    lower sample index (deterministic)."""
    centre = states[..., 1:3]                                                  # [B, N, 48, 2]
    distance = (centre[:, :, None] - centre[:, None]).norm(dim=-1)             # [B, N, N, 48]
    density = torch.exp(-0.5 * (distance / bandwidth) ** 2).sum(2)            # [B, N, 48]
    best = density.argmax(1)                                                   # [B, 48]
    return states.gather(1, best[:, None, :, None].expand(-1, 1, -1, states.shape[-1]))


def combine_samples(states: torch.Tensor, combine: str) -> torch.Tensor:
    """Sampled states [B, N, 48, D] of one frame -> the states to decode: all N (`vote`: the decoded masks are
    voted per pixel), or one per object (`mean_state`, `mode`); `guess` has one sample already."""
    require_combine(combine)
    if combine == "mean_state":
        return mean_state(states)
    if combine == "mode":
        return mode_state(states)
    return states


class SlotPredictor:
    """A frozen slot first stage, the slot denoiser and its diffusion process, for sampling only."""

    def __init__(self, first_stage: SlotAutoencoder, denoiser: torch.nn.Module, cfg: DictConfig,
                 scales: Sequence[float], device: torch.device) -> None:
        self.first_stage, self.denoiser, self.cfg, self.device = first_stage, denoiser, cfg, device
        self.diffusion = GaussianDiffusion.from_config(cfg.diffusion)
        self.scales = torch.tensor(list(scales), dtype=torch.float32, device=device)
        self.prior = motion_prior(cfg)

    @classmethod
    def from_checkpoint(cls, path: str, device: torch.device) -> "SlotPredictor":
        state = load_checkpoint(path, map_location="cpu")
        if not is_slot_checkpoint(state):
            raise UserError(f"'{path}' is not a slot stage-2 checkpoint; pass the model_last.pth of an "
                            f"`--exp ddpm` run with model.backbone=slot_transformer")
        cfg = OmegaConf.create(state["config"])
        denoiser = build_slot_denoiser(cfg)
        denoiser.load_state_dict(weights_for_inference(state))
        first_stage = build_frozen_first_stage(state["first_stage"], device)
        return cls(first_stage, denoiser.to(device).eval().requires_grad_(False), cfg, state["slot_scales"], device)

    @torch.no_grad()
    def sample_targets(self, obs: torch.Tensor, obs_idx: Sequence[int], tgt_idx: Sequence[int],
                       slot_codes: torch.Tensor, generator: torch.Generator | None,
                       amp: AmpContext | None = None, guess: bool = False) -> torch.Tensor:
        """One conditional sampling run: absolute states of observed frames [B, To, 48, D] -> targets [B, Tt, 48, D].

        guess: no sampling; the motion head's guess (a zero residual: every object stays present)."""
        batch = obs.shape[0]
        rows = lambda idx: torch.tensor(list(idx), device=obs.device).expand(batch, -1)  # noqa: E731
        keep = torch.ones(batch, len(obs_idx), dtype=torch.bool, device=obs.device)
        cond, slots = slot_condition(obs, slot_codes, rows(obs_idx), keep, rows(tgt_idx), self.scales, self.prior)
        cond = replace(cond, context=self.denoiser.encode_context(cond))  # once per run, not per step
        cond = replace(cond, motion=self.denoiser.motion(cond))
        denoise = Precond(self.denoiser, self.diffusion).sampler_denoise(
            cond, float(self.cfg.diffusion.get("guidance_scale", 1.0)))
        shape = (batch, len(tgt_idx), slots.shape[1], obs.shape[-1])
        if guess:
            if cond.motion is None:
                raise UserError("predict.slot_combine=guess needs a slot checkpoint with a motion head "
                                "(model.motion_head: true); use mode, mean_state or vote")
            x0 = shift_by_motion(torch.zeros(shape, device=obs.device), cond.motion, 1.0)
            return scatter_slots(from_relative(x0, cond.anchor, self.scales), slots, cond.valid, obs.shape[2])
        gen_device = generator.device if generator is not None else obs.device
        dcfg = self.cfg.diffusion
        temperature = float(dcfg.get("temperature", 1.0))  # < 1: samples nearer the most likely ones (DDIM)
        x_T = torch.randn(shape, generator=generator, device=gen_device).to(obs.device) * temperature
        with (amp or contextlib.nullcontext)():
            x0 = sample(lambda x, t: denoise(x, t).float(), x_T, self.diffusion, str(dcfg.sampler),
                        int(dcfg.sample_steps), float(dcfg.get("eta", 0.0)), generator)
        x0 = shift_by_motion(x0.float(), cond.motion, 1.0)  # sampled residuals -> offsets from the anchor
        return scatter_slots(from_relative(x0, cond.anchor, self.scales), slots, cond.valid, obs.shape[2])

    @torch.no_grad()
    def sample_states(self, observed_masks: torch.Tensor, targets: Sequence[int], n_samples: int = 1,
                      strategy: str | None = None, generator: torch.Generator | None = None,
                      amp: AmpContext | None = None, states: torch.Tensor | None = None,
                      guess: bool = False) -> torch.Tensor:
        """Observed masks [B, To, H, W] (frames 0..To-1) -> sampled absolute states [B, N, K, 48, D].

        states: the masks' states when the caller has them already (SlotLatents.states); guess: the motion
        head's guess instead of samples (sample_targets)."""
        batch, n_obs = observed_masks.shape[:2]
        if states is None:
            states = mask_states(observed_masks.long(), self.first_stage.num_classes)
        codes = frame_codes(observed_masks.long(), states)
        observed = torch.ones(batch, n_obs, dtype=torch.bool, device=states.device)
        slot_codes = gather_frame(codes, last_present(states, observed))  # [B, 48, C]
        states = states.repeat_interleave(n_samples, 0)
        slot_codes = slot_codes.repeat_interleave(n_samples, 0)
        known = {i: states[:, i] for i in range(n_obs)}
        known = complete_targets(known, targets, n_obs, self.cfg.inference,
                                 lambda o, t, obs: self.sample_targets(obs, o, t, slot_codes, generator, amp, guess),
                                 strategy)
        sampled = torch.stack([known[i] for i in targets], dim=1)
        return sampled.reshape(batch, n_samples, *sampled.shape[1:])

    def latents(self, observed_masks: torch.Tensor, observed_frames: torch.Tensor | None) -> SlotLatents:
        """Object, colour and scene latents of the observed frames (frames [B, To, 3, H, W] in [0, 1] or None)."""
        return self.first_stage.encode(observed_frames, observed_masks.long(), observed_masks.shape[1])

    @torch.no_grad()
    def decode(self, latents: SlotLatents, states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """States [B, N, 48, D] of one frame -> (the per-pixel majority of the N decoded masks [B, H, W] uint8,
        rgb of sample 0 [B, 3, H, W])."""
        batch, n_samples = states.shape[:2]
        repeat = lambda x: x.repeat_interleave(n_samples, 0)  # noqa: E731
        expanded = SlotLatents(repeat(latents.scene), repeat(latents.objects), repeat(latents.colours),
                               states.flatten(0, 1)[:, None], repeat(latents.known))
        log_probs, rgb = self.first_stage.decode(expanded)
        masks = log_probs[:, 0].argmax(1).view(batch, n_samples, *log_probs.shape[-2:])
        voted = torch.stack([majority_vote(m) for m in masks]).to(torch.uint8)
        return voted, rgb[:, 0].view(batch, n_samples, *rgb.shape[2:])[:, 0]

    def decode_masks(self, latents: SlotLatents, states: torch.Tensor, combine: str = "vote"
                     ) -> tuple[torch.Tensor, torch.Tensor]:
        """Sampled states [B, N, 48, D] of one frame -> (one mask [B, H, W] uint8, rgb of sample 0 [B, 3, H, W])."""
        return self.decode(latents, combine_samples(states, combine))

    @torch.no_grad()
    def predict(self, observed_masks: torch.Tensor, observed_frames: torch.Tensor | None, targets: Sequence[int],
                n_samples: int = 1, strategy: str | None = None, combine: str = "vote",
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Masks [B, K, H, W] uint8 and RGB [B, K, 3, H, W] in [0, 1] of the target frames."""
        require_combine(combine)
        latents = self.latents(observed_masks, observed_frames)
        guess = combine == "guess"
        sampled = self.sample_states(observed_masks, targets, 1 if guess else n_samples, strategy, generator,
                                     states=latents.states, guess=guess)
        outputs = [self.decode_masks(latents, sampled[:, :, k], combine) for k in range(len(targets))]
        return torch.stack([o[0] for o in outputs], 1), torch.stack([o[1] for o in outputs], 1)
