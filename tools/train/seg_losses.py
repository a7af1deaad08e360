"""The segmenter's loss: cross-entropy + multiclass soft Dice, with -1 marking unknown pixels.

Cross-entropy alone is dominated by the background (most of every frame); Dice over the classes present
weighs each small object like the background, which is what the (macro) Jaccard score rewards.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

IGNORE_INDEX = -1


def masked_cross_entropy(logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """CE over known pixels (masks == -1 ignored); exactly 0 (still in the graph) when none is known."""
    total = F.cross_entropy(logits.float(), masks, ignore_index=IGNORE_INDEX, reduction="sum")
    return total / (masks != IGNORE_INDEX).sum().clamp(min=1)


def soft_dice_loss(logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """1 - mean soft Dice over classes present in the known pixels; logits [N, C, H, W], masks [N, H, W]."""
    num_classes = logits.shape[1]
    probs = logits.float().softmax(1)
    known = (masks != IGNORE_INDEX).unsqueeze(1).float()
    target = masks.clamp(min=0).unsqueeze(1)
    # Per-class sums by index_add instead of a one-hot tensor: 49 x full-res one-hots cost gigabytes.
    hit = (probs.gather(1, target) * known).flatten()
    intersection = probs.new_zeros(num_classes).index_add(0, target.flatten(), hit)
    target_count = probs.new_zeros(num_classes).index_add(0, target.flatten(), known.flatten())
    predicted = (probs * known).sum((0, 2, 3))
    dice = (2 * intersection + 1.0) / (predicted + target_count + 1.0)
    present = (target_count > 0).float()
    return ((1 - dice) * present).sum() / present.sum().clamp(min=1)


class SegmentationLoss(nn.Module):
    """ce_weight * cross-entropy + dice_weight * soft Dice; returns (total, {'ce', 'dice'} as floats)."""

    def __init__(self, ce_weight: float = 1.0, dice_weight: float = 1.0) -> None:
        super().__init__()
        self.ce_weight = float(ce_weight)
        self.dice_weight = float(dice_weight)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        ce = masked_cross_entropy(logits, target)
        dice = soft_dice_loss(logits, target) if self.dice_weight > 0 else ce.new_zeros(())
        total = self.ce_weight * ce + self.dice_weight * dice
        return total, {"ce": float(ce.detach()), "dice": float(dice.detach())}
