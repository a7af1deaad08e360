"""Sampling plans for natural video: which frames to generate at each step, given which (MCVD/FDM modes).

One model trained on random observed/target sets (tools/diffusion/frame_sets.py) serves every mode:

- generate: nothing observed; the first step generates the first frames from nothing, later steps continue;
- predict: the first k frames observed, the rest generated;
- interpolate: every s-th frame observed, the frames between generated;
- long videos: any of these past the training clip length;
- reconstruct: no sampling at all, every frame through stage 1 (its reconstruction quality, the latent route's
  ceiling).

A plan is a list of (observed_indices, target_indices) steps, like tools/diffusion/strategies.py's. Every step
fits in the training window: its frames span at most `window` (the clip length the model was trained on), at most
`max_obs` observed and `max_tgt` target frames, so positions can be given relative to the step's first frame
(`relative_positions`) and a video can be any length. Two schemes:

- `autoregressive`: the earliest missing frames first, each step conditioned on the known frames nearest to them
  (before and after: this is interpolation when frames on both sides are known);
- `hierarchical` (Flexible Diffusion Models): first every `stride`-th missing frame (keyframes), then the frames
  between them, now conditioned on keyframes on both sides.
"""
from __future__ import annotations

from typing import Iterable, Sequence

from tools.core.errors import UserError

Plan = list[tuple[list[int], list[int]]]
MODES = ("generate", "predict", "interpolate", "reconstruct")
SCHEMES = ("autoregressive", "hierarchical")


def mode_frames(mode: str, n_total: int, n_cond: int, interp_stride: int = 2) -> tuple[list[int], list[int]]:
    """(observed, wanted) frame indices of a video of n_total frames in one mode."""
    if mode not in MODES:
        raise UserError(f"sample.mode={mode!r} is unknown; use one of {', '.join(MODES)}.")
    if n_total < 2:
        raise UserError(f"sample.n_frames={n_total} is too short; give at least 2 frames.")
    if mode == "generate":
        return [], list(range(n_total))
    if mode == "reconstruct":  # stage 1 alone: every frame encoded and decoded, nothing sampled
        return list(range(n_total)), list(range(n_total))
    if mode == "predict":
        if not 1 <= n_cond < n_total:
            raise UserError(f"predict mode observes sample.cond_frames={n_cond} frames of {n_total}: give 1 to "
                            f"{n_total - 1}.")
        return list(range(n_cond)), list(range(n_cond, n_total))
    if interp_stride < 2:
        raise UserError(f"sample.interp_stride={interp_stride}: interpolation observes every s-th frame, s >= 2.")
    observed = list(range(0, n_total, interp_stride))
    if observed[-1] != n_total - 1:
        observed.append(n_total - 1)  # the last frame is observed, so every generated frame lies between two
    return observed, [f for f in range(n_total) if f not in observed]


def _span_ok(frames: Iterable[int], window: int) -> bool:
    frames = list(frames)
    return not frames or max(frames) - min(frames) < window


def _next_chunk(missing: Sequence[int], known: Sequence[int], max_tgt: int, max_obs: int, window: int) -> list[int]:
    """The earliest missing frames, up to max_tgt of them, leaving room in the window for up to
    min(max_obs, window // 2) known frames before them (the context the step conditions on)."""
    before = [f for f in known if f < missing[0]]
    reserve = min(max_obs, window // 2, len(before))
    start = before[-reserve] if reserve else missing[0]
    chunk = [missing[0]]
    for frame in missing[1:]:
        if len(chunk) == max_tgt or frame - start >= window:
            break
        chunk.append(frame)
    return chunk


def _nearest_known(known: Sequence[int], chunk: Sequence[int], max_obs: int, window: int) -> list[int]:
    """Up to max_obs known frames nearest to the chunk, keeping the step inside the window. Ties go to the
    earlier frame, so prediction conditions on the most recent past."""
    low, high = chunk[0], chunk[-1]
    distance = lambda f: (low - f) if f < low else (f - high if f > high else 0)  # noqa: E731
    chosen: list[int] = []
    for frame in sorted(known, key=lambda f: (distance(f), -f if f < low else f)):
        if len(chosen) == max_obs:
            break
        if _span_ok([*chosen, frame, *chunk], window):
            chosen.append(frame)
    return sorted(chosen)


def _fill(known: list[int], wanted: Sequence[int], window: int, max_obs: int, max_tgt: int) -> tuple[Plan, list[int]]:
    plan: Plan = []
    missing = sorted(set(wanted) - set(known))
    while missing:
        chunk = _next_chunk(missing, known, max_tgt, max_obs, window)
        plan.append((_nearest_known(known, chunk, max_obs, window), chunk))
        known = sorted(set(known) | set(chunk))
        missing = [f for f in missing if f not in chunk]
    return plan, known


def plan_video(observed: Sequence[int], wanted: Sequence[int], window: int, max_obs: int, max_tgt: int,
               scheme: str = "autoregressive", stride: int = 2) -> Plan:
    """Steps that generate every frame of `wanted` given `observed` (either may be empty / any indices)."""
    if scheme not in SCHEMES:
        raise UserError(f"sample.scheme={scheme!r} is unknown; use one of {', '.join(SCHEMES)}.")
    if window < 2 or max_obs < 1 or max_tgt < 1:
        raise UserError(f"plan: window={window}, max_obs={max_obs} and max_tgt={max_tgt} must be >= 2, 1, 1.")
    if min([*observed, *wanted], default=0) < 0:
        raise UserError("plan: frame indices must be 0 or more.")
    known = sorted(set(observed))
    plan: Plan = []
    if scheme == "hierarchical":  # keyframes first: every stride-th missing frame, within the same window
        missing = sorted(set(wanted) - set(known))
        plan, known = _fill(known, missing[::max(int(stride), 1)], window, max_obs, max_tgt)
    rest, _ = _fill(known, wanted, window, max_obs, max_tgt)
    return plan + rest


def relative(obs: Sequence[int], tgt: Sequence[int]) -> tuple[list[int], list[int]]:
    """The step's indices shifted so its first frame is 0 (the model was trained on positions 0..window-1)."""
    offset = min([*obs, *tgt])
    return [f - offset for f in obs], [f - offset for f in tgt]
