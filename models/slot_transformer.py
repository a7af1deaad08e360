"""Stage 2 of the object-slot route (`model.backbone: slot_transformer`): a transformer over (frame, slot)
tokens that denoises the future states of the objects seen in the observed frames.

Every state is expressed relative to the slot's reference: its state in the last observed frame where it is
present. Observed tokens carry (observed state - reference, reference); target tokens carry (noisy target,
reference). A token also gets its class embedding (identity: shape, material and colour), its object code
(the class's small mask template), its frame-index embedding and a kind flag; target tokens get the noise
level. Attention is full over a clip's tokens (at most ~10 objects x 13 frames here), with padding masks for
slots a clip does not have and for observed frames that are masked or where the object is not visible.
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

    def unconditional(self) -> "SlotCond":
        """Every observed frame masked (the unconditional branch of classifier-free guidance)."""
        return replace(self, obs_keep=torch.zeros_like(self.obs_keep))

    def to(self, device: torch.device) -> "SlotCond":
        return SlotCond(**{k: v.to(device) for k, v in vars(self).items()})


def sinusoidal(values: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """[...] float -> [..., dim] sin/cos features (DDPM's time embedding)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=values.device, dtype=torch.float32) / half)
    angles = values.float()[..., None] * freqs
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


class SlotTransformer(nn.Module):
    """(noisy target states [B, Tt, S, D], noise level [B], SlotCond) -> the parameterised output [B, Tt, S, D]."""

    def __init__(self, state_dim: int = 7, code_dim: int = 64, width: int = 128, depth: int = 4, heads: int = 4,
                 num_classes: int = 49, dropout: float = 0.0) -> None:
        super().__init__()
        if width % heads or width % 2:
            raise ModelConfigError(f"model.width={width} must be even and divisible by model.heads={heads}")
        self.state_dim, self.code_dim, self.width = state_dim, code_dim, width
        self.observed_in = nn.Linear(2 * state_dim, width)
        self.target_in = nn.Linear(2 * state_dim, width)
        self.code_in = nn.Linear(code_dim, width)
        self.class_embedding = nn.Embedding(num_classes, width)
        self.kind_embedding = nn.Embedding(2, width)
        self.frame_mlp = nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width))
        self.noise_mlp = nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width))
        layer = nn.TransformerEncoderLayer(width, heads, 4 * width, dropout, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.head = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, state_dim))
        nn.init.zeros_(self.head[1].weight)  # starts predicting zero: a calm start for eps and v alike
        nn.init.zeros_(self.head[1].bias)

    def _slot_features(self, cond: SlotCond) -> Tensor:
        return self.class_embedding(cond.classes) + self.code_in(cond.codes.float())  # [B, S, W]

    def _frame_features(self, index: Tensor, kind: int) -> Tensor:
        kind_vector = self.kind_embedding.weight[kind]
        return self.frame_mlp(sinusoidal(index, self.width)) + kind_vector  # [B, T, W]

    def forward(self, x_noisy: Tensor, noise_level: Tensor, cond: SlotCond) -> Tensor:
        batch, n_tgt, slots, dim = x_noisy.shape
        if dim != self.state_dim or cond.obs.shape[2] != slots:
            raise ValueError(f"x_noisy [B,Tt,S,{self.state_dim}] and cond.obs [B,To,S,D] must agree; got "
                             f"{tuple(x_noisy.shape)} and {tuple(cond.obs.shape)}")
        slot = self._slot_features(cond)[:, None]
        reference = cond.reference[:, None].float()
        observed = (self.observed_in(torch.cat([cond.obs.float(), reference.expand_as(cond.obs)], -1))
                    + slot + self._frame_features(cond.obs_idx, OBSERVED)[:, :, None])
        noise = self.noise_mlp(sinusoidal(noise_level, self.width))[:, None, None]
        target = (self.target_in(torch.cat([x_noisy.float(), reference.expand_as(x_noisy)], -1))
                  + slot + self._frame_features(cond.tgt_idx, TARGET)[:, :, None] + noise)
        tokens = torch.cat([observed, target], 1).reshape(batch, -1, self.width)
        hidden = (cond.obs_keep[:, :, None] & cond.obs_visible & cond.valid[:, None]).logical_not()
        hidden_target = cond.valid.logical_not()[:, None].expand(batch, n_tgt, slots).clone()
        hidden_target[:, 0, 0] = False  # a clip without slots would otherwise attend to nothing (NaN)
        padding = torch.cat([hidden, hidden_target], 1).reshape(batch, -1)
        out = self.blocks(tokens, src_key_padding_mask=padding)
        out = out.reshape(batch, -1, slots, self.width)[:, -n_tgt:]
        return self.head(out).to(x_noisy.dtype)
