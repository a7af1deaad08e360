"""What both prediction routes write: per-video results (resumable), then submission.pt, video_ids.json,
frames.pt and meta.json assembled from them, plus per-video PNGs (inputs, predicted frame 22, masks) and GIFs."""
from __future__ import annotations

import json
import resource
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from tools.core.atomic import atomic_path, torch_save_atomic, write_text_atomic
from tools.data.classes import NUM_CLASSES, colorize_mask
from tools.data.clevrer import read_frames, read_mask


def result_path(out_dir: Path, video_id: int) -> Path:
    """One video's finished result ({"mask", "frames"}); a re-run skips the videos that have one."""
    return out_dir / "per_video" / f"video_{video_id}" / "result.pth"


def peak_memory_gib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # kilobytes on Linux


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


def check_submission(submission: torch.Tensor, video_ids: list[int], size: tuple[int, int]) -> None:
    """The competition's format: [N, H, W] uint8 class ids below NUM_CLASSES, one per video in natural id order.
    A failure here is a bug, not a user error: nothing is written."""
    if submission.dtype != torch.uint8 or tuple(submission.shape) != (len(video_ids), *size):
        raise RuntimeError(f"submission is {tuple(submission.shape)} {submission.dtype}; expected "
                           f"({len(video_ids)}, {size[0]}, {size[1]}) torch.uint8")
    if video_ids != sorted(video_ids) or len(set(video_ids)) != len(video_ids):
        raise RuntimeError("submission video ids are not unique and in natural (ascending) order")
    if len(video_ids) and int(submission.max()) >= NUM_CLASSES:
        raise RuntimeError(f"submission holds class {int(submission.max())}; class ids run 0..{NUM_CLASSES - 1}")


def assemble_outputs(out_dir: Path, entries: list, meta: dict, png_videos: int, gif_videos: int,
                     n_obs: int) -> None:
    """submission.pt, video_ids.json, frames.pt and meta.json from the per-video results, plus PNGs and GIFs."""
    results = [torch.load(result_path(out_dir, e.id), weights_only=True) for e in entries]
    submission = torch.stack([r["mask"] for r in results])
    video_ids = [e.id for e in entries]
    check_submission(submission, video_ids, tuple(read_frames(entries[0].path, [0]).shape[-2:]))  # the videos' size
    torch_save_atomic(submission, out_dir / "submission.pt")
    torch_save_atomic(torch.stack([r["frames"] for r in results]), out_dir / "frames.pt")
    write_text_atomic(out_dir / "video_ids.json", json.dumps({"split": meta["split"], "video_ids": video_ids}, indent=2))
    write_text_atomic(out_dir / "meta.json", json.dumps(meta, indent=2))
    for index, (entry, result) in enumerate(zip(entries, results)):
        if index >= max(png_videos, gif_videos):
            break
        observed = read_frames(entry.path, range(n_obs))
        truth = read_mask(entry.path)[-1] if entry.has_mask else None
        if index < png_videos:
            write_video_pngs(out_dir / "per_video" / f"video_{entry.id}", observed, result["frames"][-1],
                             result["mask"], truth)
        if index < gif_videos:
            write_gif(out_dir / "gifs" / f"video_{entry.id}.gif", observed, result["frames"])
    print(f"wrote {out_dir / 'submission.pt'}: {tuple(submission.shape)} uint8, {len(entries)} videos of split "
          f"'{meta['split']}' in natural order")
