"""PatchGAN discriminators for the stage-1 GAN finetune, and hinge losses.

``PatchDiscriminator2d`` scores overlapping patches of single frames (sharpness), and
``PatchDiscriminator3d`` scores space-time patches of clips (temporal consistency, as in PVDM/TATS).

Normalisation: spectral norm on every conv and no BatchNorm. BatchNorm (pix2pix's choice) mixes the
statistics of real and fake batches, behaves differently in train/eval, and needs SyncBatchNorm under
DDP; spectral norm bounds each layer's Lipschitz constant, which keeps the hinge-loss game stable
without any batch statistics, so one code path serves CPU, one GPU and torchrun alike.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm


def _layer_widths(channels: int, layers: int) -> list[int]:
    return [channels * min(2 ** i, 8) for i in range(layers + 1)]


class PatchDiscriminator2d(nn.Module):
    """Frames [N, 3, H, W] in [-1, 1] -> patch logits [N, 1, h, w] (``layers`` stride-2 convs)."""

    def __init__(self, in_channels: int = 3, channels: int = 64, layers: int = 3) -> None:
        super().__init__()
        widths = _layer_widths(channels, layers)
        modules: list[nn.Module] = [spectral_norm(nn.Conv2d(in_channels, widths[0], 4, 2, 1)), nn.LeakyReLU(0.2)]
        for index in range(1, layers + 1):
            stride = 2 if index < layers else 1
            modules += [spectral_norm(nn.Conv2d(widths[index - 1], widths[index], 4, stride, 1)), nn.LeakyReLU(0.2)]
        modules.append(spectral_norm(nn.Conv2d(widths[-1], 1, 3, 1, 1)))
        self.net = nn.Sequential(*modules)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return self.net(frames)


class PatchDiscriminator3d(nn.Module):
    """Clips [B, T, 3, H, W] in [-1, 1] -> space-time patch logits [B, 1, t, h, w].

    The first conv keeps time (stride 1) so short clips work; later ones halve time and space.
    """

    def __init__(self, in_channels: int = 3, channels: int = 64, layers: int = 3) -> None:
        super().__init__()
        widths = _layer_widths(channels, layers)
        modules: list[nn.Module] = [spectral_norm(nn.Conv3d(in_channels, widths[0], (3, 4, 4), (1, 2, 2), 1)),
                                    nn.LeakyReLU(0.2)]
        for index in range(1, layers + 1):
            stride = (2, 2, 2) if index < layers else (1, 1, 1)
            modules += [spectral_norm(nn.Conv3d(widths[index - 1], widths[index], (3, 4, 4), stride, 1)),
                        nn.LeakyReLU(0.2)]
        modules.append(spectral_norm(nn.Conv3d(widths[-1], 1, 3, 1, 1)))
        self.net = nn.Sequential(*modules)

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        return self.net(rearrange(clips, "b t c h w -> b c t h w"))


def hinge_d_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    """Discriminator hinge loss: pushes real logits above +1 and fake ones below -1; zero when both hold."""
    return 0.5 * (F.relu(1.0 - logits_real).mean() + F.relu(1.0 + logits_fake).mean())


def hinge_g_loss(logits_fake: torch.Tensor) -> torch.Tensor:
    """Generator hinge loss: lower when the discriminator scores fakes as more real."""
    return -logits_fake.mean()
