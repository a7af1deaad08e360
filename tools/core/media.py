"""Video files a person can open: mp4 (H.264 through PyAV), animated GIF, and PNG grids of frames.

Every writer goes through tools.core.atomic, so a killed run never leaves a half-written file.
Frames are uint8 [T, H, W, 3] (use `to_uint8_frames` for float frames in [-1, 1] or [0, 1]).
"""
from __future__ import annotations

import io
import os
from typing import Sequence

import numpy as np
import torch

from tools.core.atomic import atomic_path
from tools.core.errors import UserError


def to_uint8_frames(frames: torch.Tensor, value_range: tuple[float, float] = (-1.0, 1.0)) -> np.ndarray:
    """[T, 3, H, W] float in value_range (or uint8) -> uint8 [T, H, W, 3]."""
    if frames.dim() != 4 or frames.shape[1] != 3:
        raise ValueError(f"frames must be [T, 3, H, W], got {tuple(frames.shape)}")
    if frames.dtype != torch.uint8:
        low, high = value_range
        frames = ((frames.detach().float().cpu() - low) / (high - low)).clamp(0, 1).mul(255).round().to(torch.uint8)
    return frames.cpu().permute(0, 2, 3, 1).contiguous().numpy()


def _even(frames: np.ndarray) -> np.ndarray:
    """H.264 in yuv420p needs even sizes: pad by one edge row/column where odd."""
    pad_h, pad_w = frames.shape[1] % 2, frames.shape[2] % 2
    if pad_h or pad_w:
        frames = np.pad(frames, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    return frames


def write_mp4(frames: np.ndarray, path: str | os.PathLike, fps: int = 8, crf: int = 18) -> None:
    """uint8 [T, H, W, 3] -> an H.264 mp4 that browsers and players open (yuv420p)."""
    import av

    frames = _even(np.asarray(frames))
    with atomic_path(path) as temp:
        with av.open(str(temp), "w", format="mp4") as container:
            stream = container.add_stream("libx264", rate=int(fps))
            stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
            stream.options = {"crf": str(crf)}
            for image in frames:
                container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
            container.mux(stream.encode())


def read_mp4(path: str | os.PathLike) -> np.ndarray:
    """Every frame of a video file as uint8 [T, H, W, 3]."""
    import av

    try:
        with av.open(str(path)) as container:
            return np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)])
    except av.error.FFmpegError as error:
        raise UserError(f"{path}: cannot decode the video ({error}).") from None


def gif_bytes(frames: np.ndarray, fps: int = 8) -> bytes:
    """uint8 [T, H, W, 3] -> an endlessly looping animated GIF."""
    from PIL import Image

    images = [Image.fromarray(frame) for frame in np.asarray(frames)]
    buffer = io.BytesIO()
    images[0].save(buffer, format="GIF", save_all=True, append_images=images[1:], duration=int(1000 / fps),
                   loop=0, optimize=False)
    return buffer.getvalue()


def write_gif(frames: np.ndarray, path: str | os.PathLike, fps: int = 8) -> None:
    with atomic_path(path) as temp:
        temp.write_bytes(gif_bytes(frames, fps))


def tile_videos(videos: Sequence[np.ndarray], columns: int, gap: int = 2) -> np.ndarray:
    """Several uint8 [T, H, W, 3] videos of one shape -> one [T, H', W', 3] video of tiles, white gaps."""
    count = len(videos)
    if count == 0:
        raise ValueError("tile_videos needs at least one video")
    frames, height, width, _ = videos[0].shape
    rows = -(-count // columns)
    canvas = np.full((frames, rows * (height + gap) - gap, columns * (width + gap) - gap, 3), 255, np.uint8)
    for index, video in enumerate(videos):
        top, left = (index // columns) * (height + gap), (index % columns) * (width + gap)
        canvas[:, top:top + height, left:left + width] = video
    return canvas
