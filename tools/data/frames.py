"""The segmenter's data: every frame of labeled videos as an independent image, and its augmentation."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch.utils.data import Dataset

from tools.core.errors import UserError
from tools.data.clevrer import ClevrerDataset, read_frames, read_mask, resize_frames, resize_mask


class LabeledFrames(Dataset):
    """Every frame of every labeled video of some splits, as {'image' [3,H,W] float, 'mask' [H,W] int64}."""

    def __init__(self, root: str | Path, splits: list[str], size: tuple[int, int] | None = None) -> None:
        self.size = size
        self.entries = [entry for split in splits for entry in ClevrerDataset(root, split).entries
                        if entry.has_mask]
        if not self.entries:
            raise UserError(f"splits {list(splits)} of {root} hold no labeled video (no mask.npy); the "
                            f"segmenter needs labeled videos: check --data_path and data.train_splits")
        self.frames_per_video = [entry.n_frames for entry in self.entries]
        self.offsets = np.cumsum([0] + self.frames_per_video)

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        video = int(np.searchsorted(self.offsets, index, side="right")) - 1
        frame = index - int(self.offsets[video])
        entry = self.entries[video]
        image = read_frames(entry.path, [frame])
        mask = read_mask(entry.path, entry.n_frames, tuple(image.shape[-2:]))[frame].long()
        if self.size is not None:
            image, mask = resize_frames(image, self.size), resize_mask(mask, self.size)
        return {"image": image[0], "mask": mask}


def evenly_spread(total: int, wanted: int | None) -> list[int]:
    """`wanted` indices spread evenly over range(total) (all of them when wanted is None or >= total)."""
    if not wanted or wanted >= total:
        return list(range(total))
    return sorted(set(np.linspace(0, total - 1, int(wanted)).round().astype(int).tolist()))


def _grayscale(rgb: torch.Tensor) -> torch.Tensor:
    weights = rgb.new_tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    return (rgb * weights).sum(1, keepdim=True)


def _uniform_factor(n: int, amount: float, like: torch.Tensor) -> torch.Tensor:
    return 1.0 + amount * (2.0 * torch.rand(n, 1, 1, 1, device=like.device, dtype=like.dtype) - 1.0)


def augment_batch(rgb: torch.Tensor, mask: torch.Tensor, augment: Mapping[str, Any]
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Random horizontal flip (the same for frame and mask) and brightness/contrast/saturation jitter."""
    n = rgb.shape[0]
    if augment.get("hflip", True):
        flip = torch.rand(n, device=rgb.device) < 0.5
        rgb = torch.where(flip.view(n, 1, 1, 1), rgb.flip(-1), rgb)
        mask = torch.where(flip.view(n, 1, 1), mask.flip(-1), mask)
    if augment.get("brightness", 0):
        rgb = rgb * _uniform_factor(n, float(augment["brightness"]), rgb)
    if augment.get("contrast", 0):
        mean = _grayscale(rgb).mean(dim=(1, 2, 3), keepdim=True)
        rgb = (rgb - mean) * _uniform_factor(n, float(augment["contrast"]), rgb) + mean
    if augment.get("saturation", 0):
        gray = _grayscale(rgb)
        rgb = (rgb - gray) * _uniform_factor(n, float(augment["saturation"]), rgb) + gray
    return rgb.clamp(0.0, 1.0), mask
