"""Human-readable prediction outputs: per-video PNGs (inputs, predicted frame 22, masks) and GIFs."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from tools.core.atomic import atomic_path
from tools.data.classes import colorize_mask


def uint8_hwc(frame: torch.Tensor) -> np.ndarray:
    """[3,H,W] float in [0,1] or uint8 -> uint8 [H,W,3]."""
    if frame.dtype != torch.uint8:
        frame = (frame.float().clamp(0, 1) * 255).round().to(torch.uint8)
    return frame.permute(1, 2, 0).cpu().numpy()


def resized_uint8(frame: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """uint8 [3,h,w] -> uint8 [3,H,W] (predictions may be at a lower model resolution)."""
    if tuple(frame.shape[-2:]) == tuple(size):
        return frame
    scaled = F.interpolate(frame[None].float(), size=size, mode="bilinear", align_corners=False)[0]
    return scaled.round().clamp(0, 255).to(torch.uint8)


def save_png(array: np.ndarray, path: Path) -> None:
    with atomic_path(path) as temp:
        Image.fromarray(array).save(temp)


def write_video_pngs(folder: Path, observed: torch.Tensor, predicted: torch.Tensor, mask: torch.Tensor,
                     truth: torch.Tensor | None) -> None:
    """inputs.png (frames 1, 6, 11), predicted_frame22.png, predicted_mask.png and, if known, true_mask.png."""
    folder.mkdir(parents=True, exist_ok=True)
    size = tuple(observed.shape[-2:])
    picks = [0, observed.shape[0] // 2, observed.shape[0] - 1]
    save_png(np.concatenate([uint8_hwc(observed[i]) for i in picks], axis=1), folder / "inputs.png")
    save_png(uint8_hwc(resized_uint8(predicted, size)), folder / "predicted_frame22.png")
    save_png(colorize_mask(mask.cpu().numpy()), folder / "predicted_mask.png")
    if truth is not None:
        save_png(colorize_mask(truth.cpu().numpy()), folder / "true_mask.png")


def write_gif(path: Path, observed: torch.Tensor, predicted: torch.Tensor, ms_per_frame: int = 150) -> None:
    """Observed frames followed by the predicted target frames, as an animated GIF."""
    size = tuple(observed.shape[-2:])
    frames = [uint8_hwc(f) for f in observed] + [uint8_hwc(resized_uint8(f, size)) for f in predicted]
    images = [Image.fromarray(f) for f in frames]
    with atomic_path(path) as temp:
        images[0].save(temp, save_all=True, append_images=images[1:], duration=ms_per_frame, loop=0)
