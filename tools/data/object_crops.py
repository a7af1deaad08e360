"""Crops around single objects for the object classifier (models/object_classifier.py), and their augmentation.

Every crop is square, centred on the object's bounding box and `STORE_MARGIN` times its longer side, so objects
near and far from the camera fill it alike (scale-normalised), resampled to `STORE_SIZE` pixels with
roi_align from the full-resolution frame; channel 4 is the object's own mask. The network sees a view of it,
`view_crops`: at `VIEW_MARGIN` and `VIEW_SIZE` pixels, jittered in scale and position during training, and the
same view without jitter at prediction, so both go through one resampling path.

`ObjectCrops` holds the crops of every object in every frame of labeled videos, from the true masks, with its
(shape, material, colour) labels (about 0.2 GB for 160 videos).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset
from tqdm import tqdm

from tools.core.errors import UserError
from tools.data.classes import class_indices
from tools.data.clevrer import ClevrerDataset, read_frames, read_mask
from tools.data.frames import photometric

STORE_SIZE = 48
STORE_MARGIN = 1.6
VIEW_SIZE = 32
VIEW_MARGIN = 1.25
MIN_SIDE = 12.0  # pixels: a sliver of an occluded object still gets some context
# The last two cropped sets (training and validation), reused when the same videos are asked for again in this
# process (a benchmark that trains in chunks); no more, to bound memory.
_CROPPED: dict[tuple, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}


def square_boxes(binary: torch.Tensor, margin: float = STORE_MARGIN, min_side: float = MIN_SIDE) -> torch.Tensor:
    """Boxes [N, 4] (x0, y0, x1, y1, pixel-edge coordinates) of masks [N, H, W]: square, centred on each mask's
    bounding box, `margin` times its longer side. An empty mask gets a box at the frame's centre."""
    n, height, width = binary.shape
    rows, cols = binary.any(2), binary.any(1)
    boxes = torch.empty(n, 4)
    for i in range(n):
        ys, xs = torch.nonzero(rows[i]).flatten(), torch.nonzero(cols[i]).flatten()
        if len(ys) == 0:
            y0, y1, x0, x1 = height / 2 - 1, height / 2 + 1, width / 2 - 1, width / 2 + 1
        else:
            y0, y1, x0, x1 = float(ys[0]), float(ys[-1]) + 1, float(xs[0]), float(xs[-1]) + 1
        side = max(margin * max(y1 - y0, x1 - x0), min_side)
        cy, cx = (y0 + y1) / 2, (x0 + x1) / 2
        boxes[i] = torch.tensor([cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2])
    return boxes


def crop_objects(frames01: torch.Tensor, labels: torch.Tensor, items: Sequence[tuple[int, int]],
                 size: int = STORE_SIZE, margin: float = STORE_MARGIN) -> torch.Tensor:
    """Crops [N, 4, size, size] (RGB in [0, 1], then the object's mask in [0, 1]) of the objects `items`:
    (frame index, label id) pairs into frames [T, 3, H, W] and label maps [T, H, W] (class ids or component
    ids). Outside the frame, RGB and mask are 0."""
    from torchvision.ops import roi_align

    if not items:
        return torch.zeros(0, 4, size, size)
    frame_index = torch.tensor([t for t, _ in items])
    ids = torch.tensor([label for _, label in items]).view(-1, 1, 1)
    binary = labels[frame_index].long() == ids
    boxes = square_boxes(binary, margin)
    rgb = roi_align(frames01.float(), torch.cat([frame_index.view(-1, 1).float(), boxes], 1), size,
                    spatial_scale=1.0, sampling_ratio=2, aligned=True)
    mask = roi_align(binary.float().unsqueeze(1), torch.cat([torch.arange(len(items)).view(-1, 1).float(), boxes], 1),
                     size, spatial_scale=1.0, sampling_ratio=2, aligned=True)
    return torch.cat([rgb, mask], 1)


def view_crops(stored: torch.Tensor, size: int = VIEW_SIZE, scale_jitter: float = 0.0,
               shift_jitter: float = 0.0) -> torch.Tensor:
    """The network's view [N, 4, size, size] of stored crops [N, 4, S, S]: the central VIEW_MARGIN/STORE_MARGIN
    of each, times a random scale in 1 +- scale_jitter, shifted by up to shift_jitter of the view."""
    n = stored.shape[0]
    scale = torch.full((n,), VIEW_MARGIN / STORE_MARGIN)
    shift = torch.zeros(n, 2)
    if scale_jitter:
        scale = scale * (1 + scale_jitter * (2 * torch.rand(n) - 1))
    if shift_jitter:
        shift = shift_jitter * scale.view(-1, 1) * (2 * torch.rand(n, 2) - 1)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = scale
    theta[:, :, 2] = shift
    grid = F.affine_grid(theta.to(stored), [n, stored.shape[1], size, size], align_corners=False)
    return F.grid_sample(stored, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _jitter_masks(mask: torch.Tensor) -> torch.Tensor:
    """Masks [N, 1, S, S] made to look like a segmenter's: a third dilated, a third eroded by one pixel, and half
    of them at half resolution (blocky edges)."""
    n = mask.shape[0]
    binary = (mask > 0.5).float()
    choice = torch.randint(0, 3, (n, 1, 1, 1))
    dilated = F.max_pool2d(binary, 3, 1, 1)
    eroded = 1 - F.max_pool2d(1 - binary, 3, 1, 1)
    binary = torch.where(choice == 1, dilated, torch.where(choice == 2, eroded, binary))
    coarse = F.interpolate((F.avg_pool2d(binary, 2) > 0.5).float(), scale_factor=2, mode="nearest")
    return torch.where(torch.rand(n, 1, 1, 1) < 0.5, coarse, binary)


def augment_crops(stored: torch.Tensor, augment: Mapping[str, Any]) -> torch.Tensor:
    """Training views of stored crops: scale/shift jitter, horizontal flip, photometric jitter of the RGB (the
    segmenter's, tools/data/frames.py) and mask jitter."""
    views = view_crops(stored, int(augment.get("size", VIEW_SIZE)), float(augment.get("scale_jitter", 0.15)),
                       float(augment.get("shift_jitter", 0.1)))
    if augment.get("hflip", True):
        flip = torch.rand(views.shape[0]) < 0.5
        views = torch.where(flip.view(-1, 1, 1, 1), views.flip(-1), views)
    rgb = photometric(views[:, :3], augment)
    mask = _jitter_masks(views[:, 3:]) if augment.get("mask_jitter", True) else views[:, 3:]
    return torch.cat([rgb, mask], 1)


class ObjectCrops(Dataset):
    """Stored crops of every object (area >= min_pixels) in every frame of the labeled videos of `splits`, as
    {'crop': float [4, S, S], 'shape', 'material', 'colour': int64}."""

    def __init__(self, root: str | Path, splits: Sequence[str], min_pixels: int = 10,
                 max_videos: int | None = None, frames: Sequence[int] | None = None, desc: str = "object crops"
                 ) -> None:
        entries = [entry for split in splits for entry in ClevrerDataset(root, split).entries
                   if entry.has_mask][: max_videos or None]
        if not entries:
            raise UserError(f"splits {list(splits)} of {root} hold no labeled video (no mask.npy); the object "
                            f"classifier learns from true masks: check --data_path and data.train_splits")
        key = (tuple(str(entry.path) for entry in entries), min_pixels, None if frames is None else tuple(frames))
        if key not in _CROPPED:
            while len(_CROPPED) >= 2:  # a training and a validation set
                _CROPPED.pop(next(iter(_CROPPED)))
            _CROPPED[key] = self._crop_videos(entries, min_pixels, frames, desc)
        self.crops, self.factors, self.video_ids = _CROPPED[key]

    @staticmethod
    def _crop_videos(entries: list, min_pixels: int, frames: Sequence[int] | None, desc: str
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        crops, factors, videos = [], [], []
        for entry in tqdm(entries, desc=desc, unit="video", dynamic_ncols=True):
            indices = list(range(entry.n_frames)) if frames is None else [t for t in frames if t < entry.n_frames]
            rgb = read_frames(entry.path, indices)
            labels = read_mask(entry.path, entry.n_frames, tuple(rgb.shape[-2:]))[indices]
            items = [(t, int(c)) for t in range(len(indices))
                     for c, count in zip(*np.unique(labels[t].numpy(), return_counts=True))
                     if c > 0 and count >= min_pixels]
            crops.append(crop_objects(rgb, labels, items).mul(255).round_().to(torch.uint8))
            factors.extend(class_indices(c) for _, c in items)
            videos.extend([entry.id] * len(items))
        return (torch.cat(crops), torch.tensor(factors, dtype=torch.long).view(-1, 3),
                torch.tensor(videos, dtype=torch.long))

    def __len__(self) -> int:
        return len(self.crops)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        shape, material, colour = self.factors[index]
        return {"crop": self.crops[index].float().div_(255), "shape": shape, "material": material,
                "colour": colour}
