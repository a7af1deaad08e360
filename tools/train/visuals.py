"""Image grids for TensorBoard and reports: rows of frames, reconstructions and colour-coded masks."""
from __future__ import annotations

from typing import Sequence

import torch
from torchvision.utils import make_grid

from tools.data.classes import colorize_mask


def mask_to_rgb(mask: torch.Tensor) -> torch.Tensor:
    """Class ids [T,H,W] (or [H,W]) -> float RGB in [0,1] [T,3,H,W] (-1 shown as background)."""
    ids = mask.detach().long().clamp(min=0).cpu()
    rgb = torch.from_numpy(colorize_mask(ids.numpy())).float() / 255
    return rgb.movedim(-1, -3)


def pick_frames(n_frames: int, count: int = 6) -> list[int]:
    """Evenly spaced frame indices, always including the first and last."""
    if n_frames <= count:
        return list(range(n_frames))
    return sorted({round(i * (n_frames - 1) / (count - 1)) for i in range(count)})


def video_grid(*rows: torch.Tensor | None, frames: Sequence[int] | None = None) -> torch.Tensor:
    """Stack rows (RGB in [-1,1] [T,3,H,W], or class ids [T,H,W]) into one [3,H',W'] image in [0,1]."""
    present = [row for row in rows if row is not None]
    index = list(frames) if frames is not None else pick_frames(present[0].shape[0])
    tiles = []
    for row in present:
        row = row.detach().float().cpu()
        row = mask_to_rgb(row) if row.dim() == 3 else (row.clamp(-1, 1) + 1) / 2
        tiles.append(row[index])
    return make_grid(torch.cat(tiles), nrow=len(index), padding=2, pad_value=1.0)


def side_by_side(*videos: torch.Tensor | None) -> torch.Tensor:
    """Videos [T,3,H,W] in [-1,1] of one size, placed left to right -> one [T,3,H,W'] video in [0,1] for
    RunLogger.log_video (a 2-pixel white gap between them)."""
    present = [(video.detach().float().cpu().clamp(-1, 1) + 1) / 2 for video in videos if video is not None]
    frames, _, height, _ = present[0].shape
    gap = torch.ones(frames, 3, height, 2)
    pieces = [piece for video in present for piece in (video, gap)][:-1]
    return torch.cat(pieces, dim=-1)
