"""Natural video readers: UCF-101 with its official split lists, and any folder of videos or frame folders.

Both cut each video into clips of ``clip_len`` frames taken ``stride`` frames apart; consecutive clips
start ``clip_step`` frames apart (default: the clip's span, so clips do not overlap). Clips are indexed
from frame counts read from the container (one demux pass, no decoding, when it does not store them),
cached per process, so building a dataset never decodes a video.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import av
import numpy as np
import pyspng
import torch
from natsort import natsorted
from PIL import Image
from torch.utils.data import Dataset

from tools.data.clevrer import resize_frames
from tools.core.errors import UserError

VIDEO_SUFFIXES = (".avi", ".mp4", ".mkv", ".webm", ".mov")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
UCF_VIDEO_DIR = "UCF-101"
UCF_SPLIT_DIR = "ucfTrainTestlist"


@dataclass(frozen=True)
class VideoSource:
    """A video file or a folder of frame images, with its label and frame count."""

    path: Path
    label: int
    n_frames: int


@dataclass(frozen=True)
class ClipSpec:
    """Which frames of which source make one clip."""

    source: VideoSource
    frame_indices: tuple[int, ...]


def count_frames(path: str | Path) -> int:
    """Frames in a video file: the container's count, else one demux pass (no decoding); cached."""
    file = Path(path)
    stat = file.stat()
    return _count_frames_cached(str(file), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=None)
def _count_frames_cached(path: str, size: int, mtime_ns: int) -> int:
    del size, mtime_ns  # part of the cache key only, so an edited file is counted again
    try:
        with av.open(path) as container:
            stream = _video_stream(container, path)
            if stream.frames > 0:
                return int(stream.frames)
            return sum(1 for packet in container.demux(stream) if packet.size > 0)
    except av.error.FFmpegError as error:
        raise UserError(f"{path}: cannot open the video ({error}). Replace or remove the file.") from None


def read_video_frames(path: str | Path, indices: Sequence[int]) -> np.ndarray:
    """Decode the frames at ``indices`` (ascending or not) of a video file as uint8 [T, H, W, 3]."""
    wanted = sorted(set(indices))
    decoded: dict[int, np.ndarray] = {}
    try:
        with av.open(str(path)) as container:
            stream = _video_stream(container, path)
            for position, frame in enumerate(container.decode(stream)):
                if position in wanted:
                    decoded[position] = frame.to_ndarray(format="rgb24")
                if position >= wanted[-1]:
                    break
    except av.error.FFmpegError as error:
        raise UserError(f"{path}: cannot decode the video ({error}). Replace or remove the file.") from None
    if not decoded:
        raise UserError(f"{path}: no frame could be decoded. Replace or remove the file.")
    # Container frame counts can exceed the decodable frames by one or two; repeat the last one.
    last = decoded[max(decoded)]
    return np.stack([decoded.get(i, last) for i in indices])


def read_image_frames(paths: Sequence[Path]) -> np.ndarray:
    """Decode image files (PNG via pyspng, JPEG via Pillow) as uint8 [T, H, W, 3]."""
    images = [_read_image(path) for path in paths]
    sizes = {image.shape for image in images}
    if len(sizes) > 1:
        raise UserError(f"{paths[0].parent}: frames have different sizes {sorted(sizes)}; "
                        f"all frames of a video must have one size.")
    return np.stack(images)


def _read_image(path: Path) -> np.ndarray:
    try:
        if path.suffix.lower() == ".png":
            image = pyspng.load(path.read_bytes())
        else:
            with Image.open(path) as opened:
                image = np.asarray(opened.convert("RGB"))
    except (RuntimeError, OSError) as error:
        raise UserError(f"{path}: corrupt or unreadable image ({error}). Replace or remove it.") from None
    if image.dtype != np.uint8:
        image = (image.astype(np.float64) / np.iinfo(image.dtype).max * 255).round().astype(np.uint8)
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    return np.ascontiguousarray(image[:, :, :3])


def _video_stream(container, path) -> av.video.stream.VideoStream:
    if not container.streams.video:
        raise UserError(f"{path}: the file holds no video stream. Remove it from the dataset folder.")
    return container.streams.video[0]


def _image_files(folder: Path) -> list[Path]:
    return natsorted((p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES), key=lambda p: p.name)


def clip_starts(n_frames: int, clip_len: int, stride: int, clip_step: int | None) -> range:
    """Start frames of the clips that fit in a video of ``n_frames`` frames."""
    span = (clip_len - 1) * stride + 1
    return range(0, max(n_frames - span + 1, 0), clip_step or span)


class ClipDataset(Dataset):
    """Clips of ``clip_len`` frames, ``stride`` apart, from a list of sources; items are
    {"frames": float32 [T, 3, H, W] in [0, 1], "label": int, "path": str}."""

    def __init__(self, sources: Sequence[VideoSource], clip_len: int, stride: int = 1,
                 size: tuple[int, int] | None = None, clip_step: int | None = None, where: str = "dataset"):
        if clip_len < 1 or stride < 1 or (clip_step is not None and clip_step < 1):
            raise UserError(f"clip_len ({clip_len}), stride ({stride}) and clip_step ({clip_step}) "
                            f"must be positive integers.")
        self.size = tuple(size) if size is not None else None
        self.clips = [ClipSpec(source, tuple(range(start, start + clip_len * stride, stride)))
                      for source in sources
                      for start in clip_starts(source.n_frames, clip_len, stride, clip_step)]
        if not self.clips:
            span = (clip_len - 1) * stride + 1
            raise UserError(f"{where}: no clip of {clip_len} frames with stride {stride} (a span of {span} "
                            f"frames) fits in any of its {len(sources)} videos. Lower clip_len or stride.")

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, index: int) -> dict:
        clip = self.clips[index]
        path = clip.source.path
        if path.is_dir():
            files = _image_files(path)
            images = read_image_frames([files[i] for i in clip.frame_indices])
        else:
            images = read_video_frames(path, clip.frame_indices)
        frames = torch.from_numpy(images).permute(0, 3, 1, 2).to(torch.float32).div_(255.0)
        if self.size is not None:
            frames = resize_frames(frames, self.size)
        return {"frames": frames, "label": clip.source.label, "path": str(path)}


class UCF101Dataset(ClipDataset):
    """UCF-101 clips: videos under ``<root>/UCF-101/<class>/<video>.avi``, the official split lists under
    ``<root>/ucfTrainTestlist/`` (trainlist0{fold}.txt, testlist0{fold}.txt, classInd.txt)."""

    def __init__(self, root: str | Path, split: str = "train", fold: int = 1, clip_len: int = 16,
                 stride: int = 1, size: tuple[int, int] | None = None, clip_step: int | None = None):
        root = Path(root).expanduser()
        if split not in ("train", "test"):
            raise UserError(f"UCF-101 split {split!r} is unknown; use 'train' or 'test'.")
        if fold not in (1, 2, 3):
            raise UserError(f"UCF-101 fold {fold} is unknown; use 1, 2 or 3.")
        video_root = root / UCF_VIDEO_DIR
        if not video_root.is_dir():
            raise UserError(f"{video_root} is missing: UCF-101 videos are expected as "
                            f"<data_path>/{UCF_VIDEO_DIR}/<class>/<video>.avi. Check --data_path.")
        self.classes = _ucf_classes(root, video_root)
        sources = [VideoSource(path, label, count_frames(path))
                   for path, label in _ucf_split_videos(root, video_root, split, fold, self.classes)]
        super().__init__(sources, clip_len, stride, size, clip_step, where=str(video_root))


def _ucf_list_file(root: Path, name: str) -> Path:
    path = root / UCF_SPLIT_DIR / name
    if not path.is_file():
        raise UserError(f"UCF-101 split list {path} is missing. Unpack the official "
                        f"UCF101TrainTestSplits-RecognitionTask.zip so that <data_path>/{UCF_SPLIT_DIR}/ "
                        f"holds classInd.txt, trainlist01-03.txt and testlist01-03.txt.")
    return path


def _ucf_classes(root: Path, video_root: Path) -> list[str]:
    """Class names in label order: classInd.txt when present, else sorted class folders."""
    index_file = root / UCF_SPLIT_DIR / "classInd.txt"
    if not index_file.is_file():
        return sorted(p.name for p in video_root.iterdir() if p.is_dir())
    pairs = [line.split() for line in index_file.read_text().splitlines() if line.strip()]
    return [name for _, name in sorted((int(number), name) for number, name in pairs)]


def _ucf_split_videos(root: Path, video_root: Path, split: str, fold: int,
                      classes: list[str]) -> list[tuple[Path, int]]:
    list_file = _ucf_list_file(root, f"{split}list0{fold}.txt")
    # The lists spell some class names with another case than the folders (HandStandPushups).
    folders = {p.name.lower(): p for p in video_root.iterdir() if p.is_dir()}
    labels = {name.lower(): label for label, name in enumerate(classes)}
    videos = []
    for line in list_file.read_text().splitlines():
        if not line.strip():
            continue
        class_name, file_name = line.split()[0].split("/")
        folder = folders.get(class_name.lower())
        path = (folder / file_name) if folder else video_root / class_name / file_name
        if not path.is_file():
            raise UserError(f"{path} is listed in {list_file} but missing. Restore the UCF-101 videos "
                            f"or use the split lists that match them.")
        videos.append((path, labels[class_name.lower()]))
    if not videos:
        raise UserError(f"{list_file} lists no videos. Restore the official split list.")
    return videos


class VideoFolderDataset(ClipDataset):
    """Clips from any folder of video files (.avi/.mp4/.mkv/.webm/.mov) and/or frame folders (PNG/JPEG).

    A video directly under ``root`` has label 0 unless class folders exist; a video inside a sub-folder
    that is not itself a frame folder gets that sub-folder's index in sorted order of class names.
    """

    def __init__(self, root: str | Path, clip_len: int = 16, stride: int = 1,
                 size: tuple[int, int] | None = None, clip_step: int | None = None):
        root = Path(root).expanduser()
        if not root.is_dir():
            raise UserError(f"video folder {root} does not exist. Pass a folder of videos or frame folders "
                            f"with --data_path.")
        found = _find_videos(root)
        if not found:
            raise UserError(f"{root} holds no video file ({', '.join(VIDEO_SUFFIXES)}) and no folder of "
                            f"frame images ({', '.join(IMAGE_SUFFIXES)}).")
        self.classes = sorted({group for _, group in found})
        sources = [VideoSource(path, self.classes.index(group), _source_frames(path)) for path, group in found]
        super().__init__(sources, clip_len, stride, size, clip_step, where=str(root))


def _find_videos(root: Path) -> list[tuple[Path, str]]:
    """(video path, class group) pairs: group '' for videos directly under root, else the sub-folder name."""
    found: list[tuple[Path, str]] = []
    for entry in natsorted(root.iterdir(), key=lambda p: p.name):
        if entry.is_file() and entry.suffix.lower() in VIDEO_SUFFIXES:
            found.append((entry, ""))
        elif entry.is_dir() and _image_files(entry):
            found.append((entry, ""))
        elif entry.is_dir():
            found += [(path, entry.name) for path, _ in _find_videos(entry)]
    return found


def _source_frames(path: Path) -> int:
    return len(_image_files(path)) if path.is_dir() else count_frames(path)
