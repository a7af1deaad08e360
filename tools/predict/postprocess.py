"""From per-sample class scores to one frame-22 mask: suppress classes absent from the observed frames,
then vote over samples.

In this dataset a class is an instance (each shape/material/colour occurs at most once per video), and
objects entering after frame 11 are unpredictable, so a class never seen in frames 1-11 is almost always
a false positive at frame 22 (the trick every top competition solution used).
"""
from __future__ import annotations

import torch

from tools.data.classes import NUM_CLASSES


def present_classes(observed_masks: torch.Tensor, min_pixels: int = 1) -> torch.Tensor:
    """bool [49]: classes covering at least `min_pixels` pixels in some observed frame [T,H,W] (bg always)."""
    masks = observed_masks.long().clamp(min=0).flatten(1)
    counts = torch.zeros(masks.shape[0], NUM_CLASSES, dtype=torch.long, device=masks.device)
    counts.scatter_add_(1, masks, torch.ones_like(masks))
    allowed = (counts >= min_pixels).any(0)
    allowed[0] = True
    return allowed


def suppress_absent_logits(logits: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """Class scores [..., 49, H, W] with disallowed classes pushed to -inf (argmax then picks the next best)."""
    shape = [1] * logits.dim()
    shape[-3] = NUM_CLASSES
    return logits.masked_fill(~allowed.to(logits.device).view(shape), float("-inf"))


def suppress_absent_mask(mask: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """Hard mask [..., H, W] with disallowed class ids replaced by background (when no scores are left)."""
    keep = allowed.to(mask.device)[mask.long().clamp(min=0)]
    return torch.where(keep, mask, torch.zeros_like(mask))


def majority_vote(masks: torch.Tensor) -> torch.Tensor:
    """Per-pixel most frequent class over samples [S,H,W] -> [H,W] (ties go to the smaller class id)."""
    one_hot = torch.nn.functional.one_hot(masks.long().clamp(min=0), NUM_CLASSES)  # [S,H,W,49]
    return one_hot.sum(0).argmax(-1).to(masks.dtype)
