"""The segmenter's loss: cross-entropy + multiclass soft Dice, with -1 marking unknown pixels.

Cross-entropy alone is dominated by the background (most of every frame); Dice over the classes present
weighs each small object like the background, which is what the (macro) Jaccard score rewards.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

IGNORE_INDEX = -1


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, ignore_index: int = IGNORE_INDEX,
                   smooth: float = 1.0) -> torch.Tensor:
    """1 - mean soft Dice over the classes present in the known target pixels of the batch.

    logits [N, C, H, W], target [N, H, W] int64. Classes absent from the target are left out of the mean
    (their Dice would reward predicting nothing and say little). Zero when no pixel is known.
    """
    num_classes = logits.shape[1]
    known = target != ignore_index
    probabilities = logits.float().softmax(dim=1) * known.unsqueeze(1)
    one_hot = F.one_hot(target.clamp(min=0), num_classes).permute(0, 3, 1, 2).float() * known.unsqueeze(1)
    dims = (0, 2, 3)
    intersection = (probabilities * one_hot).sum(dims)
    predicted = probabilities.sum(dims)
    present_count = one_hot.sum(dims)
    dice = (2.0 * intersection + smooth) / (predicted + present_count + smooth)
    present = (present_count > 0).float()
    return ((1.0 - dice) * present).sum() / present.sum().clamp(min=1.0)


def masked_cross_entropy(logits: torch.Tensor, target: torch.Tensor,
                         ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Mean cross-entropy over known pixels; zero (still differentiable) when none is known."""
    if not bool((target != ignore_index).any()):
        return logits.float().sum() * 0.0
    return F.cross_entropy(logits.float(), target, ignore_index=ignore_index)


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
