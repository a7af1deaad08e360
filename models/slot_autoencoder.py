"""Stage 1 of the object-slot route (`model.type: slots`): masks and frames <-> scene, objects and states.

See models/slots.py for what each latent is. The learned part is small on purpose: a refiner that turns an
object's template (and colour) into sharper mask logits. Everything geometric (where, how large, how turned)
is read off the masks, so stage 2 only has to predict a few numbers per object and frame.
"""
from __future__ import annotations

from typing import Any, Mapping

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import Tensor, nn

from models.latents import resolve_model_config
from models.slots import (LOG_EPS, SLOT_DEFAULTS, SlotLatents, composite, gather_frame, last_present,
                          mask_states, render_templates, sample_templates)

ABSENT_LOGIT = -1.0e4  # a class without an object latent: never chosen, finite so losses stay finite


def observed_flags(observed: int | Tensor, batch: int, frames: int, device: torch.device) -> Tensor:
    """bool [B, T]: which frames count as observed (an int n means frames 0..n-1)."""
    if isinstance(observed, Tensor):
        return observed.to(device=device, dtype=torch.bool).expand(batch, frames)
    return (torch.arange(frames, device=device) < int(observed)).expand(batch, frames)


def slot_masks_at(masks: Tensor, frame_index: Tensor) -> Tensor:
    """Binary masks [B, S, H, W] of slot s (class s + 1) in frame frame_index[b, s] of masks [B, T, H, W]."""
    batch, slots = frame_index.shape
    chosen = masks.gather(1, frame_index.clamp(min=0)[..., None, None].expand(-1, -1, *masks.shape[-2:]))
    classes = torch.arange(1, slots + 1, device=masks.device).view(1, slots, 1, 1)
    return chosen.long() == classes


def background_median(frames: Tensor, masks: Tensor, observed: Tensor) -> Tensor:
    """Per-pixel median over the observed frames (observed [B, T] bool) of frames [B, T, 3, H, W] where no
    object covers the pixel (masks [B, T, H, W]) -> [B, 3, H, W]."""
    free = ((masks == 0) & observed[..., None, None])[:, :, None].expand_as(frames)
    values = torch.where(free, frames.float(), torch.full_like(frames, float("nan"), dtype=torch.float32))
    scene = values.nanmedian(dim=1).values
    fallback = values.transpose(1, 2).flatten(2).nanmedian(dim=-1).values  # [B, 3]
    scene = torch.where(scene.isnan(), fallback[..., None, None].expand_as(scene), scene)
    return scene.nan_to_num(0.5)


def known_slots(known: Tensor) -> tuple[Tensor, Tensor]:
    """The slots with an object latent, first: (indices [B, S'] into the 48 slots, valid [B, S'] bool), S' the
    largest count in the batch (at least 1); padding entries repeat a slot and are marked invalid."""
    count = max(int(known.sum(1).max()), 1)
    order = torch.argsort((~known).to(torch.int8), dim=1, stable=True)[:, :count]
    return order, known.gather(1, order)


class SlotAutoencoder(nn.Module):
    """encode(frames, masks, observed) -> SlotLatents; decode(latents, states) -> (log-probabilities, rgb)."""

    def __init__(self, config: Mapping[str, Any] | DictConfig | None = None) -> None:
        super().__init__()
        self.config = resolve_model_config(config, SLOT_DEFAULTS)
        self.num_classes = int(self.config["num_classes"])
        self.template_size = int(self.config["template_size"])
        self.min_pixels = int(self.config["min_pixels"])
        width = int(self.config["refiner_channels"])
        self.refiner = nn.Sequential(nn.Conv2d(4, width, 3, padding=1), nn.SiLU(),
                                     nn.Conv2d(width, width, 3, padding=1), nn.SiLU(),
                                     nn.Conv2d(width, 1, 3, padding=1))
        nn.init.zeros_(self.refiner[-1].weight)  # starts as the plain template: decoding works untrained
        nn.init.zeros_(self.refiner[-1].bias)
        self.gain = nn.Parameter(torch.tensor(1.0))

    def states(self, masks: Tensor) -> Tensor:
        """States [..., S, D] of class-id masks [..., H, W] (the motion latents)."""
        return mask_states(masks, self.num_classes, self.min_pixels)

    def encode(self, frames: Tensor | None, masks: Tensor, observed: int | Tensor) -> SlotLatents:
        """frames [B, T, 3, H, W] in [0, 1] (or None: grey scene and colours), masks [B, T, H, W] class ids.

        States cover every frame given; objects, colours and scene use the observed frames only.
        """
        batch, n_frames = masks.shape[:2]
        states = self.states(masks)
        flags = observed_flags(observed, batch, n_frames, masks.device)
        last = last_present(states, flags)
        known = last >= 0
        binary = slot_masks_at(masks, last) & known[..., None, None]
        templates = sample_templates(binary, gather_frame(states, last), self.template_size)
        if frames is None:
            colours = torch.full((*known.shape, 3), 0.5, device=masks.device)
            scene = torch.full((batch, 3, *masks.shape[-2:]), 0.5, device=masks.device)
        else:
            at_last = frames.gather(1, last.clamp(min=0)[..., None, None, None].expand(-1, -1, *frames.shape[2:]))
            weight = binary[:, :, None].float()
            colours = (at_last.float() * weight).sum((-1, -2)) / weight.sum((-1, -2)).clamp(min=1)
            scene = background_median(frames, masks, flags)
        return SlotLatents(scene, templates * known[..., None, None, None], colours, states, known)

    def template_logits(self, latents: SlotLatents) -> Tensor:
        """Refined occupancy logits of the templates [B, S, 1, K, K]."""
        templates = latents.objects
        batch, slots = templates.shape[:2]
        size = templates.shape[-1]
        colour_planes = latents.colours[..., None, None].expand(-1, -1, -1, size, size)
        x = torch.cat([templates, colour_planes], dim=2).reshape(batch * slots, 4, size, size)
        plain = torch.logit(templates.clamp(0.02, 0.98))
        return self.gain * plain + self.refiner(x).reshape_as(templates)

    def decode(self, latents: SlotLatents, states: Tensor | None = None,
               size: tuple[int, int] | None = None) -> tuple[Tensor, Tensor]:
        """States [B, T, S, D] (default: the latents' own) -> (log-probabilities [B, T, 49, H, W], rgb [B, T, 3, H, W]).

        A slot is drawn where its class has an object latent and its state says present. Only the slots with
        an object latent are rendered (a clip has a handful of the 48), then scattered to their class channels.
        """
        states = latents.states if states is None else states
        height, width = size or tuple(latents.scene.shape[-2:])
        scene = latents.scene if tuple(latents.scene.shape[-2:]) == (height, width) else \
            F.interpolate(latents.scene, size=(height, width), mode="bilinear", align_corners=False)
        slots, known = known_slots(latents.known)
        pick = lambda x: x.gather(1, slots.view(*slots.shape, *([1] * (x.dim() - 2))).expand(-1, -1, *x.shape[2:]))  # noqa: E731
        compact = SlotLatents(scene, pick(latents.objects), pick(latents.colours), states, known)
        probabilities = torch.sigmoid(self.template_logits(compact))
        frames = []
        for t in range(states.shape[1]):
            state = pick(states[:, t])
            log_probs, rgb = self._decode_frame(compact, probabilities, state, scene, height, width)
            full = log_probs.new_full((log_probs.shape[0], self.num_classes, height, width), ABSENT_LOGIT)
            full[:, :1] = log_probs[:, :1]
            full.scatter_(1, (slots + 1)[..., None, None].expand(-1, -1, height, width), log_probs[:, 1:])
            frames.append((full, rgb))
        return torch.stack([f[0] for f in frames], 1), torch.stack([f[1] for f in frames], 1)

    def _decode_frame(self, latents: SlotLatents, probabilities: Tensor, state: Tensor, scene: Tensor,
                      height: int, width: int) -> tuple[Tensor, Tensor]:
        drawn = latents.known & (state[..., 0] > 0.5)  # [B, S]
        occupancy = render_templates(probabilities, state, height, width) * drawn[..., None, None]
        visible, background = composite(occupancy, depth=state[..., 2])
        class_scores = visible.clamp(min=LOG_EPS).log().masked_fill(~drawn[..., None, None], ABSENT_LOGIT)
        log_probs = torch.cat([background.clamp(min=LOG_EPS).log()[:, None], class_scores], dim=1)
        rgb = scene * background[:, None] + torch.einsum("bshw,bsc->bchw", visible, latents.colours)
        return log_probs, rgb

    def forward(self, frames: Tensor, masks: Tensor, observed: int, decode_frames: Tensor) -> tuple[Tensor, Tensor]:
        """Training pass (one call, so DDP sees every parameter): encode, then decode the frames
        `decode_frames` [K] from their true states -> (log-probabilities [B, K, 49, H, W], known [B, S])."""
        latents = self.encode(frames, masks, observed)
        log_probs, _ = self.decode(latents, latents.states[:, decode_frames])
        return log_probs, latents.known

    def latent_shapes(self, height: int, width: int) -> dict[str, tuple[int, ...]]:
        slots = self.num_classes - 1
        return {"states": (slots, 7), "objects": (slots, 1, self.template_size, self.template_size)}
