"""Random observed/target frame index sets for training the set-conditioned denoiser.

Each training sample conditions on up to n_obs_max observed frames and denoises exactly n_tgt
target frames, both drawn from a clip of n_frames (Flexible Diffusion Models). MCVD-style masking
then drops conditioning: with prob_mask_cond every observed frame (unconditional generation, which
also trains classifier-free guidance), with prob_mask_future the observed frames later than the
first target (pure prediction). Random targets are half the time an evenly strided window (stride 1-4), half
the time scattered frames. With prob_competition_case the sample is the task itself:
frames 0-10 -> 21 (plus n_tgt-1 random frames in 11..20 when n_tgt > 1).
Observed slots are padded to n_obs_max; unused or masked slots have obs_keep False.
"""
from __future__ import annotations

import torch
from torch import Tensor

from tools.core.errors import UserError
from tools.data.classes import NUM_FRAMES, NUM_OBSERVED, TARGET_FRAME

MAX_WINDOW_STRIDE = 4


def _uniform(generator: torch.Generator) -> float:
    return torch.rand((), generator=generator).item()


def _randint(generator: torch.Generator, low: int, high: int) -> int:
    """Uniform integer in [low, high]."""
    return int(torch.randint(low, high + 1, (), generator=generator).item())


def _choose(generator: torch.Generator, pool: list[int], count: int) -> list[int]:
    order = torch.randperm(len(pool), generator=generator)[:count]
    return sorted(pool[i] for i in order.tolist())


def _check(n_frames: int, n_obs_max: int, n_tgt: int) -> None:
    if n_tgt < 1 or n_obs_max < 1 or n_tgt + 1 > n_frames:
        raise UserError(
            f"frames: n_tgt={n_tgt} and n_obs_max={n_obs_max} need n_tgt >= 1, n_obs_max >= 1 and "
            f"n_tgt < n_frames={n_frames}; fix the frames section of the config."
        )


def _competition_sets(generator: torch.Generator, n_frames: int, n_obs_max: int, n_tgt: int):
    observed = list(range(NUM_OBSERVED))[-n_obs_max:]
    target = min(TARGET_FRAME, n_frames - 1)
    between = list(range(observed[-1] + 1, target))
    targets = _choose(generator, between, min(n_tgt - 1, len(between))) + [target]
    if len(targets) < n_tgt:  # a short clip leaves too few frames between; top up from the rest
        rest = [f for f in range(n_frames) if f not in targets and f not in observed]
        targets = sorted(targets + _choose(generator, rest, n_tgt - len(targets)))
    return observed, targets


def _random_targets(generator: torch.Generator, n_frames: int, n_tgt: int) -> list[int]:
    """Half the time an evenly strided window (what the strategies ask for), else scattered frames."""
    max_stride = min(MAX_WINDOW_STRIDE, (n_frames - 1) // max(n_tgt - 1, 1))
    if _uniform(generator) < 0.5 and max_stride >= 1:
        stride = _randint(generator, 1, max_stride)
        start = _randint(generator, 0, n_frames - 1 - stride * (n_tgt - 1))
        return [start + stride * i for i in range(n_tgt)]
    return _choose(generator, list(range(n_frames)), n_tgt)


def _random_sets(generator: torch.Generator, n_frames: int, n_obs_max: int, n_tgt: int):
    targets = _random_targets(generator, n_frames, n_tgt)
    rest = [f for f in range(n_frames) if f not in targets]
    n_obs = _randint(generator, 1, min(n_obs_max, len(rest)))
    return _choose(generator, rest, n_obs), targets


def sample_frame_sets(
    generator: torch.Generator,
    n_frames: int = NUM_FRAMES,
    n_obs_max: int = 11,
    n_tgt: int = 1,
    prob_mask_cond: float = 0.0,
    prob_mask_future: float = 0.0,
    prob_competition_case: float = 0.0,
) -> tuple[Tensor, Tensor, Tensor]:
    """One draw: (obs_idx [n_obs_max] long, tgt_idx [n_tgt] long, obs_keep [n_obs_max] bool)."""
    _check(n_frames, n_obs_max, n_tgt)
    if _uniform(generator) < prob_competition_case:
        observed, targets = _competition_sets(generator, n_frames, n_obs_max, n_tgt)
    else:
        observed, targets = _random_sets(generator, n_frames, n_obs_max, n_tgt)
    keep = [True] * len(observed)
    mask_all, mask_future = _uniform(generator) < prob_mask_cond, _uniform(generator) < prob_mask_future
    if mask_all:
        keep = [False] * len(observed)
    elif mask_future:
        keep = [k and f < targets[0] for k, f in zip(keep, observed)]
    padding = n_obs_max - len(observed)
    obs_idx = torch.tensor(observed + [0] * padding, dtype=torch.long)
    obs_keep = torch.tensor(keep + [False] * padding, dtype=torch.bool)
    return obs_idx, torch.tensor(targets, dtype=torch.long), obs_keep


def sample_frame_sets_batch(generator: torch.Generator, batch_size: int, **options) -> tuple[Tensor, Tensor, Tensor]:
    """`batch_size` independent draws stacked: [B, n_obs_max], [B, n_tgt], [B, n_obs_max]."""
    draws = [sample_frame_sets(generator, **options) for _ in range(batch_size)]
    return tuple(torch.stack(parts) for parts in zip(*draws))  # type: ignore[return-value]


def gather_frames(clips: Tensor, idx: Tensor) -> Tensor:
    """clips [B, T, ...] and per-sample frame indices idx [B, K] -> [B, K, ...]."""
    idx = idx.to(clips.device)
    expanded = idx.view(*idx.shape, *([1] * (clips.dim() - 2))).expand(-1, -1, *clips.shape[2:])
    return torch.gather(clips, 1, expanded)


def check_frames_config(cfg) -> None:
    """The `frames` section (stage 2) must describe the clips of the `data` section, whose observed frames must fit
    in the clip; one message names the keys and the fix."""
    frames, data = cfg.get("frames"), cfg.data
    clip = int(data.frames)
    problems = []
    if not 0 < int(data.cond_frames) < clip:
        problems.append(f"data.cond_frames={data.cond_frames} must lie between 1 and data.frames-1={clip - 1}")
    if frames is not None:
        if int(frames.n_frames) != clip:
            problems.append(f"frames.n_frames={frames.n_frames} but data.frames={clip} (set both to the clip length)")
        if int(frames.n_tgt) + 1 > clip or int(frames.n_obs_max) < 1:
            problems.append(f"frames.n_tgt={frames.n_tgt} and frames.n_obs_max={frames.n_obs_max} need "
                            f"1 <= n_tgt < data.frames={clip} and n_obs_max >= 1")
        competition = float(frames.get("prob_competition_case", 0.0)) > 0
        if competition and (clip != NUM_FRAMES or int(data.cond_frames) != NUM_OBSERVED):
            problems.append(f"frames.prob_competition_case={frames.prob_competition_case} trains the competition's "
                            f"frames 1-{NUM_OBSERVED} -> {NUM_FRAMES} case, which needs data.frames={NUM_FRAMES} "
                            f"and data.cond_frames={NUM_OBSERVED}; set frames.prob_competition_case=0 for other clips")
    if problems:
        raise UserError("config: " + "; ".join(problems))
