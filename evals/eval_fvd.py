#!/usr/bin/env python
"""FVD (StyleGAN-V protocol, I3D Kinetics-400) between generated and real videos.

    python evals/eval_fvd.py generated.pt real.pt
    python evals/eval_fvd.py results/run/videos/ data/val/ --num_frames 16 --real_cache_name clevrer_val_16

Each source is a .pt tensor [N,T,3,H,W] (uint8, or float in [0,1]) saved with torch.save, or a
folder of video folders, each holding its frames as image files (natural order, e.g. the
competition's video_<id>/image_<i>.png). Prints the FVD as its last line.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

import argparse  # noqa: E402
from typing import Iterator  # noqa: E402

import torch  # noqa: E402
from natsort import natsorted  # noqa: E402

from evals.metrics.fvd import I3DFeatures, compute_fvd  # noqa: E402
from evals.metrics.image import image_files, read_image  # noqa: E402
from tools.core.errors import UserError  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("generated", help=".pt tensor [N,T,3,H,W] or folder of video frame folders")
    parser.add_argument("real", help=".pt tensor [N,T,3,H,W] or folder of video frame folders")
    parser.add_argument("--num_frames", type=int, default=None,
                        help="use the first NUM_FRAMES frames of every video (default: all; at least 9)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--real_cache_dir", default="results/fvd_cache",
                        help="folder of cached real statistics (default results/fvd_cache)")
    parser.add_argument("--real_cache_name", default=None,
                        help="cache the real statistics under this name (reused when the file exists)")
    return parser.parse_args(argv)


def load_video_tensor(path: Path, num_frames: int | None) -> torch.Tensor:
    """A torch.save'd [N,T,3,H,W] tensor, checked, cut to num_frames."""
    try:
        videos = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for a bad file
        raise UserError(f"{path}: cannot load a tensor ({type(error).__name__}: {error}).") from None
    if not isinstance(videos, torch.Tensor) or videos.dim() != 5 or videos.shape[2] != 3:
        shape = tuple(videos.shape) if isinstance(videos, torch.Tensor) else type(videos).__name__
        raise UserError(f"{path}: expected a tensor [N,T,3,H,W], got {shape}.")
    if videos.dtype != torch.uint8 and not videos.is_floating_point():
        raise UserError(f"{path}: videos must be uint8 or float in [0,1], got {videos.dtype}.")
    return _cut(videos, num_frames, path)


def _cut(videos: torch.Tensor, num_frames: int | None, source: Path) -> torch.Tensor:
    if num_frames is None:
        return videos
    if videos.shape[1] < num_frames:
        raise UserError(f"{source}: videos have {videos.shape[1]} frames, fewer than --num_frames {num_frames}.")
    return videos[:, :num_frames]


def video_folders(root: Path) -> list[Path]:
    folders = natsorted((p for p in root.iterdir() if p.is_dir()), key=lambda p: p.name)
    if not folders:
        raise UserError(f"{root}: no video folders inside; expected <root>/<video>/<frame images>.")
    return folders


def read_video_folder(folder: Path, num_frames: int | None) -> torch.Tensor:
    """A folder of frame images as uint8 [T,3,H,W]."""
    files = image_files(folder)
    if not files:
        raise UserError(f"{folder}: no frame images (.png/.jpg) inside.")
    frames = torch.stack([read_image(path) for path in files[:num_frames]])
    return _cut(frames[None], num_frames, folder)[0]


def folder_batches(root: Path, num_frames: int | None, batch_size: int) -> Iterator[torch.Tensor]:
    """Videos of a folder of frame folders, read batch by batch so memory stays bounded."""
    folders = video_folders(root)
    for start in range(0, len(folders), batch_size):
        videos = [read_video_folder(folder, num_frames) for folder in folders[start:start + batch_size]]
        shapes = {tuple(video.shape) for video in videos}
        if len(shapes) > 1:
            raise UserError(f"{root}: videos differ in frames or size {sorted(shapes)}; use --num_frames.")
        yield torch.stack(videos)


def video_source(path_text: str, num_frames: int | None, batch_size: int):
    path = Path(path_text)
    if path.is_file():
        return load_video_tensor(path, num_frames)
    if path.is_dir():
        return folder_batches(path, num_frames, batch_size)
    raise UserError(f"{path}: no such file or folder.")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        extractor = I3DFeatures(args.device, args.batch_size)
        fvd = compute_fvd(video_source(args.generated, args.num_frames, args.batch_size),
                          video_source(args.real, args.num_frames, args.batch_size),
                          real_cache_dir=args.real_cache_dir if args.real_cache_name else None,
                          real_cache_name=args.real_cache_name, extractor=extractor)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"{fvd:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
