"""Motion predictors on true masks: where each object of frame 11 goes by frame 22.

- copy frame 11 (evals/scoring/baselines.py's copy_last_observed);
- constant velocity: each object's frame-11 pixels shifted by 11 x its last observed step;
- damped velocity: the same step continued with a per-frame decay r (r + r^2 + ... + r^11 steps; r = 0.85),
  since objects here slide and slow down;
- friction velocity: the same step with its speed becoming 0.93 speed - 0.15 px each frame, so that slow objects
  stop (sliding friction) while fast ones carry on (the slot route's default motion prior);
- true displacement: each object's frame-11 pixels shifted by its true 11->22 centroid displacement, the
  ceiling of any "move the frame-11 shape" predictor (not a baseline one can run).
"""
from __future__ import annotations

from typing import Sequence

import torch

from evals.metrics.jaccard import jaccard_score
from tools.core.errors import UserError
from tools.data.classes import BACKGROUND, NUM_CLASSES, NUM_FRAMES, NUM_OBSERVED, TARGET_FRAME
from tools.diffusion.slot_frames import friction_travel

PREDICTION_HORIZON = TARGET_FRAME - (NUM_OBSERVED - 1)
MOTION_BASELINES = ("copy_frame11_truth", "constant_velocity_truth", "damped_velocity_truth",
                    "friction_velocity_truth", "true_displacement_truth")
DAMPED_DECAY = 0.85  # per-frame decay of the damped-velocity baseline
# speed' = decay * speed - friction (pixels at 160 rows), as the slot config's model.motion_prior / motion_friction
FRICTION_DECAY, FRICTION_PIXELS, FRICTION_ROWS = 0.93, 0.15, 160

Displacements = dict[int, tuple[float, float]]  # class id -> (rows, columns) to move by


def copy_last_observed(masks_obs: torch.Tensor) -> torch.Tensor:
    """The last observed mask as the frame-22 prediction: [..., T, H, W] -> [..., H, W].

    Given frames 0-10, that is frame index 10 (frame 11)."""
    if masks_obs.dim() < 3:
        raise ValueError(f"observed masks must be [..., T, H, W], got {tuple(masks_obs.shape)}")
    return masks_obs[..., -1, :, :].clone()


def class_centroids(mask: torch.Tensor) -> dict[int, torch.Tensor]:
    """(row, column) centroid of every object class in an [H, W] mask."""
    height, width = mask.shape
    ids = mask.long().flatten()
    areas = torch.bincount(ids, minlength=NUM_CLASSES).double()
    rows = torch.arange(height, dtype=torch.double).repeat_interleave(width)
    cols = torch.arange(width, dtype=torch.double).repeat(height)
    sums = torch.stack([torch.bincount(ids, weights=rows, minlength=NUM_CLASSES),
                        torch.bincount(ids, weights=cols, minlength=NUM_CLASSES)], dim=1)
    return {cls: sums[cls] / areas[cls] for cls in torch.nonzero(areas).flatten().tolist()
            if cls != BACKGROUND}


def shift_last_observed(last_mask: torch.Tensor, displacements: Displacements) -> torch.Tensor:
    """The [H, W] mask with each class's pixels moved by its rounded displacement.

    Classes without a displacement are dropped, as are pixels moved out of the frame. Objects are
    drawn from the top of the image down, so where shifted objects overlap the one nearer the camera
    (lower in the image) wins, as it would occlude the other; ties go to the larger class id."""
    height, width = last_mask.shape
    out = torch.zeros_like(last_mask)
    centroids = class_centroids(last_mask)
    drawn = [cls for cls in displacements if cls in centroids]
    order = sorted(drawn, key=lambda cls: (float(centroids[cls][0]) + displacements[cls][0], cls))
    for cls in order:
        rows, cols = torch.nonzero(last_mask == cls, as_tuple=True)
        rows = rows + round(displacements[cls][0])
        cols = cols + round(displacements[cls][1])
        inside = (rows >= 0) & (rows < height) & (cols >= 0) & (cols < width)
        out[rows[inside], cols[inside]] = cls
    return out


def constant_velocity_prediction(masks_obs: torch.Tensor, horizon: int = PREDICTION_HORIZON,
                                 decay: float = 1.0) -> torch.Tensor:
    """Frame-22 mask [H, W] from observed masks [T, H, W]: every object of the last observed frame keeps
    the centroid velocity of its last observed step for `horizon` frames, multiplied by `decay` each frame
    (1: constant velocity); an object seen in the last frame only, having just entered, stays where it is."""
    if masks_obs.dim() != 3 or len(masks_obs) < 2:
        raise ValueError(f"observed masks must be [T>=2, H, W], got {tuple(masks_obs.shape)}")
    steps = sum(decay ** k for k in range(1, horizon + 1))
    before, last = class_centroids(masks_obs[-2]), class_centroids(masks_obs[-1])
    displacements = {}
    for cls, centroid in last.items():
        step = centroid - before[cls] if cls in before else torch.zeros(2, dtype=torch.double)
        displacements[cls] = (float(step[0]) * steps, float(step[1]) * steps)
    return shift_last_observed(masks_obs[-1], displacements)


def damped_velocity_prediction(masks_obs: torch.Tensor, decay: float = DAMPED_DECAY) -> torch.Tensor:
    """constant_velocity_prediction with the last step decaying by `decay` per frame."""
    return constant_velocity_prediction(masks_obs, decay=decay)


def friction_velocity_prediction(masks_obs: torch.Tensor, decay: float = FRICTION_DECAY,
                                 friction: float = FRICTION_PIXELS, horizon: int = PREDICTION_HORIZON) -> torch.Tensor:
    """Frame-22 mask [H, W] from observed masks [T, H, W]: every object of the last observed frame continues its
    last step with the speed becoming max(0, decay * speed - friction) each frame (friction in pixels at
    FRICTION_ROWS rows, scaled to the masks' height); an object seen in the last frame only stays."""
    if masks_obs.dim() != 3 or len(masks_obs) < 2:
        raise ValueError(f"observed masks must be [T>=2, H, W], got {tuple(masks_obs.shape)}")
    friction = friction * masks_obs.shape[-2] / FRICTION_ROWS
    before, last = class_centroids(masks_obs[-2]), class_centroids(masks_obs[-1])
    displacements = {}
    for cls, centroid in last.items():
        velocity = centroid - before[cls] if cls in before else torch.zeros(2, dtype=torch.double)
        moved = friction_travel(velocity, decay, friction, horizon)[-1]
        displacements[cls] = (float(moved[0]), float(moved[1]))
    return shift_last_observed(masks_obs[-1], displacements)


def true_displacement_prediction(masks_obs: torch.Tensor, mask22: torch.Tensor) -> torch.Tensor:
    """The ceiling of moving frame-11 shapes: each object of the last observed mask [T, H, W] shifted by
    its true centroid displacement to the frame-22 mask [H, W]; objects absent from frame 22 are dropped."""
    last, target = class_centroids(masks_obs[-1]), class_centroids(mask22)
    displacements = {cls: tuple((target[cls] - centroid).tolist()) for cls, centroid in last.items()
                     if cls in target}
    return shift_last_observed(masks_obs[-1], displacements)


def motion_baseline_predictions(videos: Sequence) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Frame-22 masks [N, H, W] of each MOTION_BASELINES predictor, and the true frame-22 masks, from
    the true masks of labeled videos (each a (T>=22, H, W) numpy array or tensor of class ids)."""
    if not videos:
        raise UserError("the motion baselines need at least one labeled video's (22, H, W) masks.")
    predictions: dict[str, list[torch.Tensor]] = {name: [] for name in MOTION_BASELINES}
    truth = []
    for masks in videos:
        masks = torch.as_tensor(masks)
        if masks.dim() != 3 or len(masks) <= TARGET_FRAME:
            raise UserError(f"the motion baselines need each video's masks as ({NUM_FRAMES}, H, W), got "
                            f"{tuple(masks.shape)}; pass the full mask.npy of labeled videos.")
        observed, target = masks[:NUM_OBSERVED], masks[TARGET_FRAME]
        predictions["copy_frame11_truth"].append(copy_last_observed(observed))
        predictions["constant_velocity_truth"].append(constant_velocity_prediction(observed))
        predictions["damped_velocity_truth"].append(damped_velocity_prediction(observed))
        predictions["friction_velocity_truth"].append(friction_velocity_prediction(observed))
        predictions["true_displacement_truth"].append(true_displacement_prediction(observed, target))
        truth.append(target)
    return {name: torch.stack(masks) for name, masks in predictions.items()}, torch.stack(truth)


def motion_baseline_scores(videos: Sequence) -> dict[str, float]:
    """Competition Jaccard at frame 22 of copy-frame-11, constant, damped and friction velocity and the
    true-displacement ceiling (keys MOTION_BASELINES) over the true masks of labeled videos, each (T>=22, H, W)."""
    predictions, truth = motion_baseline_predictions(videos)
    return {name: jaccard_score(masks, truth) for name, masks in predictions.items()}
