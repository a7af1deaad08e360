"""PSNR and SSIM per frame, plus reading paired frame files for the evaluation scripts.

SSIM follows Wang et al. 2004 as torchmetrics and scikit-image (gaussian_weights=True) compute
it: an 11x11 Gaussian window with sigma 1.5, K1 = 0.01, K2 = 0.03, per channel over the region
where the window fits (no padding), averaged over channels and pixels. (torchmetrics 1.x instead
averages its map over the whole frame with reflection-padded borders, which differs slightly.) Inputs are [N,C,H,W]
floats in [0, data_range] (data_range 1 by default); uint8 frames are scaled to [0,1] first.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from natsort import natsorted
from PIL import Image
from torch.nn import functional as F

from tools.core.errors import UserError

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1, SSIM_K2 = 0.01, 0.03
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


def _as_float_frames(frames: torch.Tensor) -> torch.Tensor:
    if frames.dim() != 4:
        raise ValueError(f"frames must be [N,C,H,W], got {tuple(frames.shape)}")
    return frames.double() / 255.0 if frames.dtype == torch.uint8 else frames.double()


def psnr(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """PSNR in dB per frame, [N]; inf for identical frames."""
    x, y = _as_float_frames(x), _as_float_frames(y)
    mse = (x - y).pow(2).flatten(1).mean(dim=1)
    return 10.0 * torch.log10(data_range**2 / mse)


def _gaussian_window(channels: int, device: torch.device) -> torch.Tensor:
    offsets = torch.arange(SSIM_WINDOW, dtype=torch.float64, device=device) - (SSIM_WINDOW - 1) / 2
    profile = torch.exp(-(offsets**2) / (2 * SSIM_SIGMA**2))
    profile = profile / profile.sum()
    return torch.outer(profile, profile).expand(channels, 1, SSIM_WINDOW, SSIM_WINDOW).contiguous()


def ssim(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Mean SSIM per frame, [N]; 1.0 for identical frames. Frames must be at least 11x11."""
    x, y = _as_float_frames(x), _as_float_frames(y)
    if x.shape != y.shape:
        raise ValueError(f"frames differ in shape: {tuple(x.shape)} vs {tuple(y.shape)}")
    if min(x.shape[-2:]) < SSIM_WINDOW:
        raise ValueError(f"SSIM needs frames of at least {SSIM_WINDOW}x{SSIM_WINDOW}, got {tuple(x.shape[-2:])}")
    window = _gaussian_window(x.shape[1], x.device)

    def blur(image: torch.Tensor) -> torch.Tensor:
        return F.conv2d(image, window, groups=x.shape[1])

    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov_xy = blur(x * y) - mu_x * mu_y
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov_xy + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return ssim_map.flatten(1).mean(dim=1)


def read_image(path: str | Path) -> torch.Tensor:
    """An image file as uint8 [3, H, W]; a UserError naming the file if it cannot be read."""
    path = Path(path)
    try:
        with Image.open(path) as opened:
            pixels = np.array(opened.convert("RGB"))
    except (OSError, ValueError) as error:
        raise UserError(f"{path}: cannot read image ({error}). Check the path or replace the file.") from None
    return torch.from_numpy(pixels).permute(2, 0, 1).contiguous()


def image_files(folder: Path) -> list[Path]:
    """Image files of a folder in natural order."""
    return natsorted((p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES), key=lambda p: p.name)


def paired_image_files(a: str | Path, b: str | Path) -> list[tuple[Path, Path]]:
    """Pairs to compare: two files, or the files of the same name in two folders."""
    a, b = Path(a), Path(b)
    for path in (a, b):
        if not path.exists():
            raise UserError(f"{path}: no such file or folder.")
    if a.is_file() and b.is_file():
        return [(a, b)]
    if not (a.is_dir() and b.is_dir()):
        raise UserError(f"give two image files or two folders of frames, got {a} and {b}.")
    names_a = {p.name for p in image_files(a)}
    names_b = {p.name for p in image_files(b)}
    common = natsorted(names_a & names_b)
    if not common:
        raise UserError(f"{a} and {b} share no image file names; frames are paired by file name.")
    if names_a != names_b:
        missing = natsorted(names_a ^ names_b)[:5]
        raise UserError(f"{a} and {b} hold different frame names (e.g. {missing}); each frame needs its pair.")
    return [(a / name, b / name) for name in common]
