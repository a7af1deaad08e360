"""`--exp check_data`: scan a dataset in the competition format and summarise it per split.

Per split: videos, frames, masks, distinct classes present, videos whose masks gain a class after
frame 11 (index 10, the last observed frame), and every problem found with its file path.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
from tqdm import tqdm

from tools.data.classes import MAX_CLASS_ID, NUM_OBSERVED
from tools.data.clevrer import VideoEntry, list_videos
from tools.data.validate import (MASK_FILE, SPLITS, expected_frames, load_mask_file,
                                 require_root, validate_video)
from tools.core.errors import UserError


@dataclass
class SplitSummary:
    """What the scan found in one split."""

    split: str
    videos: int = 0
    frames: int = 0
    masks: int = 0
    classes: set[int] = field(default_factory=set)
    late_class_videos: list[int] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        late = f"{len(self.late_class_videos)}" + (f" (ids {_short_ids(self.late_class_videos)})"
                                                    if self.late_class_videos else "")
        lines = [f"[{self.split}] videos {self.videos}, frames {self.frames}, masks {self.masks}, "
                 f"classes present {len(self.classes)}, videos gaining a class after frame 11: {late}, "
                 f"problems {len(self.problems)}"]
        lines += [f"  problem: {problem}" for problem in self.problems]
        return lines


@dataclass
class Summary:
    """The scan of a dataset root: one SplitSummary per split."""

    root: Path
    splits: dict[str, SplitSummary]

    @property
    def problems(self) -> list[str]:
        return [problem for split in self.splits.values() for problem in split.problems]

    @property
    def ok(self) -> bool:
        return not self.problems

    def format(self) -> str:
        lines = [f"dataset {self.root}"]
        for split in self.splits.values():
            lines += split.lines()
        verdict = "OK: no problems found" if self.ok else f"FAILED: {len(self.problems)} problem(s) found"
        return "\n".join(lines + [verdict])


def check_dataset(root: str | Path, splits: Sequence[str] | None = None) -> Summary:
    """Scan the given splits (default: those of train/val/unlabeled/hidden present) and summarise them."""
    root_path = require_root(root)
    if splits is None:
        splits = [split for split in SPLITS if (root_path / split).is_dir()]
        if not splits:
            raise UserError(f"{root_path} holds none of the split folders {SPLITS}. Pass the dataset root with "
                            f"--data_path (the folder that contains train/, val/, ...).")
    summaries = {split: SplitSummary(split) for split in splits}
    entries = _entries_per_split(root_path, summaries)
    total = sum(len(split_entries) for split_entries in entries.values())
    with tqdm(total=total, desc="check_data", unit="video") as progress:
        for split, split_entries in entries.items():
            for entry in split_entries:
                _scan_video(entry, summaries[split])
                progress.update()
    return Summary(root_path, summaries)


def run_check_data(data_path: str) -> int:
    """Print the scan of ``data_path``; the exit code is 0 when no problem was found, 1 otherwise."""
    summary = check_dataset(data_path)
    print(summary.format())
    return 0 if summary.ok else 1


def _entries_per_split(root: Path, summaries: dict[str, SplitSummary]) -> dict[str, list[VideoEntry]]:
    """List each split's videos; a missing or empty split becomes a problem of that split."""
    entries = {}
    for split, summary in summaries.items():
        try:
            entries[split] = list_videos(root, split)
        except UserError as error:
            summary.problems.append(str(error))
            entries[split] = []
        summary.videos = len(entries[split])
    return entries


def _scan_video(entry: VideoEntry, summary: SplitSummary) -> None:
    summary.frames += entry.n_frames
    summary.problems += validate_video(entry.path, expected_frames(summary.split))
    if not entry.has_mask:
        return
    summary.masks += 1
    mask = _readable_mask(entry.path / MASK_FILE)
    if mask is None:
        return  # validate_video has reported why
    summary.classes.update(int(c) for c in np.unique(mask) if c != 0)
    if _gains_class_after_observed(mask):
        summary.late_class_videos.append(entry.id)


def _readable_mask(path: Path) -> np.ndarray | None:
    try:
        mask = load_mask_file(path)
    except UserError:
        return None
    if mask.ndim != 3 or mask.dtype != np.uint8 or mask.max(initial=0) > MAX_CLASS_ID:
        return None
    return mask


def _gains_class_after_observed(mask: np.ndarray) -> bool:
    """True if some class appears only after the observed frames (indices 0..10)."""
    observed = set(np.unique(mask[:NUM_OBSERVED]).tolist())
    later = set(np.unique(mask[NUM_OBSERVED:]).tolist())
    return bool(later - observed)


def _short_ids(ids: list[int], limit: int = 10) -> str:
    shown = ", ".join(str(i) for i in ids[:limit])
    return shown + (f", ... {len(ids) - limit} more" if len(ids) > limit else "")
