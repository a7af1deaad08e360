"""The segmenter's loss: cross-entropy + multiclass soft Dice, with -1 marking unknown pixels, plus (for the
factorised head) cross-entropy of each factor (shape, material, colour) on foreground pixels.

Cross-entropy alone is dominated by the background (most of every frame); Dice over the classes present
weighs each small object like the background, which is what the (macro) Jaccard score rewards. The factor
terms give every factor its own gradient on every object pixel, whatever the other factors predict.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tools.data.classes import NUM_CLASSES, class_indices

IGNORE_INDEX = -1
FACTOR_NAMES = ("shape", "material", "colour")


def factor_targets(masks: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-pixel shape, material and colour indices of class masks [N, H, W]; -1 on background and unknown."""
    table = torch.full((NUM_CLASSES + 1, 3), IGNORE_INDEX, dtype=torch.long, device=masks.device)
    table[1:NUM_CLASSES] = torch.tensor([class_indices(c) for c in range(1, NUM_CLASSES)], device=masks.device)
    # Unknown pixels (-1) index the extra last row, which is all IGNORE_INDEX like the background row.
    looked_up = table[torch.where(masks < 0, torch.full_like(masks, NUM_CLASSES), masks)]
    return {name: looked_up[..., column] for column, name in enumerate(FACTOR_NAMES)}


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
    """ce_weight * CE + dice_weight * soft Dice on the 49 class scores, + factor_weight * the mean of the
    factor CEs on foreground pixels when the factorised head's logits are given.

    Returns (total, {'ce', 'dice'[, 'factor_shape', 'factor_material', 'factor_colour']} as floats)."""

    def __init__(self, ce_weight: float = 1.0, dice_weight: float = 1.0, factor_weight: float = 1.0) -> None:
        super().__init__()
        self.ce_weight = float(ce_weight)
        self.dice_weight = float(dice_weight)
        self.factor_weight = float(factor_weight)

    def forward(self, logits: torch.Tensor, target: torch.Tensor,
                factors: dict[str, torch.Tensor] | None = None) -> tuple[torch.Tensor, dict[str, float]]:
        ce = masked_cross_entropy(logits, target)
        dice = soft_dice_loss(logits, target) if self.dice_weight > 0 else ce.new_zeros(())
        total = self.ce_weight * ce + self.dice_weight * dice
        parts = {"ce": float(ce.detach()), "dice": float(dice.detach())}
        if factors and self.factor_weight > 0:
            targets = factor_targets(target)
            factor_ces = [masked_cross_entropy(factors[name], targets[name]) for name in FACTOR_NAMES]
            total = total + self.factor_weight * torch.stack(factor_ces).mean()
            parts.update({f"factor_{name}": float(v.detach()) for name, v in zip(FACTOR_NAMES, factor_ces)})
        return total, parts
