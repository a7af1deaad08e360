"""Slot states <-> the variables the slot diffusion model works on, the same in training and prediction.

The model sees only the slots present in some kept observed frame (at most ~10 of the 48), each relative to
its reference (the state in the last kept observed frame where it is visible), divided by per-dimension
scales measured once per run. A target frame where the object has gone gets presence -1 (relative) and no
change in the other dimensions, which carry no information then.
"""
from __future__ import annotations

import torch
from torch import Tensor

from models.slot_autoencoder import known_slots
from models.slot_transformer import SlotCond
from models.slots import gather_frame, last_present, sample_templates

CODE_SIZE = 8          # object codes for stage 2: the class's mask template at 8 x 8 (64 numbers)
HISTORY_STEPS = 4     # recent observed states per slot given to the denoiser directly
PRESENCE_SCALE = 0.5   # relative presence is 0 or -1; this makes it +-2 in the model's units


def frame_codes(masks: Tensor, states: Tensor, size: int = CODE_SIZE) -> Tensor:
    """Every frame's small whitened template per class: masks [B, T, H, W], states [B, T, S, D] -> [B, T, S, size*size].

    Only the (clip, frame, slot) triples where the object is present are sampled (zeros elsewhere), from the
    masks at half resolution (the same in training and prediction).
    """
    present = states[..., 0] > 0.5
    b, t, s = present.nonzero(as_tuple=True)
    codes = states.new_zeros(*states.shape[:3], size * size)
    coarse = masks[..., ::2, ::2]  # an 8 x 8 code needs no full resolution; 4x fewer comparisons
    if len(b):
        binary = coarse[b, t].long() == (s + 1)[:, None, None]
        sampled = sample_templates(binary[None], states[b, t, s][None], size)
        codes[b, t, s] = sampled[0].flatten(1)
    return codes


def pick(values: Tensor, slots: Tensor, dim: int) -> Tensor:
    """values[..., slot, ...] at dimension `dim` for per-clip slot indices [B, S]."""
    shape = [slots.shape[0]] + [1] * (values.dim() - 1)
    shape[dim] = slots.shape[1]
    index = slots.view(*shape)
    expanded = list(values.shape)
    expanded[dim] = slots.shape[1]
    return values.gather(dim, index.expand(*expanded))


def slot_condition(observed: Tensor, codes: Tensor, obs_idx: Tensor, obs_keep: Tensor, tgt_idx: Tensor,
                   scales: Tensor) -> tuple[SlotCond, Tensor]:
    """observed [B, To, 48, D] absolute states of the observed frames, codes [B, 48, C] (each slot's code from
    its last visible observed frame) -> (SlotCond, slot indices [B, S] into the 48)."""
    visible_all = (observed[..., 0] > 0.5) & obs_keep[..., None]
    slots, valid = known_slots(visible_all.any(1))
    obs = pick(observed, slots, 2)
    visible = pick(visible_all, slots, 2) & valid[:, None]
    last = last_present(obs, obs_keep)
    reference = gather_frame(obs, last) * valid[..., None]
    code = pick(codes, slots, 1) * valid[..., None]
    relative = (obs - reference[:, None]) / scales * visible[..., None]
    ref_frame = obs_idx.gather(1, last.clamp(min=0)) * valid
    history = recent_history(relative, visible, obs_idx, ref_frame)
    cond = SlotCond(relative, visible, obs_idx, obs_keep, tgt_idx, reference, slots + 1, code, valid,
                    ref_frame=ref_frame, history=history)
    return cond, slots


def recent_history(relative: Tensor, visible: Tensor, obs_idx: Tensor, ref_frame: Tensor,
                   steps: int = HISTORY_STEPS) -> Tensor:
    """Each slot's last `steps` visible observed states (relative, model units) with their frame offsets from
    the reference frame (/10), newest first, zeros where there are fewer: [B, S, steps * (D + 1)].

    The explicit recent trajectory gives the denoiser velocity and deceleration without having to find them
    through attention over all observed tokens."""
    batch, n_obs, slots, dim = relative.shape
    order = torch.arange(n_obs, device=relative.device).view(1, n_obs, 1).expand(batch, n_obs, slots)
    rank = torch.where(visible, order, torch.full_like(order, -1)).argsort(dim=1, descending=True)[:, :steps]
    picked = relative.gather(1, rank[..., None].expand(-1, -1, -1, dim))            # [B, steps, S, D]
    seen = visible.gather(1, rank)                                                   # [B, steps, S]
    frames = obs_idx[:, :, None].expand(batch, n_obs, slots).gather(1, rank)
    offset = (frames - ref_frame[:, None]).float() / 10.0
    features = torch.cat([picked, offset[..., None]], -1) * seen[..., None]
    if features.shape[1] < steps:  # fewer observed frames than steps
        features = torch.cat([features, features.new_zeros(batch, steps - features.shape[1], slots, dim + 1)], 1)
    return features.permute(0, 2, 1, 3).reshape(batch, slots, steps * (dim + 1))


def to_relative(targets: Tensor, reference: Tensor, scales: Tensor) -> Tensor:
    """Absolute target states [B, Tt, S, D] -> model units, relative to reference [B, S, D]."""
    present = targets[..., :1] > 0.5
    moved = targets - reference[:, None]
    gone = torch.zeros_like(moved)
    gone[..., 0] = -1.0
    return torch.where(present, moved, gone) / scales


def from_relative(x: Tensor, reference: Tensor, scales: Tensor) -> Tensor:
    """Model units [B, Tt, S, D] -> absolute states, presence snapped to 0 or 1 (states of absent slots zeroed)."""
    states = x * scales + reference[:, None]
    present = (states[..., :1] > 0.5).to(states.dtype)
    states = torch.cat([present, states[..., 1:]], dim=-1)
    return states * present


def scatter_slots(values: Tensor, slots: Tensor, valid: Tensor, total: int = 48) -> Tensor:
    """[B, T, S, D] per kept slot -> [B, T, total, D], zeros for the other slots (and invalid ones)."""
    out = values.new_zeros(values.shape[0], values.shape[1], total, values.shape[3])
    index = slots[:, None, :, None].expand(-1, values.shape[1], -1, values.shape[3])
    return out.scatter(2, index, values * valid[:, None, :, None])


def measure_state_scales(rows: Tensor) -> list[float]:
    """Per-dimension std of unscaled relative targets [M, D] of real slots (presence: a fixed scale)."""
    std = rows.float().std(dim=0) if len(rows) > 1 else torch.ones(rows.shape[-1])
    scales = std.clamp(min=0.02, max=1.0).tolist()
    scales[0] = PRESENCE_SCALE
    return scales
