"""A small CNN that names one object from a crop around it: shape, material and colour logits.

The per-pixel segmenter finds objects and their colour early, but tells shape and material apart late (its
shape loss sits at chance for hundreds of steps) and at reduced resolution; its errors are whole objects, not
pixels. Given where an object is (a connected component of the segmenter's foreground), this network looks at
it at full resolution, scale-normalised (tools/data/object_crops.py), and its evidence is summed over the
frames of the object's track by the instance vote (tools/predict/instance_vote.py).

Input: crops [N, 4, S, S]: RGB in [0, 1] and the component's mask (1 inside), so the network knows which of
two touching objects it is asked about.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

FACTORS = ("shape", "material", "colour")
IN_CHANNELS = 4  # RGB + the object's mask
_MEAN = (0.485, 0.456, 0.406, 0.5)
_STD = (0.229, 0.224, 0.225, 0.5)


def _conv_block(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False), nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
        nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False), nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True))


class ObjectClassifier(nn.Module):
    """Crops [N, 4, S, S] -> {'shape': [N, 3], 'material': [N, 2], 'colour': [N, 8]} logits."""

    def __init__(self, factor_sizes: Sequence[int] = (3, 2, 8), channels: Sequence[int] = (32, 64, 128)) -> None:
        super().__init__()
        if len(factor_sizes) != len(FACTORS) or min(factor_sizes) < 1:
            raise ValueError(f"factor_sizes must give the number of {FACTORS}; got {list(factor_sizes)}")
        if not channels:
            raise ValueError("model.channels needs at least one stage")
        self.factor_sizes = tuple(int(n) for n in factor_sizes)
        stages, previous = [], IN_CHANNELS
        for index, width in enumerate(channels):
            stages.append(_conv_block(previous, int(width)))
            if index < len(channels) - 1:
                stages.append(nn.MaxPool2d(2))
            previous = int(width)
        self.features = nn.Sequential(*stages)
        self.heads = nn.Linear(previous, sum(self.factor_sizes))
        self.register_buffer("mean", torch.tensor(_MEAN).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_STD).view(1, -1, 1, 1), persistent=False)

    def forward(self, crops: torch.Tensor) -> dict[str, torch.Tensor]:
        if crops.ndim != 4 or crops.shape[1] != IN_CHANNELS:
            raise ValueError(f"ObjectClassifier expects crops [N, {IN_CHANNELS}, S, S]; got {tuple(crops.shape)}")
        features = self.features((crops - self.mean.to(crops.dtype)) / self.std.to(crops.dtype))
        logits = self.heads(features.mean(dim=(2, 3)))
        return dict(zip(FACTORS, torch.split(logits, self.factor_sizes, dim=1)))


def class_log_probs(logits: dict[str, torch.Tensor], class_factors: Sequence[Sequence[int]],
                    factors: Sequence[str] = FACTORS) -> torch.Tensor:
    """log p(class) [N, K] of the K object classes whose (shape, material, colour) indices are class_factors:
    the sum of the factors' log-probabilities (they normalise over the classes by construction).

    factors: the factors to judge; one left out is uniform (log 1/n each), so it has no say in the vote."""
    unknown = set(factors) - set(FACTORS)
    if unknown:
        raise ValueError(f"unknown factors {sorted(unknown)}; choose from {FACTORS}")
    table = torch.as_tensor([list(map(int, triple)) for triple in class_factors], dtype=torch.long)
    total = None
    for column, name in enumerate(FACTORS):
        log_p = F.log_softmax(logits[name].float(), dim=1)
        if name not in factors:
            log_p = torch.full_like(log_p, -math.log(log_p.shape[1]))
        part = log_p[:, table[:, column].to(log_p.device)]
        total = part if total is None else total + part
    return total
