"""Stage 2 of the object-slot route (`model.backbone: slot_transformer`): a transformer over (frame, slot)
tokens that denoises the future states of the objects seen in the observed frames.

Every state is expressed relative to the slot's reference: its state in the last observed frame where it is
present. Observed tokens carry (observed state - reference, reference); target tokens carry (noisy target,
anchor), the anchor being the reference moved on by the motion prior (tools/diffusion/slot_frames.py). A token
also gets its class embedding (identity: shape, material and colour), its object code (the class's small mask
template), its frame-index embedding and a kind flag; target tokens get the noise level. Padding masks cover slots a clip does not have and observed frames that are masked or where the object
is not visible.

Two stacks, so sampling stays cheap: a context encoder attends over the observed (frame, slot) tokens (full
attention: objects interact, frames of a slot form its trajectory) and pools each slot's tokens into one
summary; the denoiser attends over the slot summaries and the target (frame, slot) tokens. The context does
not depend on the noise, so a sampler computes it once per run (`SlotCond.context`) instead of once per step.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
from torch import Tensor, nn

from models import ModelConfigError

OBSERVED, TARGET = 0, 1


@dataclass
class SlotCond:
    """What the slot denoiser is conditioned on; S is the number of slots kept for this batch."""

    obs: Tensor          # [B, To, S, D] observed states minus the reference
    obs_visible: Tensor  # [B, To, S] bool: the object is present in that observed frame
    obs_idx: Tensor      # [B, To] frame indices
    obs_keep: Tensor     # [B, To] bool: False = this observed frame is masked out (MCVD-style)
    tgt_idx: Tensor      # [B, Tt] frame indices
    reference: Tensor    # [B, S, D] absolute state at the slot's last visible observed frame
    classes: Tensor      # [B, S] long class ids (1..48)
    codes: Tensor        # [B, S, C] object codes
    valid: Tensor        # [B, S] bool: a real slot (else padding)
    ref_frame: Tensor | None = None  # [B, S] frame index of each slot's reference state
    history: Tensor | None = None    # [B, S, H * (D + 1)] recent relative states and their frame offsets
    anchor: Tensor | None = None     # [B, Tt, S, D] absolute state each target is relative to (default: reference)
    context: Tensor | None = None  # [B, S, W] slot summaries of the context encoder, once computed

    def unconditional(self) -> "SlotCond":
        """Every observed frame masked (the unconditional branch of classifier-free guidance)."""
        return replace(self, obs_keep=torch.zeros_like(self.obs_keep), context=None)

    def to(self, device: torch.device) -> "SlotCond":
        return SlotCond(**{k: (None if v is None else v.to(device)) for k, v in vars(self).items()})


def sinusoidal(values: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """[...] float -> [..., dim] sin/cos features (DDPM's time embedding)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=values.device, dtype=torch.float32) / half)
    angles = values.float()[..., None] * freqs
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


def _encoder(width: int, heads: int, depth: int, dropout: float) -> nn.TransformerEncoder:
    layer = nn.TransformerEncoderLayer(width, heads, 4 * width, dropout, activation="gelu", batch_first=True,
                                       norm_first=True)
    return nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)


class SlotTransformer(nn.Module):
    """(noisy target states [B, Tt, S, D], noise level [B], SlotCond) -> the parameterised output [B, Tt, S, D]."""

    def __init__(self, state_dim: int = 7, code_dim: int = 64, width: int = 128, depth: int = 4,
                 context_depth: int = 2, heads: int = 4, num_classes: int = 49, dropout: float = 0.0,
                 history_steps: int = 4) -> None:
        super().__init__()
        if width % heads or width % 2:
            raise ModelConfigError(f"model.width={width} must be even and divisible by model.heads={heads}")
        self.state_dim, self.code_dim, self.width = state_dim, code_dim, width
        self.observed_in = nn.Linear(2 * state_dim, width)
        self.target_in = nn.Linear(2 * state_dim, width)
        self.code_in = nn.Linear(code_dim, width)
        self.history_in = nn.Sequential(nn.Linear(history_steps * (state_dim + 1), width), nn.SiLU(),
                                        nn.Linear(width, width))
        self.class_embedding = nn.Embedding(num_classes, width)
        self.kind_embedding = nn.Embedding(2, width)
        self.frame_mlp = nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width))
        self.noise_mlp = nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width))
        self.context_blocks = _encoder(width, heads, context_depth, dropout)
        self.blocks = _encoder(width, heads, depth, dropout)
        self.head = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, state_dim))
        nn.init.zeros_(self.head[1].weight)  # starts predicting zero: a calm start for eps and v alike
        nn.init.zeros_(self.head[1].bias)

    def _slot_features(self, cond: SlotCond) -> Tensor:
        return self.class_embedding(cond.classes) + self.code_in(cond.codes.float())  # [B, S, W]

    def _frame_features(self, index: Tensor, kind: int) -> Tensor:
        return self.frame_mlp(sinusoidal(index, self.width)) + self.kind_embedding.weight[kind]  # [B, T, W]

    def encode_context(self, cond: SlotCond) -> Tensor:
        """Slot summaries [B, S, W] of the observed tokens (independent of the noise: computed once per run)."""
        batch, n_obs, slots, _ = cond.obs.shape
        reference = cond.reference[:, None].float()
        tokens = (self.observed_in(torch.cat([cond.obs.float(), reference.expand_as(cond.obs)], -1))
                  + self._slot_features(cond)[:, None] + self._frame_features(cond.obs_idx, OBSERVED)[:, :, None])
        seen = cond.obs_keep[:, :, None] & cond.obs_visible & cond.valid[:, None]  # [B, To, S]
        padding = (~seen).reshape(batch, -1).clone()
        padding[:, 0] = False  # a clip with nothing observed would otherwise attend to nothing (NaN)
        hidden = self.context_blocks(tokens.reshape(batch, -1, self.width), src_key_padding_mask=padding)
        weights = seen.float().reshape(batch, n_obs, slots, 1)
        pooled = (hidden.reshape(batch, n_obs, slots, -1) * weights).sum(1) / weights.sum(1).clamp(min=1)
        return (pooled + self._slot_features(cond) + self.history_in(cond.history.float())
                + self.observed_in(torch.cat([torch.zeros_like(cond.reference), cond.reference], -1).float()))

    def forward(self, x_noisy: Tensor, noise_level: Tensor, cond: SlotCond) -> Tensor:
        batch, n_tgt, slots, dim = x_noisy.shape
        if dim != self.state_dim or cond.obs.shape[2] != slots:
            raise ValueError(f"x_noisy [B,Tt,S,{self.state_dim}] and cond.obs [B,To,S,D] must agree; got "
                             f"{tuple(x_noisy.shape)} and {tuple(cond.obs.shape)}")
        context = cond.context if cond.context is not None else self.encode_context(cond)
        anchor = (cond.anchor if cond.anchor is not None else cond.reference[:, None].expand_as(x_noisy)).float()
        noise = self.noise_mlp(sinusoidal(noise_level, self.width))[:, None, None]
        ahead = cond.tgt_idx[:, :, None] - cond.ref_frame[:, None]  # frames from each slot's reference
        target = (self.target_in(torch.cat([x_noisy.float(), anchor], -1))
                  + self._slot_features(cond)[:, None] + self._frame_features(ahead, TARGET) + noise)
        tokens = torch.cat([context, target.reshape(batch, -1, self.width)], 1)
        absent = ~cond.valid
        padding = torch.cat([absent, absent[:, None].expand(batch, n_tgt, slots).reshape(batch, -1)], 1).clone()
        padding[:, 0] = False  # a clip without slots would otherwise attend to nothing (NaN)
        out = self.blocks(tokens, src_key_padding_mask=padding)[:, slots:]
        return self.head(out.reshape(batch, n_tgt, slots, self.width)).to(x_noisy.dtype)
