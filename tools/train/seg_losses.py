"""The segmenter's loss: cross-entropy + multiclass soft Dice, with -1 marking unknown pixels, plus (for the
factorised head) cross-entropy of each factor (shape, material, colour) on foreground pixels.

Cross-entropy alone is dominated by the background (most of every frame); Dice over the classes present
weighs each small object like the background, which is what the (macro) Jaccard score rewards. The factor
terms give every factor its own gradient on every object pixel, whatever the other factors predict.
With `model.boundary`, a balanced binary cross-entropy teaches the contact-edge channel where two objects touch.
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


def boundary_targets(masks: torch.Tensor) -> torch.Tensor:
    """float [N, H, W]: 1 on object pixels with an 8-neighbour of another object class (a contact edge, both
    sides), 0 elsewhere, -1 on unknown pixels (masks == -1). Edges against the background are not contacts."""
    objects = masks.unsqueeze(1).float()
    # A different object id among the 3x3 neighbours is a larger one (max) or a smaller one (min, with the
    # background and unknown pixels out of the way): two poolings instead of eight shifted comparisons.
    largest = F.max_pool2d(objects, 3, stride=1, padding=1)
    smallest = -F.max_pool2d(-torch.where(objects > 0, objects, torch.full_like(objects, float(NUM_CLASSES))),
                             3, stride=1, padding=1)
    edge = (objects > 0) & ((largest != objects) | (smallest != objects))
    return torch.where(masks == IGNORE_INDEX, torch.full_like(masks, -1, dtype=torch.float32), edge[:, 0].float())


def balanced_boundary_loss(logits: torch.Tensor, masks: torch.Tensor, background_weight: float = 0.2
                           ) -> torch.Tensor:
    """BCE averaged separately over contact-edge pixels, over the other object pixels and over background pixels,
    weighted 1 : 1 : background_weight. Contacts are a few pixels per frame, so a plain mean would teach the
    channel to say 'no edge' everywhere; and the vote only cuts objects, so object interiors (a cube's own face
    edges look like contacts) are the negatives that matter, not the floor."""
    target = boundary_targets(masks)
    per_pixel = F.binary_cross_entropy_with_logits(logits.float().reshape(target.shape), target.clamp(min=0),
                                                   reduction="none")
    groups = ((target == 1, 1.0), ((target == 0) & (masks > 0), 1.0), (masks == 0, float(background_weight)))
    terms = [weight * (per_pixel * group).sum() / group.sum().clamp(min=1) for group, weight in groups]
    return sum(terms) / sum(weight for _, weight in groups)


class SegmentationLoss(nn.Module):
    """ce_weight * CE + dice_weight * soft Dice on the 49 class scores, + factor_weight * the mean of the
    factor CEs on foreground pixels when the factorised head's logits are given, + boundary_weight * the balanced
    contact-edge BCE when factors hold a 'boundary' logit.

    Returns (total, {'ce', 'dice'[, 'factor_shape', 'factor_material', 'factor_colour'][, 'boundary']} as floats)."""

    def __init__(self, ce_weight: float = 1.0, dice_weight: float = 1.0, factor_weight: float = 1.0,
                 boundary_weight: float = 1.0) -> None:
        super().__init__()
        self.ce_weight = float(ce_weight)
        self.dice_weight = float(dice_weight)
        self.factor_weight = float(factor_weight)
        self.boundary_weight = float(boundary_weight)

    def forward(self, logits: torch.Tensor, target: torch.Tensor,
                factors: dict[str, torch.Tensor] | None = None) -> tuple[torch.Tensor, dict[str, float]]:
        ce = masked_cross_entropy(logits, target)
        dice = soft_dice_loss(logits, target) if self.dice_weight > 0 else ce.new_zeros(())
        total = self.ce_weight * ce + self.dice_weight * dice
        parts = {"ce": float(ce.detach()), "dice": float(dice.detach())}
        factors = dict(factors or {})
        edge_logits = factors.pop("boundary", None)
        if edge_logits is not None:
            edge = balanced_boundary_loss(edge_logits, target)
            total = total + self.boundary_weight * edge
            parts["boundary"] = float(edge.detach())
        if factors and self.factor_weight > 0:
            targets = factor_targets(target)
            factor_ces = [masked_cross_entropy(factors[name], targets[name]) for name in FACTOR_NAMES]
            total = total + self.factor_weight * torch.stack(factor_ces).mean()
            parts.update({f"factor_{name}": float(v.detach()) for name, v in zip(FACTOR_NAMES, factor_ces)})
        return total, parts
