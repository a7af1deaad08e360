"""2D convolutional building blocks of the video autoencoder.

Frames are processed one at a time (time folded into batch by the caller), so every block here is a
plain 2D network: GroupNorm + SiLU ResNet blocks, stride-2 downsampling and nearest-neighbour
upsampling. An encoder with ``len(mults)`` levels has stride ``2 ** (len(mults) - 1)``.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
from einops import rearrange
from torch import nn
from torch.utils.checkpoint import checkpoint


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with up to 32 groups that always divides ``channels`` (small test widths too)."""
    return nn.GroupNorm(math.gcd(32, channels), channels, eps=1e-6)


class ResBlock(nn.Module):
    """Pre-activation ResNet block: (GN, SiLU, conv) x 2 plus a 1x1 skip when widths differ."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            group_norm(in_channels), nn.SiLU(), nn.Conv2d(in_channels, out_channels, 3, padding=1),
            group_norm(out_channels), nn.SiLU(), nn.Conv2d(out_channels, out_channels, 3, padding=1),
        )
        self.skip = nn.Identity() if in_channels == out_channels else nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.skip(x) + self.body(x)


class Downsample(nn.Module):
    """Strided 3x3 conv; exact halving for even sizes (the caller checks divisibility)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Nearest x2 then a 3x3 conv (no transposed-conv checkerboards)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(nn.functional.interpolate(x, scale_factor=2.0, mode="nearest"))


def _run_levels(levels: nn.ModuleList, x: torch.Tensor, use_checkpoint: bool) -> torch.Tensor:
    """Run resolution levels in order, recomputing each in backward when checkpointing (saves memory)."""
    for level in levels:
        if use_checkpoint and torch.is_grad_enabled():
            x = checkpoint(level, x, use_reentrant=False)
        else:
            x = level(x)
    return x


def _resolution_levels(widths: Sequence[int], num_res_blocks: int, resample: type[nn.Module]
                       ) -> tuple[nn.ModuleList, int]:
    """One level of ResBlocks per width, `resample` (down or up) between consecutive levels.

    Returns the levels and the width of the last one; the first level starts at widths[0].
    """
    levels, current = [], widths[0]
    for index, width in enumerate(widths):
        blocks: list[nn.Module] = []
        for _ in range(num_res_blocks):
            blocks.append(ResBlock(current, width))
            current = width
        if index < len(widths) - 1:
            blocks.append(resample(current))
        levels.append(nn.Sequential(*blocks))
    return nn.ModuleList(levels), current


class Encoder2d(nn.Module):
    """Image -> feature map at stride ``2 ** (len(mults) - 1)`` with ``out_channels`` channels."""

    def __init__(self, in_channels: int, channels: int, mults: Sequence[int], num_res_blocks: int,
                 out_channels: int, grad_checkpoint: bool = False) -> None:
        super().__init__()
        self.grad_checkpoint = grad_checkpoint
        widths = [channels * m for m in mults]
        self.conv_in = nn.Conv2d(in_channels, widths[0], 3, padding=1)
        self.levels, current = _resolution_levels(widths, num_res_blocks, Downsample)
        self.out = nn.Sequential(ResBlock(current, current), group_norm(current), nn.SiLU(),
                                 nn.Conv2d(current, out_channels, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _run_levels(self.levels, self.conv_in(x), self.grad_checkpoint)
        return self.out(x)


class Decoder2d(nn.Module):
    """Latent map -> full-resolution features with ``channels * mults[0]`` channels (heads added by caller)."""

    def __init__(self, in_channels: int, channels: int, mults: Sequence[int], num_res_blocks: int,
                 grad_checkpoint: bool = False) -> None:
        super().__init__()
        self.grad_checkpoint = grad_checkpoint
        widths = [channels * m for m in reversed(mults)]
        current = widths[0]
        self.conv_in = nn.Sequential(nn.Conv2d(in_channels, current, 3, padding=1), ResBlock(current, current))
        self.levels, current = _resolution_levels(widths, num_res_blocks, Upsample)
        self.out = nn.Sequential(group_norm(current), nn.SiLU())
        self.out_channels = current

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _run_levels(self.levels, self.conv_in(x), self.grad_checkpoint)
        return self.out(x)


def fold_time(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """Apply a 2D network to a [B, T, C, H, W] tensor frame by frame, returning [B, T, C', H', W']."""
    y = fn(rearrange(x, "b t c h w -> (b t) c h w"))
    return rearrange(y, "(b t) c h w -> b t c h w", b=x.shape[0])
