"""Reader of the competition folder format (DESIGN.md section 2).

``<root>/<split>/video_<id>/image_<i>.png`` (8-bit RGB) and, in labeled splits, ``mask.npy``
(frames, H, W) uint8 class ids 0..48. Splits: train, val, unlabeled (no masks), hidden (11 frames).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from natsort import natsorted
from torch.utils.data import Dataset

from tools.data.classes import NUM_FRAMES
from tools.data.validate import (FRAME_FILE_PATTERN, MASK_FILE, MASK_MODES, VIDEO_DIR_PATTERN,
                                 check_mask, decode_png, expected_frames, frame_file, frame_size_problem,
                                 load_mask_file, require_frame_files, require_split_folder)
from tools.core.errors import UserError

IGNORE_INDEX = -1


@dataclass(frozen=True)
class VideoEntry:
    """One video folder: its id (from the folder name), path, frame files present and whether it has a mask."""

    id: int
    path: Path
    n_frames: int
    has_mask: bool


def list_videos(root: str | Path, split: str) -> list[VideoEntry]:
    """The videos of a split in natural order of folder name; a UserError if the split is missing or empty."""
    folder = require_split_folder(root, split)
    video_dirs = natsorted((p for p in folder.iterdir() if p.is_dir() and VIDEO_DIR_PATTERN.match(p.name)),
                           key=lambda p: p.name)
    entries = [_entry_of(video_dir) for video_dir in video_dirs]
    _refuse_duplicate_ids(entries)
    return entries


def _refuse_duplicate_ids(entries: list[VideoEntry]) -> None:
    """`video_0003` beside `video_3` is one id twice: a submission row could not say which video it is."""
    seen: dict[int, Path] = {}
    for entry in entries:
        if entry.id in seen:
            raise UserError(f"{entry.path} and {seen[entry.id]} have the same video id {entry.id}; a split must "
                            f"hold each id once (folders are named video_<id> without zero padding): rename or "
                            f"remove one of them")
        seen[entry.id] = entry.path


def _entry_of(video_dir: Path) -> VideoEntry:
    names = [entry.name for entry in video_dir.iterdir()]
    n_frames = sum(1 for name in names if FRAME_FILE_PATTERN.match(name))
    video_id = int(VIDEO_DIR_PATTERN.match(video_dir.name).group(1))
    return VideoEntry(id=video_id, path=video_dir, n_frames=n_frames, has_mask=MASK_FILE in names)


def read_frames(path: str | Path, indices: Sequence[int] | None = None) -> torch.Tensor:
    """Frames of a video folder as float32 [T, 3, H, W] in [0, 1]; all present frames when indices is None."""
    video_dir = Path(path)
    if indices is None:
        indices = range(sum(1 for p in video_dir.iterdir() if FRAME_FILE_PATTERN.match(p.name)))
    indices = list(indices)
    if not indices:
        raise UserError(f"{video_dir}: no frames to read (no image_<i>.png files, or an empty index list).")
    images = []
    first_path = video_dir / frame_file(indices[0])
    for index in indices:
        frame_path = video_dir / frame_file(index)
        image = decode_png(frame_path)
        if images and (problem := frame_size_problem(frame_path, image.shape[:2], images[0].shape[:2], first_path)):
            raise UserError(problem)
        images.append(image)
    stacked = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2)
    return stacked.to(torch.float32).div_(255.0)


def read_mask(path: str | Path, n_frames: int = NUM_FRAMES, frame_size: tuple[int, int] | None = None,
              mask_mode: str = "error") -> torch.Tensor:
    """A video's mask (path of mask.npy or of its video folder) as torch.uint8 [n_frames, H, W], checked.

    With mask_mode='background', ids above 48 become 0 and a warning reports how many pixels changed.
    """
    mask_path = Path(path)
    if mask_path.is_dir():
        mask_path = mask_path / MASK_FILE
    if not mask_path.exists():
        raise UserError(f"{mask_path}: mask file is missing. Labeled videos need {MASK_FILE}; "
                        f"put unlabeled videos in the unlabeled split.")
    mask, remapped = check_mask(load_mask_file(mask_path), mask_path, n_frames, frame_size, mask_mode)
    if remapped:
        warnings.warn(f"{mask_path}: mapped {remapped} mask pixels with ids above 48 to background (0).",
                      stacklevel=2)
    return torch.from_numpy(np.ascontiguousarray(mask))


def resize_frames(frames: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize float frames [T, C, H, W] to size (H, W): bilinear with antialiasing, clamped to [0, 1]."""
    if tuple(frames.shape[-2:]) == tuple(size):
        return frames
    resized = F.interpolate(frames, size=tuple(size), mode="bilinear", antialias=True, align_corners=False)
    return resized.clamp_(0.0, 1.0)


def resize_mask(mask: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize an integer mask [..., H, W] to size (H, W) by nearest neighbour, so ids are never blended.

    Uses pixel centres ("nearest-exact"): a 2x downscale keeps pixels (2i+1, 2j+1).
    """
    height, width = mask.shape[-2:]
    if (height, width) == tuple(size):
        return mask
    rows = _nearest_source_indices(height, size[0], mask.device)
    cols = _nearest_source_indices(width, size[1], mask.device)
    return mask.index_select(-2, rows).index_select(-1, cols)


def _nearest_source_indices(source: int, target: int, device: torch.device) -> torch.Tensor:
    centres = (torch.arange(target, device=device, dtype=torch.float64) + 0.5) * (source / target)
    return centres.floor().long().clamp_(0, source - 1)


class ClevrerDataset(Dataset):
    """One split of the competition format as items of frames, masks and video ids.

    Items: ``frames`` float32 [T, 3, H, W] in [0, 1]; ``mask`` int64 [T, H, W] (all -1, the ignore index,
    when the video has no mask); ``has_mask`` bool tensor; ``video_id`` int. ``frame_indices`` picks frames
    (0-based; all frames of the split when None); ``size`` (H, W) resizes frames and masks.
    ``validate`` checks every video's frame files when the dataset is built; PNGs and masks are always
    checked when read, so a bad file ends in a message naming it rather than a crash deep in training.
    """

    def __init__(self, root: str | Path, split: str, frame_indices: Iterable[int] | None = None,
                 size: tuple[int, int] | None = None, mask_mode: str = "error", validate: bool = True):
        if mask_mode not in MASK_MODES:
            raise UserError(f"mask_mode {mask_mode!r} is unknown; use one of {MASK_MODES}.")
        self.root = Path(root)
        self.split = split
        self.n_frames = expected_frames(split)
        self.frame_indices = self._checked_indices(frame_indices)
        self.size = _checked_size(size)
        self.mask_mode = mask_mode
        self.entries = list_videos(root, split)
        if validate:
            for entry in self.entries:
                require_frame_files(entry.path, self.n_frames)

    def _checked_indices(self, frame_indices: Iterable[int] | None) -> tuple[int, ...]:
        if frame_indices is None:
            return tuple(range(self.n_frames))
        indices = tuple(int(i) for i in frame_indices)
        bad = [i for i in indices if not 0 <= i < self.n_frames]
        if not indices or bad:
            raise UserError(f"frame indices {list(indices)} are invalid for split {self.split!r}: its videos have "
                            f"{self.n_frames} frames, so indices must lie in 0..{self.n_frames - 1} (0-based).")
        return indices

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, index: int) -> dict:
        entry = self.entries[index]
        frames = read_frames(entry.path, self.frame_indices)
        height, width = frames.shape[-2:]
        if entry.has_mask:
            full_mask = read_mask(entry.path, self.n_frames, (height, width), self.mask_mode)
            mask = full_mask[list(self.frame_indices)].long()
        else:
            mask = torch.full((len(self.frame_indices), height, width), IGNORE_INDEX, dtype=torch.int64)
        if self.size is not None:
            frames = resize_frames(frames, self.size)
            mask = resize_mask(mask, self.size)
        return {"frames": frames, "mask": mask, "has_mask": torch.tensor(entry.has_mask), "video_id": entry.id}


def _checked_size(size: Sequence[int] | None) -> tuple[int, int] | None:
    if size is None:
        return None
    size = tuple(int(s) for s in size)
    if len(size) != 2 or min(size) < 1:
        raise UserError(f"size {size} is invalid: give (height, width) as two positive integers, or None.")
    return size
