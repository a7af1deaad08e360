"""Slot states <-> the variables the slot diffusion model works on, the same in training and prediction.

The model sees only the slots present in some kept observed frame (at most ~10 of the 48), each relative to
its reference (the state in the last kept observed frame where it is visible), divided by per-dimension
scales measured once per run. A target frame where the object has gone gets presence -1 (relative) and no
change in the other dimensions, which carry no information then.

Targets are relative to an *anchor*: the reference moved on by an extrapolation of the slot's last observed
step (`MotionPrior`: `model.motion_prior`, the per-frame decay r, and `model.motion_friction`, pixels per frame
of speed lost each frame on top of it; decay 0 disables it and the anchor is the reference). Objects here slide
and slow down, and slow ones stop sooner than a pure decay says (Coulomb friction): measured on 3000 generated
trajectories, the per-frame speed ratio is 0.81 at 1 px/frame and 0.92 at 6-16 px/frame, which
`speed' = 0.93 speed - 0.15 px` follows. The step between the last two visible frames, continued that way,
covers most of the motion (0.551 frame-22 Jaccard on 200 generated val videos; a pure decay of 0.85 scores
0.523, copying frame 11 0.361); the model then learns only what the extrapolation misses (collisions, stops,
walls).
"""
from __future__ import annotations

from dataclasses import dataclass

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


@dataclass(frozen=True)
class MotionPrior:
    """How a slot's last step is continued to anchor its targets: each frame the speed becomes
    max(0, decay * speed - friction), in pixels (`pixels`: pixels per normalised unit in x and y, W/2 and H/2).
    decay 0: no extrapolation (the anchor is the reference); friction 0: a pure geometric decay."""

    decay: float = 0.0
    friction: float = 0.0
    pixels: tuple[float, float] = (120.0, 80.0)


def slot_condition(observed: Tensor, codes: Tensor, obs_idx: Tensor, obs_keep: Tensor, tgt_idx: Tensor,
                   scales: Tensor, prior: MotionPrior | float = 0.0) -> tuple[SlotCond, Tensor]:
    """observed [B, To, 48, D] absolute states of the observed frames, codes [B, 48, C] (each slot's code from
    its last visible observed frame) -> (SlotCond, slot indices [B, S] into the 48). The anchors of the targets
    follow `prior` (a MotionPrior, or a float: the decay of a frictionless one; 0: the anchor is the reference)."""
    if not isinstance(prior, MotionPrior):
        prior = MotionPrior(decay=float(prior))
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
    step = last_step(obs, visible, obs_idx, last) * valid[..., None]
    anchor = reference[:, None] + prior_displacement(step, tgt_idx[:, :, None] - ref_frame[:, None], prior)
    cond = SlotCond(relative, visible, obs_idx, obs_keep, tgt_idx, reference, slots + 1, code, valid,
                    ref_frame=ref_frame, history=history, anchor=anchor, velocity=step)
    return cond, slots


def prior_displacement(step: Tensor, ahead: Tensor, prior: MotionPrior) -> Tensor:
    """Where the prior moves each slot in `ahead` frames [B, Tt, S] from its last step [B, S, D] (zero outside
    the centroid): [B, Tt, S, D]."""
    if prior.decay <= 0:
        return torch.zeros(*ahead.shape, step.shape[-1], dtype=step.dtype, device=step.device)
    if prior.friction <= 0:
        return step[:, None] * damped_frames(ahead, prior.decay)[..., None]
    pixels = step.new_tensor(prior.pixels)
    frames = int(ahead.max().clamp(min=0))
    travel = friction_travel(step[..., 1:3] * pixels, prior.decay, prior.friction, frames)  # [n + 1, B, S, 2] px
    table = travel.movedim(0, 1) / pixels                               # [B, n + 1, S, 2] normalised units
    index = ahead.clamp(min=0, max=frames).long()
    moved = table.gather(1, index[..., None].expand(-1, -1, -1, 2))     # [B, Tt, S, 2]
    out = torch.zeros(*ahead.shape, step.shape[-1], dtype=step.dtype, device=step.device)
    out[..., 1:3] = moved
    return out


def friction_travel(velocity: Tensor, decay: float, friction: float, frames: int) -> Tensor:
    """Distance covered after 0, 1, ..., `frames` frames [frames + 1, ..., 2] by objects of per-frame velocity
    [..., 2] (pixels) whose speed becomes max(0, decay * speed - friction) each frame (the motion prior's rule,
    also the friction_velocity_truth baseline of evals/scoring/motion_baselines.py)."""
    covered, travelled = [torch.zeros_like(velocity)], torch.zeros_like(velocity)
    for _ in range(frames):
        speed = velocity.norm(dim=-1, keepdim=True)
        velocity = velocity * ((decay * speed - friction).clamp(min=0) / speed.clamp(min=1e-6))
        travelled = travelled + velocity
        covered.append(travelled)
    return torch.stack(covered)


def last_step(obs: Tensor, visible: Tensor, obs_idx: Tensor, last: Tensor) -> Tensor:
    """Per-frame change of each slot's centroid between its last two visible observed frames, [B, S, D] (zero
    in every other dimension, and where the slot was visible once only)."""
    n_obs = obs.shape[1]
    order = torch.arange(n_obs, device=obs.device).view(1, n_obs, 1)
    earlier = visible & (order < last[:, None])
    before = torch.where(earlier, order, torch.full_like(order, -1)).amax(dim=1)  # [B, S]
    seen_twice = (before >= 0)[..., None]
    frames = obs_idx[:, :, None].expand(-1, -1, obs.shape[2])
    gap = (gather_frame(frames, last) - gather_frame(frames, before)).clamp(min=1)[..., None].to(obs.dtype)
    step = (gather_frame(obs, last) - gather_frame(obs, before)) / gap
    centroid = torch.zeros_like(step)
    centroid[..., 1:3] = 1.0
    return step * centroid * seen_twice


def damped_frames(ahead: Tensor, decay: float) -> Tensor:
    """How many last steps a decaying motion covers in `ahead` frames: r + r^2 + ... + r^n (0 for n <= 0)."""
    n = ahead.clamp(min=0).float()
    if decay == 1.0:
        return n
    return decay * (1 - decay ** n) / (1 - decay)


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


def _per_target(anchor: Tensor) -> Tensor:
    return anchor[:, None] if anchor.dim() == 3 else anchor


def to_relative(targets: Tensor, anchor: Tensor, scales: Tensor) -> Tensor:
    """Absolute target states [B, Tt, S, D] -> model units, relative to the anchor ([B, Tt, S, D], or one
    reference [B, S, D] for every target)."""
    present = targets[..., :1] > 0.5
    moved = targets - _per_target(anchor)
    gone = torch.zeros_like(moved)
    gone[..., 0] = -1.0
    return torch.where(present, moved, gone) / scales


def from_relative(x: Tensor, anchor: Tensor, scales: Tensor) -> Tensor:
    """Model units [B, Tt, S, D] -> absolute states (anchor as in to_relative), presence snapped to 0 or 1
    (states of absent slots zeroed)."""
    states = x * scales + _per_target(anchor)
    present = (states[..., :1] > 0.5).to(states.dtype)
    states = torch.cat([present, states[..., 1:]], dim=-1)
    return states * present


def shift_by_motion(x: Tensor, motion: Tensor | None, sign: float) -> Tensor:
    """x [B, Tt, S, D] in model units with `sign` times the motion head's centroid offsets [B, Tt, S, 2] added:
    -1 turns targets into the residuals the diffusion works on, +1 turns sampled residuals back (None: x)."""
    if motion is None:
        return x
    shifted = x.clone()
    shifted[..., 1:3] = x[..., 1:3] + sign * motion.to(x.dtype)
    return shifted


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
