"""Checks of the competition folder format, each failure a message naming the file and the fix.

Two ways to use them: ``validate_video`` collects every problem of a video (for ``check_data``),
while the reader calls the ``require_*``/``decode_png``/``check_mask`` helpers, which raise a
``UserError`` on the first problem.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pyspng

from tools.data.classes import MAX_CLASS_ID, NUM_FRAMES, NUM_OBSERVED
from tools.core.errors import UserError

SPLITS: tuple[str, ...] = ("train", "val", "unlabeled", "hidden")
MASK_FILE = "mask.npy"
MASK_MODES = ("error", "background")
VIDEO_DIR_PATTERN = re.compile(r"^video_(\d+)$")
FRAME_FILE_PATTERN = re.compile(r"^image_(\d+)\.png$")

FIX_FORMAT = "see DESIGN.md section 2 for the folder format"


def frame_file(index: int) -> str:
    """The file name of frame ``index`` (0-based) inside a video folder."""
    return f"image_{index}.png"


def expected_frames(split: str) -> int:
    """Frames per video in a split: 11 for hidden (inputs only), 22 otherwise."""
    return NUM_OBSERVED if split == "hidden" else NUM_FRAMES


def require_root(root: str | Path) -> Path:
    """The dataset root as a Path; a UserError if it is missing or not a folder."""
    path = Path(root).expanduser()
    if not path.exists():
        raise UserError(f"data folder {path} does not exist. Pass the dataset root with --data_path "
                        f"(it holds train/, val/, unlabeled/, hidden/), or generate one with --exp generate.")
    if not path.is_dir():
        raise UserError(f"data path {path} is a file, not a folder. Pass the dataset root folder with --data_path.")
    return path


def require_split_folder(root: str | Path, split: str) -> Path:
    """The folder of a split; a UserError naming it if it is missing or holds no video_<id> folder."""
    folder = require_root(root) / split
    if not folder.is_dir():
        present = sorted(p.name for p in require_root(root).iterdir() if p.is_dir())
        raise UserError(f"split folder {folder} is missing (folders present: {present or 'none'}). "
                        f"Check --data_path, or choose splits that exist; {FIX_FORMAT}.")
    if not any(VIDEO_DIR_PATTERN.match(p.name) and p.is_dir() for p in folder.iterdir()):
        raise UserError(f"split folder {folder} is empty: it holds no video_<id> folder. "
                        f"Copy or generate the videos into it, or leave this split out.")
    return folder


def frame_file_problems(video_dir: Path, n_expected: int) -> list[str]:
    """Missing or extra image_<i>.png files of a video folder, one message per kind."""
    present = {int(m.group(1)) for name in _list_names(video_dir) if (m := FRAME_FILE_PATTERN.match(name))}
    wanted = set(range(n_expected))
    problems = []
    missing = sorted(wanted - present)
    if missing:
        problems.append(f"{video_dir}: missing frames {_file_list(missing)} (expected image_0.png .. "
                        f"image_{n_expected - 1}.png). Restore the files or remove the video folder.")
    extra = sorted(present - wanted)
    if extra:
        problems.append(f"{video_dir}: extra frames {_file_list(extra)} (expected exactly {n_expected} frames "
                        f"in this split). Remove them or move the video to the right split.")
    return problems


def require_frame_files(video_dir: Path, n_expected: int) -> None:
    """Raise a UserError if a video folder lacks frames or holds extra ones."""
    problems = frame_file_problems(video_dir, n_expected)
    if problems:
        raise UserError(problems[0])


def decode_png(path: Path) -> np.ndarray:
    """Decode an 8-bit RGB PNG to uint8 [H, W, 3]; a UserError naming the file for anything else."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise UserError(f"{path}: cannot read the frame ({error.strerror}). Check the file exists and is readable.")
    try:
        image = pyspng.load(data)
    except RuntimeError as error:
        raise UserError(f"{path}: corrupt or unreadable PNG ({error}). Replace the file with a valid "
                        f"8-bit RGB PNG or remove the video folder.") from None
    if image.dtype != np.uint8:
        raise UserError(f"{path}: {8 * image.dtype.itemsize}-bit PNG; frames must be 8-bit RGB. Re-save it as "
                        f"8-bit RGB (e.g. Pillow: Image.open(f).convert('RGB').save(f)).")
    if image.ndim != 3 or image.shape[2] != 3:
        channels = 1 if image.ndim == 2 else image.shape[2]
        raise UserError(f"{path}: PNG has {channels} channel(s); frames must be 8-bit RGB (3 channels). Re-save it "
                        f"as RGB (e.g. Pillow: Image.open(f).convert('RGB').save(f)).")
    return image


def frame_size_problem(path: Path, size: tuple[int, int], first_size: tuple[int, int], first: Path) -> str | None:
    """A message if a frame's (H, W) differs from the first frame of its video."""
    if size == first_size:
        return None
    return (f"{path}: frame is {size[1]}x{size[0]} (WxH) but {first.name} of the same video is "
            f"{first_size[1]}x{first_size[0]}. All frames of a video must have one size; resize or replace it.")


def load_mask_file(path: Path) -> np.ndarray:
    """Load mask.npy without pickles; a UserError naming the file if it cannot be read."""
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as error:
        raise UserError(f"{path}: unreadable mask file ({error}). It must be a .npy array of shape "
                        f"(22, H, W) and dtype uint8; regenerate or remove it.") from None


def check_mask(mask: np.ndarray, path: Path, n_frames: int, frame_size: tuple[int, int] | None,
               mask_mode: str = "error") -> tuple[np.ndarray, int]:
    """Check a mask array's shape, dtype and ids; return it (ids > 48 zeroed in 'background' mode) and that count.

    ``frame_size`` is the (H, W) of the video's frames, or None to accept any size.
    """
    if mask_mode not in MASK_MODES:
        raise UserError(f"mask_mode {mask_mode!r} is unknown; use one of {MASK_MODES}.")
    height, width = frame_size if frame_size else (mask.shape[-2:] if mask.ndim == 3 else (None, None))
    expected_shape = (n_frames, height, width)
    if mask.ndim != 3 or tuple(mask.shape) != expected_shape:
        raise UserError(f"{path}: mask has shape {tuple(mask.shape)}, expected {expected_shape} "
                        f"(frames, height, width of the video's PNGs). Regenerate the mask.")
    if mask.dtype != np.uint8:
        raise UserError(f"{path}: mask has dtype {mask.dtype}, expected uint8. Convert it with "
                        f"np.save(f, mask.astype(np.uint8)) once its values are checked to be 0..{MAX_CLASS_ID}.")
    out_of_range = mask > MAX_CLASS_ID
    count = int(out_of_range.sum())
    if count and mask_mode == "error":
        raise UserError(f"{path}: {count} mask pixels have class ids above {MAX_CLASS_ID} (max {int(mask.max())}). "
                        f"Fix the mask (ids are 0 for background and 1..{MAX_CLASS_ID} for objects), or remove the video folder.")
    if count:
        mask = np.where(out_of_range, np.uint8(0), mask)
    return mask, count


def validate_video(path: str | Path, expected_frames: int) -> list[str]:
    """Every problem of one video folder (frames, PNGs, sizes, mask), each message naming its file."""
    video_dir = Path(path)
    if not video_dir.is_dir():
        return [f"{video_dir}: video folder is missing or not a folder."]
    problems = frame_file_problems(video_dir, expected_frames)
    frame_size = _frame_size_problems(video_dir, expected_frames, problems)
    mask_path = video_dir / MASK_FILE
    if mask_path.exists():
        try:
            check_mask(load_mask_file(mask_path), mask_path, expected_frames, frame_size)
        except UserError as error:
            problems.append(str(error))
    return problems


def _frame_size_problems(video_dir: Path, n_frames: int, problems: list[str]) -> tuple[int, int] | None:
    """Decode every present frame, appending problems; return the size of the first good frame."""
    first: tuple[Path, tuple[int, int]] | None = None
    for index in range(n_frames):
        frame_path = video_dir / frame_file(index)
        if not frame_path.exists():
            continue
        try:
            size = decode_png(frame_path).shape[:2]
        except UserError as error:
            problems.append(str(error))
            continue
        if first is None:
            first = (frame_path, size)
        elif (message := frame_size_problem(frame_path, size, first[1], first[0])) is not None:
            problems.append(message)
    return first[1] if first else None


def _list_names(folder: Path) -> list[str]:
    try:
        return [entry.name for entry in folder.iterdir()]
    except OSError as error:
        raise UserError(f"{folder}: cannot list the folder ({error.strerror}). Check its permissions.") from None


def _file_list(indices: list[int], limit: int = 5) -> str:
    names = [frame_file(i) for i in indices[:limit]]
    more = f" and {len(indices) - limit} more" if len(indices) > limit else ""
    return ", ".join(names) + more
