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


def crop_corners(mask: torch.Tensor, size: tuple[int, int], object_probability: float) -> torch.Tensor:
    """Top-left corners [N, 2] of one `size` crop per mask [N, H, W]: with `object_probability` centred on a
    random object pixel (class > 0), otherwise anywhere; always inside the frame."""
    n, height, width = mask.shape
    crop_h, crop_w = min(size[0], height), min(size[1], width)
    corners = torch.stack([torch.randint(0, height - crop_h + 1, (n,)), torch.randint(0, width - crop_w + 1, (n,))], 1)
    for i in range(n):
        if float(torch.rand(())) >= object_probability:
            continue
        ys, xs = torch.nonzero(mask[i] > 0, as_tuple=True)
        if len(ys):
            pick = int(torch.randint(0, len(ys), ()))
            corners[i, 0] = int(ys[pick]) - crop_h // 2
            corners[i, 1] = int(xs[pick]) - crop_w // 2
    corners[:, 0].clamp_(0, height - crop_h)
    corners[:, 1].clamp_(0, width - crop_w)
    return corners


def random_crops(rgb: torch.Tensor, mask: torch.Tensor, size: tuple[int, int], object_probability: float
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """One crop of `size` (H, W) per frame, the same window for frame and mask (see `crop_corners`).

    Objects fill a small part of a frame, so object-centred crops spend the network's compute on the pixels that
    carry shape, material and colour: more objects seen per CPU second for the same steps."""
    corners = crop_corners(mask.cpu(), size, object_probability).tolist()
    crop_h, crop_w = min(size[0], mask.shape[-2]), min(size[1], mask.shape[-1])
    rgb = torch.stack([rgb[i, :, y:y + crop_h, x:x + crop_w] for i, (y, x) in enumerate(corners)])
    mask = torch.stack([mask[i, y:y + crop_h, x:x + crop_w] for i, (y, x) in enumerate(corners)])
    return rgb, mask


def augment_batch(rgb: torch.Tensor, mask: torch.Tensor, augment: Mapping[str, Any]
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Optional crops (`crop: [H, W]`, `crop_object_probability`), random horizontal flip (the same for frame
    and mask), then the photometric jitter of `photometric`."""
    if augment.get("crop"):
        size = tuple(int(v) for v in augment["crop"])
        if len(size) != 2 or min(size) < 1:
            raise UserError(f"data.augment.crop={list(augment['crop'])} must be [height, width] in pixels")
        rgb, mask = random_crops(rgb, mask, size, float(augment.get("crop_object_probability", 0.8)))
    n = rgb.shape[0]
    if augment.get("hflip", True):
        flip = torch.rand(n, device=rgb.device) < 0.5
        rgb = torch.where(flip.view(n, 1, 1, 1), rgb.flip(-1), rgb)
        mask = torch.where(flip.view(n, 1, 1), mask.flip(-1), mask)
    return photometric(rgb, augment), mask
