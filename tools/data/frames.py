"""The segmenter's data: every frame of labeled videos as an independent image, and its augmentation.

With `cache=True` every frame is decoded and resized once into uint8 tensors in memory (a 400-video set at
80x120 is about 0.35 GB): re-decoding PNGs each epoch costs as much CPU as a small network's step.
The photometric augmentation is matched to the real frames (shared/data/real_samples): they are softer than
generated ones (edge gradients about 0.7x), slightly tinted and differ in exposure; colour is part of the class
id, so hue is never jittered, only small per-channel gains.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset
from tqdm import tqdm

from tools.core.errors import UserError
from tools.data.clevrer import ClevrerDataset, read_frames, read_mask, resize_frames, resize_mask

# The last decoded set, reused when the same frames are asked for again in this process (a benchmark that
# trains in chunks, or train and val sets built twice); one entry only, to bound memory.
_DECODED: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}


class LabeledFrames(Dataset):
    """Every frame of every labeled video of some splits, as {'image' [3,H,W] float, 'mask' [H,W] int64}."""

    def __init__(self, root: str | Path, splits: list[str], size: tuple[int, int] | None = None,
                 cache: bool = False, max_videos: int | None = None) -> None:
        self.size = size
        self.entries = [entry for split in splits for entry in ClevrerDataset(root, split).entries
                        if entry.has_mask][: max_videos or None]
        if not self.entries:
            raise UserError(f"splits {list(splits)} of {root} hold no labeled video (no mask.npy); the "
                            f"segmenter needs labeled videos: check --data_path and data.train_splits")
        self.frames_per_video = [entry.n_frames for entry in self.entries]
        self.offsets = np.cumsum([0] + self.frames_per_video)
        self.images: torch.Tensor | None = None
        self.masks: torch.Tensor | None = None
        if cache:
            self._fill_cache()

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def _read_video(self, video: int, frames: list[int] | None) -> tuple[torch.Tensor, torch.Tensor]:
        entry = self.entries[video]
        image = read_frames(entry.path, frames)
        mask = read_mask(entry.path, entry.n_frames, tuple(image.shape[-2:])).long()
        mask = mask if frames is None else mask[frames]
        if self.size is not None:
            image, mask = resize_frames(image, self.size), resize_mask(mask, self.size)
        return image, mask

    def _fill_cache(self) -> None:
        key = (tuple(str(e.path) for e in self.entries), self.size)
        if key in _DECODED:
            self.images, self.masks = _DECODED[key]
            return
        images, masks = [], []
        for video in tqdm(range(len(self.entries)), desc="caching frames", unit="video", dynamic_ncols=True):
            image, mask = self._read_video(video, None)
            images.append(image.mul(255).round_().to(torch.uint8))
            masks.append(mask.to(torch.uint8))
        self.images, self.masks = torch.cat(images), torch.cat(masks)
        _DECODED.clear()
        _DECODED[key] = (self.images, self.masks)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if self.images is not None:
            return {"image": self.images[index].float().div_(255), "mask": self.masks[index].long()}
        video = int(np.searchsorted(self.offsets, index, side="right")) - 1
        image, mask = self._read_video(video, [index - int(self.offsets[video])])
        return {"image": image[0], "mask": mask[0]}


def evenly_spread(total: int, wanted: int | None) -> list[int]:
    """`wanted` indices spread evenly over range(total) (all of them when wanted is None or >= total)."""
    if not wanted or wanted >= total:
        return list(range(total))
    return sorted(set(np.linspace(0, total - 1, int(wanted)).round().astype(int).tolist()))


def _grayscale(rgb: torch.Tensor) -> torch.Tensor:
    weights = rgb.new_tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    return (rgb * weights).sum(1, keepdim=True)


def _uniform(n: int, amount: float, like: torch.Tensor, channels: int = 1) -> torch.Tensor:
    """Factors 1 +- amount, one per sample (and channel), shaped to broadcast over [N, C, H, W]."""
    return 1.0 + amount * (2.0 * torch.rand(n, channels, 1, 1, device=like.device, dtype=like.dtype) - 1.0)


def random_blur(rgb: torch.Tensor, max_sigma: float, probability: float = 0.5) -> torch.Tensor:
    """Gaussian blur with a sigma drawn per frame from [0, max_sigma] pixels, on `probability` of the frames."""
    n, channels = rgb.shape[:2]
    sigma = torch.rand(n, device=rgb.device) * max_sigma
    sigma = torch.where(torch.rand(n, device=rgb.device) < probability, sigma, torch.zeros_like(sigma))
    radius = max(1, math.ceil(2 * max_sigma))
    offsets = torch.arange(-radius, radius + 1, device=rgb.device, dtype=rgb.dtype)
    kernel = torch.exp(-0.5 * (offsets.view(1, -1) / sigma.clamp_min(1e-3).view(-1, 1)) ** 2)
    kernel = (kernel / kernel.sum(1, keepdim=True)).repeat_interleave(channels, 0)  # [N*C, taps]
    # One group per (frame, channel): every frame gets its own kernel in a single separable pass.
    flat = rgb.reshape(1, n * channels, *rgb.shape[-2:])
    flat = F.conv2d(F.pad(flat, (radius, radius, 0, 0), mode="replicate"), kernel.view(n * channels, 1, 1, -1),
                    groups=n * channels)
    flat = F.conv2d(F.pad(flat, (0, 0, radius, radius), mode="replicate"), kernel.view(n * channels, 1, -1, 1),
                    groups=n * channels)
    return flat.view_as(rgb)


def photometric(rgb: torch.Tensor, augment: Mapping[str, Any]) -> torch.Tensor:
    """Exposure, contrast, saturation, gamma, white balance, blur and sensor noise, each off when 0 or absent."""
    n = rgb.shape[0]
    if augment.get("brightness", 0):
        rgb = rgb * _uniform(n, float(augment["brightness"]), rgb)
    if augment.get("contrast", 0):
        mean = _grayscale(rgb).mean(dim=(1, 2, 3), keepdim=True)
        rgb = (rgb - mean) * _uniform(n, float(augment["contrast"]), rgb) + mean
    if augment.get("saturation", 0):
        gray = _grayscale(rgb)
        rgb = (rgb - gray) * _uniform(n, float(augment["saturation"]), rgb) + gray
    if augment.get("channel_gain", 0):  # white balance: small, so a colour never turns into another
        rgb = rgb * _uniform(n, float(augment["channel_gain"]), rgb, channels=3)
    rgb = rgb.clamp(0.0, 1.0)
    if augment.get("gamma", 0):
        rgb = rgb.clamp_min(1e-4) ** _uniform(n, float(augment["gamma"]), rgb)
    if augment.get("blur", 0):
        rgb = random_blur(rgb, float(augment["blur"]), float(augment.get("blur_probability", 0.5)))
    if augment.get("noise", 0):
        sigma = torch.rand(n, 1, 1, 1, device=rgb.device, dtype=rgb.dtype) * float(augment["noise"])
        rgb = rgb + sigma * torch.randn_like(rgb)
    return rgb.clamp(0.0, 1.0)


def augment_batch(rgb: torch.Tensor, mask: torch.Tensor, augment: Mapping[str, Any]
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Random horizontal flip (the same for frame and mask), then the photometric jitter of `photometric`."""
    n = rgb.shape[0]
    if augment.get("hflip", True):
        flip = torch.rand(n, device=rgb.device) < 0.5
        rgb = torch.where(flip.view(n, 1, 1, 1), rgb.flip(-1), rgb)
        mask = torch.where(flip.view(n, 1, 1), mask.flip(-1), mask)
    return photometric(rgb, augment), mask
